/**
 * The gateway's HTTP/1.1 to a backend, pure: a request head written as one
 * string, a request body framed as chunks when its length is unknown, and an
 * incremental response parser (RFC 9112) that says where the head ends, what
 * the body's bytes are and where the message ends, so that a connection can go
 * back to the idle pool for the next request.
 *
 * Node's http client (a ClientRequest, a parser and an IncomingMessage per
 * request, headers lower-cased into objects and back) was most of the
 * gateway's cost per request beside haproxy; this writes what it received and
 * reads only the framing.
 *
 * ```ts
 * stream.write(requestHead("GET", "/api/x", ["Host", "shop.example.com", "Accept", "*\/*"]));
 * const parser = new ResponseParser({ head: false, onHead, onBody: (chunk) => response.write(chunk), onEnd });
 * stream.on("data", (chunk) => parser.feed(chunk)); // throws HttpParseError on a malformed answer
 * ```
 */
import { LeafmeshError } from "../../lib/errors.ts";

/** @default 32_768 — a response head longer than this is refused (Node's own limit is 16 KiB). */
export const maxResponseHeadBytes = 32_768;
/** A chunk-size line (with extensions) longer than this is refused. */
const maxChunkLineBytes = 4_096;

export class HttpParseError extends LeafmeshError {
  constructor(message: string) {
    super("PROXY_FAILED", `the backend's answer is not HTTP/1.1: ${message}`);
  }
}

/** The head of a request: `METHOD PATH HTTP/1.1`, then the headers as [name, value, name, value, …]. */
export function requestHead(method: string, path: string, headers: readonly string[]): string {
  let head = `${method} ${path} HTTP/1.1\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${head}\r\n`;
}

/** One chunk of a chunked body (RFC 9112 §7.1): its size in hex, the bytes, CRLF. */
export function chunkPrefix(length: number): string {
  return `${length.toString(16)}\r\n`;
}
export const chunkSuffix = "\r\n";
export const lastChunk = "0\r\n\r\n";

export interface ResponseHead {
  status: number;
  /** Header names and values as received: [name, value, name, value, …]. */
  headers: string[];
  /** Whether the connection may carry another request after this answer (HTTP/1.1 without `Connection: close`, framed by length or chunks). */
  keepAlive: boolean;
}

export interface ResponseParserOptions {
  /** The request was HEAD: the answer has no body whatever its headers say. */
  head: boolean;
  onHead(head: ResponseHead): void;
  onBody(chunk: Buffer): void;
  /**
   * The whole answer was read. Bytes after it (never sent by a backend in step) make `extra` non-zero. `trailers`: a
   * chunked answer's trailer section (RFC 9112 §7.1.2) as [name, value, …] as received, when it had fields; a line
   * without a colon comes as the name "" (not valid HTTP: whoever passes them on drops it).
   */
  onEnd(extra: number, trailers?: string[]): void;
  /**
   * The request asked for an upgrade (http-upgrade.ts): a 101 is then its answer, and what follows its head is no
   * longer HTTP but the new protocol's first bytes (`rest`). Without it a 101 is malformed: never asked for.
   */
  onSwitch?(head: ResponseHead, rest: Buffer): void;
}

type BodyMode = { kind: "none" } | { kind: "length"; left: number } | { kind: "chunked" } | { kind: "close" };

const crlfcrlf = Buffer.from("\r\n\r\n");
const noBody: BodyMode = { kind: "none" };

/**
 * Reads one response (interim 1xx answers skipped) from the bytes fed in order. Callbacks come synchronously from
 * feed(); a malformed answer throws HttpParseError.
 */
export class ResponseParser {
  #options: ResponseParserOptions;
  #state: "head" | "body" | "chunk-size" | "chunk-data" | "chunk-end" | "trailers" | "done" = "head";
  #pending: Buffer | undefined;
  #body: BodyMode = noBody;
  #chunkLeft = 0;
  #stopped = false;
  /** The trailer section read so far, and its size (bounded as a head is). */
  #trailers: string[] = [];
  #trailerBytes = 0;

