/**
 * Node's HTTP parser binding (llhttp), as `node:_http_common` exports it to Node's own HTTP server and client. Not in
 * @types/node; only what bench/gateway/bare-proxy.ts uses.
 */
declare module "node:_http_common" {
  export const methods: string[];
  export class HTTPParser {
    static readonly REQUEST: number;
    static readonly RESPONSE: number;
    static readonly kOnHeadersComplete: number;
    static readonly kOnBody: number;
    static readonly kOnMessageComplete: number;
    static readonly kOnExecute: number;
    [callback: number]: (...args: never[]) => unknown;
    initialize(type: number, resource: object, maxHeaderSize?: number, lenientFlags?: number): void;
    consume(handle: object): void;
    unconsume(): void;
  }
}
