/**
 * Node's HTTP parser binding (llhttp) and header checks, as `node:_http_common` exports them to Node's own HTTP
 * server and client. Not in @types/node; only what the gateway's HTTP/1.x front end (http1-server.ts) and
 * bench/gateway/bare-proxy.ts use.
 */
declare module "node:_http_common" {
  /** Method names by llhttp's method number. */
  export const methods: string[];
  /** Whether a header name is an HTTP token. */
  export function _checkIsHttpToken(name: string): boolean;
  /** Whether a header value holds a character HTTP does not allow (CR, LF, NUL, other controls). */
  export function _checkInvalidHeaderChar(value: string): boolean;
  export class HTTPParser {
    static readonly REQUEST: number;
    static readonly RESPONSE: number;
    static readonly kOnHeaders: number;
    static readonly kOnHeadersComplete: number;
    static readonly kOnBody: number;
    static readonly kOnMessageComplete: number;
    static readonly kOnExecute: number;
    [callback: number]: ((...args: never[]) => unknown) | null;
    initialize(type: number, resource: object, maxHeaderSize?: number, lenientFlags?: number): void;
    /** Parses bytes at once; the callbacks run inside. A number of bytes, or the parse error. */
    execute(buffer: Buffer): number | Error;
    /** Reads straight from a stream handle (in C++): kOnExecute reports each read. */
    consume(handle: object): void;
    unconsume(): void;
    /** Inside kOnExecute: the bytes of the read being reported (what follows an upgrade's head is in it). */
    getCurrentBuffer(): Buffer;
    remove(): void;
    close(): void;
  }
}
