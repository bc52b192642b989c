/**
 * HTTP/1.x from clients on a gateway's plain (not TLS) listeners, on Node's own
 * parser (llhttp, strict, as Node's HTTP server runs it) driven on the
 * accepted socket's handle, with a request and a response object per exchange
 * that carry only what the forwarder (http-proxy.ts) uses.
 *
 * Why: Node's HTTP server builds an IncomingMessage (a Readable) and a
 * ServerResponse (an OutgoingMessage) per request; beside haproxy that was the
 * largest part of the gateway's cost that the gateway could remove
 * (bench/gateway: a bare proxy on Node's HTTP server 0.60× haproxy, on llhttp
 * directly 0.75×, in the same run).
 *
 * What it keeps of Node's server: llhttp's checks (request smuggling, bad
 * characters, header size), 400/431 to a malformed request, 100-continue,
 * 417 to another expectation, 400 to an HTTP/1.1 request without Host, a
 * client's pipelined requests answered in order, keep-alive (5 s idle), the
 * headers' deadline (60 s), the request's deadline (its body whole within 300 s
 * of its head: Node's requestTimeout), chunked answers to HTTP/1.1 clients when the
 * length is unknown, `Connection: close` as the client and HTTP/1.0 ask.
 * A WebSocket upgrade (the first request waiting, no body) leaves this server:
 * the parser lets go of the socket and `onUpgrade` gets it, with what the
 * client sent after the head (http-upgrade.ts). Any other upgrade request
 * (h2c, TLS) is answered as a plain request, then the connection closes.
 */
import { HTTPParser, methods } from "node:_http_common";
import type { Socket } from "node:net";
import { resetSocket } from "../../lib/join-streams.ts";
import { answerStallMs, cutStalledReader } from "./stalled-reader.ts";
import { Http1Request, Http1Response, type ExchangeConnection } from "./http1-messages.ts";
import { isWebSocketUpgrade } from "./http-message.ts";

export { Http1Request, Http1Response } from "./http1-messages.ts";

/** @default 5_000 — Node's keepAliveTimeout: an idle keep-alive connection closes. */
const idleMs = 5_000;
/** @default 60_000 — Node's headersTimeout: a request's head must be whole this long after its first byte. */
const headersMs = 60_000;
/**
 * @default 300_000 — Node's requestTimeout: a request's body must be whole this long after its head. Without
 * it a client that stops halfway through a body (a slow-loris on the body) held its connection for ever, the
 * answer sent or not: the parser waits for the rest, and no idle or head deadline runs while a body is read.
 */
const requestMs = 300_000;
/** Pipelined requests held behind the one being answered; a client that sends more is cut. */
const maxQueued = 32;
/** Header fields in one head (Node's server refuses about as many, with 431). */
const maxHeaderFields = 1000;

const closeResponses = {
  400: Buffer.from("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n", "latin1"),
  408: Buffer.from("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n", "latin1"),
  431: Buffer.from("HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n", "latin1"),
};

export interface Http1ServerDeps {
  onRequest(request: Http1Request, response: Http1Response): void;
  /** A WebSocket upgrade: the socket is the caller's from here on, paused; `early` is what followed the request's head. */
  onUpgrade?(request: Http1Request, socket: Socket, early: Buffer): void;
  count(reason: string): void;
  /** @default 5_000 */
  idleMs?: number;
  /** @default 60_000 */
  headersMs?: number;
  /** @default 300_000 */
  requestMs?: number;
  /** @default 300_000 (stalled-reader.ts) */
  answerStallMs?: number;
}

type Handle = { readStart(): number; readStop(): number };