  constructor(options: ResponseParserOptions) {
    this.#options = options;
  }

  /** Ready for the next answer on the same connection, with its own callbacks (a parser is made once per connection). */
  reset(options: ResponseParserOptions): void {
    this.#options = options;
    this.#state = "head";
    this.#pending = undefined;
    this.#body = noBody;
    this.#chunkLeft = 0;
    this.#stopped = false;
    this.#trailers = [];
    this.#trailerBytes = 0;
  }

  /** Whether the whole answer was read. */
  get done(): boolean {
    return this.#state === "done";
  }

  /** Whether the body runs until the backend closes (no length, no chunks). */
  get closeDelimited(): boolean {
    return this.#body.kind === "close" && this.#state === "body";
  }

  /** The backend closed: ends a close-delimited body (true); anything else unfinished is a cut (false). */
  finishOnEof(): boolean {
    if (this.#state === "done") return true;
    if (this.closeDelimited) {
      this.#state = "done";
      this.#options.onEnd(0);
      return true;
    }
    return false;
  }

  /** No more callbacks: the caller gave up on this answer (a retry, a cut). */
  stop(): void {
    this.#stopped = true;
  }

  feed(input: Buffer): void {
    let chunk = input;
    while (chunk.length > 0 && !this.#stopped) {
      switch (this.#state) {
        case "done":
          throw new HttpParseError("bytes after the whole answer");
        case "head": {
          const buffer = this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk;
          const end = buffer.indexOf(crlfcrlf);
          if (end < 0) {
            if (buffer.length > maxResponseHeadBytes) throw new HttpParseError(`a head longer than ${maxResponseHeadBytes} bytes`);
            this.#pending = buffer;
            return;
          }
          this.#pending = undefined;
          chunk = buffer.subarray(end + 4);
          const head = this.#head(buffer.toString("latin1", 0, end));
          if (head === "switch") {
            this.#state = "done";
            return this.#options.onSwitch?.(this.#switched!, chunk);
          }
          if (!head || this.#stopped) break;
          if (this.#body.kind === "none") return this.#finish(chunk.length);
          this.#state = this.#body.kind === "chunked" ? "chunk-size" : "body";
          break;
        }
        case "body": {
          const body = this.#body;
          if (body.kind === "close") return this.#options.onBody(chunk);
          if (body.kind !== "length") throw new HttpParseError("internal: body state without a length");
          const take = Math.min(body.left, chunk.length);
          body.left -= take;
          this.#options.onBody(take === chunk.length ? chunk : chunk.subarray(0, take));
          chunk = chunk.subarray(take);
          if (body.left === 0 && !this.#stopped) this.#finish(chunk.length);
          return;
        }
        case "chunk-size":
        case "chunk-end":
        case "trailers": {
          const buffer = this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk;
          // After a chunk's data comes CRLF and nothing else: any other byte is a backend out of step.
          if (this.#state === "chunk-end" && (buffer[0] !== 13 || (buffer.length > 1 && buffer[1] !== 10))) throw new HttpParseError("a chunk not followed by CRLF");
          const end = buffer.indexOf("\r\n");
          if (end < 0) {
            if (buffer.length > (this.#state === "trailers" ? maxResponseHeadBytes : maxChunkLineBytes)) throw new HttpParseError(this.#state === "trailers" ? "a trailer line too long" : "a chunk line too long");
            this.#pending = buffer;
            return;
          }
          this.#pending = undefined;
          const line = buffer.toString("latin1", 0, end);
          chunk = buffer.subarray(end + 2);
          if (this.#state === "chunk-end") {
            if (line !== "") throw new HttpParseError("a chunk not followed by CRLF");
            this.#state = "chunk-size";
          } else if (this.#state === "trailers") {
            // The empty line ends the message; the fields before it go with its end, for the client (http-trailers.ts).
            if (line === "") return this.#finish(chunk.length, this.#trailers.length > 0 ? this.#trailers : undefined);
            this.#trailerBytes += end + 2;
            if (this.#trailerBytes > maxResponseHeadBytes) throw new HttpParseError(`a trailer section longer than ${maxResponseHeadBytes} bytes`);
            const colon = line.indexOf(":");
            if (colon > 0) this.#trailers.push(line.slice(0, colon), line.slice(colon + 1).trim());
            else this.#trailers.push("", line);
          } else {
            const size = line.split(";", 1)[0].trim();
            if (!/^[0-9a-fA-F]{1,8}$/.test(size)) throw new HttpParseError(`a bad chunk size '${size.slice(0, 20)}'`);
            this.#chunkLeft = Number.parseInt(size, 16);
            this.#state = this.#chunkLeft === 0 ? "trailers" : "chunk-data";
          }
          break;
        }
        case "chunk-data": {
          const take = Math.min(this.#chunkLeft, chunk.length);
          this.#chunkLeft -= take;
          this.#options.onBody(take === chunk.length ? chunk : chunk.subarray(0, take));
          chunk = chunk.subarray(take);
          if (this.#chunkLeft === 0) this.#state = "chunk-end";
          break;
        }
      }
    }
  }

  #finish(extra: number, trailers?: string[]): void {
    this.#state = "done";
    this.#options.onEnd(extra, trailers);
  }

  /** The 101 that switched protocols, for onSwitch. */
  #switched: ResponseHead | undefined;

  /** Parses a head; false when it was an interim (1xx) answer and another head follows, "switch" for an asked-for 101. */
  #head(text: string): boolean | "switch" {
    const lines = text.split("\r\n");
    const statusLine = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(lines[0]);
    if (!statusLine) throw new HttpParseError(`a bad status line '${lines[0].slice(0, 40)}'`);
    const minor = statusLine[1];
    const status = Number(statusLine[2]);
    const headers: string[] = [];
    let contentLength: number | undefined;
    let transferEncoding: string | undefined;
    let connection = "";
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i];
      const colon = line.indexOf(":");
      if (colon <= 0 || line.charCodeAt(0) === 32 || line.charCodeAt(0) === 9) throw new HttpParseError(`a bad header line '${line.slice(0, 40)}'`);
      const name = line.slice(0, colon);
      if (name.includes(" ")) throw new HttpParseError(`a bad header name '${name.slice(0, 40)}'`);
      const value = line.slice(colon + 1).trim();
      headers.push(name, value);
      const lower = name.length === 14 || name.length === 17 || name.length === 10 ? name.toLowerCase() : "";
      if (lower === "content-length") {
        if (!/^\d{1,15}$/.test(value) || (contentLength !== undefined && contentLength !== Number(value))) throw new HttpParseError(`a bad Content-Length '${value.slice(0, 20)}'`);
        contentLength = Number(value);
      } else if (lower === "transfer-encoding") transferEncoding = transferEncoding === undefined ? value : `${transferEncoding}, ${value}`;
      else if (lower === "connection") connection += `${value.toLowerCase()},`;
    }
    if (status >= 100 && status < 200) {
      // 101 switches protocols: only when the request asked for it (a WebSocket upgrade) is it an answer.
      if (status === 101) {
        if (!this.#options.onSwitch) throw new HttpParseError("101 Switching Protocols, never asked for");
        this.#switched = { status, headers, keepAlive: false };
        return "switch";
      }
      return false;
    }
    if (this.#options.head || status === 204 || status === 304) this.#body = noBody;
    else if (transferEncoding !== undefined) {
      // Chunked last, or the body runs until the close (RFC 9112 §6.3 items 3 and 4).
      this.#body = /(?:^|,)\s*chunked\s*$/i.test(transferEncoding) ? { kind: "chunked" } : { kind: "close" };
    } else if (contentLength !== undefined) this.#body = contentLength === 0 ? noBody : { kind: "length", left: contentLength };
    else this.#body = { kind: "close" };
    const closes = /(?:^|[\s,])close\s*,/.test(connection);
    const keepAlive = this.#body.kind !== "close" && !closes && (minor === "1" || /(?:^|[\s,])keep-alive\s*,/.test(connection));
    this.#options.onHead({ status, headers, keepAlive });
    return true;
  }
}
