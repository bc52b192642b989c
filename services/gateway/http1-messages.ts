/**
 * The request and the answer of one exchange on the gateway's HTTP/1.x front end
 * (http1-server.ts): what the forwarder (http-proxy.ts) uses of Node's
 * IncomingMessage and ServerResponse, and no more. A request's body is held
 * until it is read ('data' listened), its reads stopped past a bound; an answer
 * is framed for its client (length, chunks, or the close) and its head checked
 * as Node's writeHead checks it.
 */
import { EventEmitter } from "node:events";
import type { IncomingHttpHeaders } from "node:http";
import { http } from "../../lib/node-http.ts";

const { STATUS_CODES } = http;
import { _checkInvalidHeaderChar as badValue, _checkIsHttpToken as isToken } from "node:_http_common";
import type { Socket } from "node:net";

/** @default 16_384 — an answer's last bytes up to this go out in one buffer with its head (copied); more go beside it (writev). */
const maxCopiedBody = 16_384;
/** Body bytes held for a request whose forwarder does not read yet; reading stops above. */
const maxHeldBody = 64 * 1024;

/** Headers whose duplicates Node's IncomingMessage drops, keeping the first (_http_incoming.js, matchKnownFields). */
const firstOnly = new Set(["age", "authorization", "content-length", "content-type", "etag", "expires", "from", "host", "if-modified-since", "if-unmodified-since", "last-modified", "location", "max-forwards", "proxy-authorization", "referer", "retry-after", "server", "user-agent"]);

/** What an exchange needs of its connection: reads stopped and started, and its answer's end. */
export interface ExchangeConnection {
  readStop(): void;
  readStart(): void;
  finished(response: Http1Response): void;
}

export class Http1Request extends EventEmitter {
  readonly method: string;
  readonly url: string;
  readonly httpVersion: string;
  readonly httpVersionMajor: number;
  readonly httpVersionMinor: number;
  readonly rawHeaders: string[];
  readonly socket: Socket;
  complete = false;
  readonly #connection: ExchangeConnection;
  #headers: IncomingHttpHeaders | undefined;
  #held: Buffer[] = [];
  #heldBytes = 0;
  #flowing = false;
  #dumped = false;
  #endEmitted = false;

  constructor(connection: ExchangeConnection, socket: Socket, major: number, minor: number, method: string, url: string, rawHeaders: string[]) {
    super();
    this.#connection = connection;
    this.socket = socket;
    this.method = method;
    this.url = url;
    this.httpVersionMajor = major;
    this.httpVersionMinor = minor;
    // llhttp reads HTTP/1.0 and 1.1 (and 0.9): the usual ones as made once.
    this.httpVersion = major === 1 && minor === 1 ? "1.1" : major === 1 && minor === 0 ? "1.0" : `${major}.${minor}`;
    this.rawHeaders = rawHeaders;
  }