export class Http1Connection implements ExchangeConnection {
  readonly #socket: Socket;
  readonly #deps: Http1ServerDeps;
  readonly #parser = new HTTPParser();
  readonly #handle: Handle;
  /** Parsed requests not yet answered; the first is being answered. */
  readonly #queue: { request: Http1Request; response: Http1Response }[] = [];
  /** The request whose body is being parsed (the last parsed). */
  #parsing: Http1Request | undefined;
  #headerPairs: string[] = [];
  #url = "";
  /**
   * One timer per connection, running while it is open: it fires when the state it guards (an idle connection, a head
   * or a body under way) would be past its deadline, and is set again for the rest when the state changed meanwhile.
   * A state change only notes its time: a timer refreshed two or three times per request was a cost of every request.
   */
  #timer: NodeJS.Timeout;
  #waiting: "idle" | "head" | "body" | "none" = "idle";
  #since = performance.now();
  readonly #idleMs: number;
  readonly #headersMs: number;
  readonly #requestMs: number;
  /** The shortest deadline: how often a connection with nothing to guard looks again. */
  readonly #period: number;
  readonly #onTimer = () => this.#onTimeout();
  #clientEnded = false;
  #closing = false;
  /** A WebSocket upgrade parsed: the socket goes to onUpgrade once the parser returns. */
  #upgrading: Http1Request | undefined;
  #detached = false;
  readonly #onEnd = () => this.#onClientEnd();
  readonly #onDrain = () => this.#queue[0]?.response.emit("drain");
  readonly #onCloseListener = () => this.#onClose();

  constructor(socket: Socket, early: Buffer, deps: Http1ServerDeps) {
    this.#socket = socket;
    this.#deps = deps;
    this.#handle = (socket as Socket & { _handle: Handle })._handle;
    const parser = this.#parser;
    parser.initialize(HTTPParser.REQUEST, {}, 0, 0);
    // Heads of more than 32 fields come in batches; llhttp bounds their bytes (16 KiB), this their number.
    parser[HTTPParser.kOnHeaders] = (headers: string[], url: string) => {
      if (this.#headerPairs.length + headers.length > maxHeaderFields * 2) {
        this.#deps.count("http request head too large");
        return this.#refuse(closeResponses[431]);
      }
      this.#headerPairs.push(...headers);
      this.#url += url;
    };
    parser[HTTPParser.kOnHeadersComplete] = (major: number, minor: number, headers: string[] | undefined, method: number, url: string | undefined, _status: unknown, _message: unknown, upgrade: boolean, keepAlive: boolean) =>
      this.#onHead(major, minor, headers ?? this.#takeHeaders(), methods[method], url ?? this.#takeUrl(), upgrade, keepAlive);
    parser[HTTPParser.kOnBody] = (chunk: Buffer) => this.#parsing?.pushBody(chunk);
    parser[HTTPParser.kOnMessageComplete] = () => {
      this.#parsing?.endBody();
      this.#parsing = undefined;
      this.#arm(this.#queue.length === 0 ? "idle" : "none");
    };
    parser[HTTPParser.kOnExecute] = (result: number | Error) => this.#onExecute(result, undefined);
    this.#idleMs = deps.idleMs ?? idleMs;
    this.#headersMs = deps.headersMs ?? headersMs;
    this.#requestMs = deps.requestMs ?? requestMs;
    this.#period = Math.min(this.#idleMs, this.#headersMs, this.#requestMs);
    this.#timer = setTimeout(this.#onTimer, this.#period);
    socket.on("end", this.#onEnd);
    // A write the forwarder waits on ('drain' after write() said false) is the answer being written.
    socket.on("drain", this.#onDrain);
    socket.once("close", this.#onCloseListener);
    cutStalledReader(socket, deps.answerStallMs ?? answerStallMs, deps.count);
    const result = early.length > 0 ? parser.execute(early) : 0;
    parser.consume(this.#handle);
    this.#onExecute(result, early);
    if (!socket.destroyed && !this.#detached) socket.resume();
  }

  readStop(): void {
    this.#handle.readStop?.();
  }

  readStart(): void {
    if (!this.#socket.destroyed && this.#queue.length <= 1) this.#handle.readStart?.();
  }

  /** An answer was written whole: the next request, or the close the answer asked for. */
  finished(response: Http1Response): void {
    const first = this.#queue[0];
    // A write whose connection closed first: the answer was told at the close.
    if (first?.response !== response || this.#socket.destroyed) return;
    response.writableFinished = true;
    response.emit("finish");
    response.emitClose();
    this.#queue.shift();
    // A body nobody will read now (the answer went before it, or its reader left) must not hold the connection.
    if (!first.request.complete) first.request.dump();
    if (response.close || (this.#clientEnded && this.#queue.length === 0)) return this.#end();
    const next = this.#queue[0];
    if (next) {
      // Its body's deadline starts now: reads were stopped while it waited its turn.
      if (this.#parsing === next.request) this.#arm("body");
      return this.#start(next.request, next.response);
    }
    // Idle once the request's body is read too (an answer can go before its request's end: a 404 to a POST).
    if (this.#parsing === undefined) this.#arm("idle");
    this.readStart();
  }

  #onHead(major: number, minor: number, rawHeaders: string[], method: string, url: string, upgrade: boolean, keepAlive: boolean): number {
    // Refused (a head too large) or closing: nothing more is answered on this connection.
    if (this.#closing) return 1;
    const request = new Http1Request(this, this.#socket, major, minor, method, url, rawHeaders);
    // A WebSocket upgrade with nothing before it: llhttp stops after its head, and #onExecute hands the socket over.
    if (upgrade && this.#deps.onUpgrade && this.#queue.length === 0 && isWebSocketUpgrade(method, request.headers)) {
      this.#upgrading = request;
      return 0;
    }
    const response = new Http1Response(this, this.#socket, request, keepAlive && !upgrade && !this.#closing);
    this.#parsing = request;
    // The body (if any: kOnMessageComplete comes after this) must be whole in time, unless it waits behind another.
    this.#arm(this.#queue.length === 0 ? "body" : "none");
    if (this.#queue.length >= maxQueued) {
      this.#deps.count("http too many pipelined requests");
      this.#refuse(undefined);
      this.#socket.destroy();
      return 1;
    }
    this.#queue.push({ request, response });
    if (this.#queue.length > 1) this.readStop();
    if (this.#queue.length === 1) this.#start(request, response);
    return 0;
  }

  /** What Node's server answers itself (no Host, an expectation), else the forwarder. */
  #start(request: Http1Request, response: Http1Response): void {
    if (this.#socket.destroyed) return;
    if (request.httpVersionMinor === 1 && request.headers.host === undefined) {
      this.#deps.count("http request without Host");
      response.close = true;
      response.writeHead(400);
      response.end();
      return;
    }
    const expect = request.headers.expect;
    if (expect !== undefined) {
      if (!/^100-continue$/i.test(expect.trim())) {
        response.close = true;
        response.writeHead(417);
        response.end();
        return;
      }
      this.#socket.write("HTTP/1.1 100 Continue\r\n\r\n", "latin1");
    }
    this.#deps.onRequest(request, response);
  }

  #onExecute(result: number | Error, early: Buffer | undefined): void {
    if (this.#upgrading && typeof result === "number") return this.#detach(this.#upgrading, (early ?? this.#parser.getCurrentBuffer()).subarray(result));
    if (result instanceof Error) {
      if (this.#closing) return;
      const code = (result as Error & { code?: string }).code;
      this.#deps.count(code === "HPE_HEADER_OVERFLOW" ? "http request head too large" : "http malformed request");
      // An answer already under way is cut; otherwise the client is told, as Node's server tells it.
      const idle = this.#queue.length === 0 || !this.#queue[0].response.headersSent;
      return this.#refuse(idle ? (code === "HPE_HEADER_OVERFLOW" ? closeResponses[431] : closeResponses[400]) : undefined);
    }
    if (this.#waiting === "idle" && result > 0 && this.#parsing === undefined && this.#queue.length === 0) this.#arm("head");
  }

  #arm(waiting: "idle" | "head" | "body" | "none"): void {
    this.#waiting = waiting;
    if (waiting !== "none") this.#since = performance.now();
  }

  /** The deadline of what the connection waits for now, in ms after #since. */
  #limit(): number {
    return this.#waiting === "idle" ? this.#idleMs : this.#waiting === "head" ? this.#headersMs : this.#waiting === "body" ? this.#requestMs : this.#period;
  }

  #onTimeout(): void {
    if (this.#closing) return;
    const elapsed = performance.now() - this.#since;
    if (this.#waiting === "idle" && elapsed >= this.#idleMs) {
      this.#closing = true;
      return void this.#socket.destroy();
    }
    if (this.#waiting === "head" && elapsed >= this.#headersMs) {
      // A head under way for longer than its deadline: a slow client, or one that never finishes (slowloris).
      this.#deps.count("http request head timed out");
      return this.#refuse(closeResponses[408]);
    }
    if (this.#waiting === "body" && elapsed >= this.#requestMs) {
      // A body stalled halfway: 408 if nothing was answered yet; an answer under way is cut (RST: not an end);
      // after a whole answer, the connection just closes (a 408 then would read as the next request's answer).
      this.#deps.count("http request body timed out");
      const answering = this.#queue.length > 0;
      if (answering && this.#queue[0].response.headersSent) {
        this.#closing = true;
        clearTimeout(this.#timer);
        return resetSocket(this.#socket);
      }
      return this.#refuse(answering ? closeResponses[408] : undefined);
    }
    // Not yet (the state changed since the timer was set): again for the rest of the current deadline, or sooner (a
    // state with a shorter deadline may come meanwhile: every deadline is at least #period).
    const rest = Math.min(this.#period, Math.max(1, Math.ceil(this.#limit() - elapsed)));
    this.#timer = setTimeout(this.#onTimer, rest);
  }

  /** A last answer of the connection's own (400, 408, 431), then the close. */
  #refuse(answer: Buffer | undefined): void {
    if (this.#closing) return;
    this.#closing = true;
    clearTimeout(this.#timer);
    this.readStop();
    if (answer && !this.#socket.destroyed) this.#socket.end(answer);
    this.#socket.destroySoon();
  }

  #takeHeaders(): string[] {
    const headers = this.#headerPairs;
    this.#headerPairs = [];
    return headers;
  }

  #takeUrl(): string {
    const url = this.#url;
    this.#url = "";
    return url;
  }

  #onClientEnd(): void {
    this.#clientEnded = true;
    // A FIN inside a request body (requests are never delimited by the close) is a cut body: its reader is told at
    // the close (an error), and its answer is abandoned with an RST. Unsaid, the body neither ended nor failed and
    // the backend waited for the rest until the route's timeout.
    if (this.#parsing !== undefined && !this.#parsing.complete) {
      this.#deps.count("http request body cut by the client");
      this.#closing = true;
      clearTimeout(this.#timer);
      return resetSocket(this.#socket);
    }
    if (this.#queue.length === 0) this.#end();
  }

  /** The last answer is out: closed once written, as Node's server does (reads may be stopped: a FIN would go unread). */
  #end(): void {
    this.#closing = true;
    clearTimeout(this.#timer);
    this.#socket.destroySoon();
  }

  /** The socket leaves for a WebSocket upgrade: no parser, timer or listener of this server stays on it. */
  #detach(request: Http1Request, early: Buffer): void {
    this.#upgrading = undefined;
    this.#detached = true;
    this.#closing = true;
    clearTimeout(this.#timer);
    const socket = this.#socket;
    socket.off("end", this.#onEnd);
    socket.off("drain", this.#onDrain);
    socket.off("close", this.#onCloseListener);
    socket.setTimeout(0);
    socket.removeAllListeners("timeout");
    this.#freeParser();
    socket.pause();
    this.#deps.onUpgrade!(request, socket, Buffer.from(early));
  }

  #freeParser(): void {
    const parser = this.#parser;
    parser.unconsume();
    parser.remove();
    // As Node frees its parsers: once the stack that may be inside it has unwound.
    setImmediate(() => parser.close());
  }

  #onClose(): void {
    this.#closing = true;
    clearTimeout(this.#timer);
    this.#freeParser();
    for (const { request, response } of this.#queue.splice(0)) {
      // Heard only by a reader of the body (an unheard 'error' would throw).
      if (!request.complete && request.listenerCount("error") > 0) request.emit("error", Object.assign(new Error("the client left mid-request"), { code: "ECONNRESET" }));
      if (!response.writableFinished) response.emitClose();
    }
  }
}