  /** Lower-cased names; duplicates joined with ", " (Cookie with "; "), except those Node keeps the first of (Host, Content-Length, …). */
  get headers(): IncomingHttpHeaders {
    if (this.#headers) return this.#headers;
    const headers: Record<string, string> = {};
    for (let i = 0; i < this.rawHeaders.length; i += 2) {
      const name = this.rawHeaders[i].toLowerCase();
      const existing = headers[name];
      if (existing === undefined) headers[name] = this.rawHeaders[i + 1];
      else if (!firstOnly.has(name)) headers[name] = `${existing}${name === "cookie" ? "; " : ", "}${this.rawHeaders[i + 1]}`;
    }
    return (this.#headers = headers);
  }

  /** Body bytes: passed on when read ('data' listened), else held (reading stops past a bound). */
  pushBody(chunk: Buffer): void {
    if (this.#dumped) return;
    if (this.#flowing) return void this.emit("data", chunk);
    this.#held.push(chunk);
    this.#heldBytes += chunk.length;
    if (this.#heldBytes > maxHeldBody) this.#connection.readStop();
  }

  endBody(): void {
    this.complete = true;
    if (this.#flowing && this.#held.length === 0) this.#emitEnd();
  }

  override on(event: string | symbol, listener: (...args: any[]) => void): this {
    super.on(event, listener);
    if (event === "data" && !this.#flowing) this.resume();
    return this;
  }

  /** Stops the body (the client's reads stop). */
  pause(): this {
    this.#flowing = false;
    this.#connection.readStop();
    return this;
  }

  /** The body flows to 'data' listeners; without one it is dropped (as a Readable resumed with none). */
  resume(): this {
    if (this.listenerCount("data") === 0) {
      this.#dumped = true;
      this.#held = [];
    }
    this.#flowing = true;
    queueMicrotask(() => {
      while (this.#flowing && this.#held.length > 0) {
        const chunk = this.#held.shift()!;
        this.#heldBytes -= chunk.length;
        this.emit("data", chunk);
      }
      if (this.complete && this.#held.length === 0) this.#emitEnd();
      if (this.#flowing) this.#connection.readStart();
    });
    return this;
  }

  /** The rest of the body is dropped as it comes: its answer is out (Node's server dumps such a request too). */
  dump(): void {
    this.#dumped = true;
    this.#held = [];
    this.#heldBytes = 0;
    this.#flowing = true;
    this.#connection.readStart();
  }

  #emitEnd(): void {
    if (this.#endEmitted) return;
    this.#endEmitted = true;
    this.emit("end");
  }
}

/** The answer to one request: writeHead, write and end as on Node's ServerResponse, framed for the client. */
export class Http1Response extends EventEmitter {
  readonly socket: Socket;
  statusCode = 200;
  headersSent = false;
  writableEnded = false;
  writableFinished = false;
  /** The connection closes after this answer. */
  close: boolean;
  readonly #connection: ExchangeConnection;
  readonly #noBody: boolean;
  readonly #http10: boolean;
  #head = "";
  #closeEmitted = false;
  #chunked = false;
  #hasLength = false;
  /** Trailer fields for the last chunk, framed ("name: value\r\n" each). */
  #trailers = "";

  constructor(connection: ExchangeConnection, socket: Socket, request: Http1Request, keepAlive: boolean) {
    super();
    this.#connection = connection;
    this.socket = socket;
    this.close = !keepAlive;
    this.#noBody = request.method === "HEAD";
    this.#http10 = request.httpVersionMinor === 0;
  }

  get destroyed(): boolean {
    return this.socket.destroyed;
  }

  /** Throws on a header that is not HTTP (a CR or LF in a value, a name not a token), as Node's writeHead does. */
  writeHead(status: number, headers: readonly string[] | Record<string, string> = []): this {
    if (this.headersSent) throw new Error("the answer's head was sent already");
    const list = Array.isArray(headers) ? headers : Object.entries(headers).flat();
    this.statusCode = status;
    let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Unknown"}\r\n`;
    let date = false;
    for (let i = 0; i < list.length; i += 2) {
      const name = list[i];
      const value = String(list[i + 1]);
      if (!isToken(name) || badValue(value)) throw new Error(`the header '${name.slice(0, 40)}' is not valid HTTP`);
      if (name.length === 14 && name.toLowerCase() === "content-length") this.#hasLength = true;
      else if (name.length === 4 && name.toLowerCase() === "date") date = true;
      head += `${name}: ${value}\r\n`;
    }
    if (!date) head += `Date: ${utcDate()}\r\n`;
    this.#head = head;
    return this;
  }

  write(chunk: Buffer | string): boolean {
    if (this.writableEnded) throw new Error("write after end");
    // Head and first bytes in one write (writev), as chunk framing and its bytes.
    this.socket.cork();
    let more = this.headersSent ? true : this.socket.write(this.#headText(undefined), "latin1");
    if (!this.#noBody && chunk.length > 0) {
      if (this.#chunked) this.socket.write(`${(typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.length).toString(16)}\r\n`, "latin1");
      more = this.socket.write(chunk);
      if (this.#chunked) more = this.socket.write("\r\n", "latin1");
    }
    this.socket.uncork();
    return more;
  }

  /**
   * Trailer fields, sent in the chunked answer's last chunk (RFC 9112 §7.1.2) by end(); an answer whose head is not out
   * yet goes chunked for them. False when they have no place (the answer has its length, is HTTP/1.0's, or has no
   * body). Throws on a field that is not HTTP, as writeHead does.
   */
  addTrailers(fields: Record<string, string | string[]>): boolean {
    let text = "";
    for (const [name, values] of Object.entries(fields)) {
      for (const value of Array.isArray(values) ? values : [values]) {
        if (!isToken(name) || badValue(value)) throw new Error(`the trailer '${name.slice(0, 40)}' is not valid HTTP`);
        text += `${name}: ${value}\r\n`;
      }
    }
    const carried = this.headersSent ? this.#chunked : !this.#hasLength && !this.#http10 && !this.#noBody && this.statusCode !== 204 && this.statusCode !== 304;
    if (carried) this.#trailers += text;
    return carried;
  }

  /** 'close' once: after the answer went out whole, or when the connection closed before. */
  emitClose(): void {
    if (this.#closeEmitted) return;
    this.#closeEmitted = true;
    this.emit("close");
  }

  end(chunk?: Buffer | string): this {
    if (this.writableEnded) return this;
    this.writableEnded = true;
    const body = chunk === undefined || this.#noBody ? undefined : typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    const finished = () => this.#connection.finished(this);
    const head = this.headersSent ? undefined : this.#headText(this.#trailers ? undefined : (body?.length ?? 0));
    const hasBody = body !== undefined && body.length > 0;
    if (head !== undefined && hasBody && !this.#chunked && body.length <= maxCopiedBody) {
      // The usual answer, head and a small body, as one buffer in one write: no corking, no writev of two pieces.
      const whole = Buffer.allocUnsafe(head.length + body.length);
      whole.write(head, 0, "latin1");
      body.copy(whole, head.length);
      this.socket.write(whole, finished);
      return this;
    }
    this.socket.cork();
    // The last write carries the callback: the answer is finished when it is out.
    if (head !== undefined) this.socket.write(head, "latin1", hasBody || this.#chunked ? undefined : finished);
    if (hasBody) {
      if (this.#chunked) this.socket.write(`${body.length.toString(16)}\r\n`, "latin1");
      this.socket.write(body, this.#chunked ? undefined : finished);
      if (this.#chunked) this.socket.write("\r\n", "latin1");
    }
    if (this.#chunked) this.socket.write(this.#trailers ? `0\r\n${this.#trailers}\r\n` : "0\r\n\r\n", "latin1", finished);
    else if (head === undefined && !hasBody) this.socket.write(Buffer.alloc(0), finished);
    this.socket.uncork();
    return this;
  }

  /** The head, framed: it goes out with the first bytes; `length` is the whole body's when end() comes first. */
  #headText(length: number | undefined): string {
    if (!this.#head) this.writeHead(this.statusCode);
    this.headersSent = true;
    const bodiless = this.#noBody || this.statusCode === 204 || this.statusCode === 304 || this.statusCode < 200;
    let head = this.#head;
    if (!this.#hasLength && !bodiless) {
      if (length !== undefined) head += `Content-Length: ${length}\r\n`;
      else if (!this.#http10) {
        this.#chunked = true;
        head += "Transfer-Encoding: chunked\r\n";
      } else this.close = true; // HTTP/1.0 without a length: the close ends the body
    }
    return head + (this.close ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n");
  }
}

let dateSecond = -1;
let dateText = "";
function utcDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

/** One client connection: parses its requests and hands them to `onRequest` one at a time, in order. */
