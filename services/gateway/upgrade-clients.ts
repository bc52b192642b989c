/**
 * The client's side of a WebSocket through the gateway (http-upgrade.ts), in
 * the two forms a client asks for one: HTTP/1.1's Upgrade (RFC 6455 §4), told
 * with a 101 on its connection, which then carries the session; and HTTP/2's
 * extended CONNECT (RFC 8441), a stream with `:protocol: websocket`, told with
 * a 200 on that stream, which then carries it. The backend is asked with an
 * HTTP/1.1 Upgrade either way; for an HTTP/2 client the gateway makes the
 * handshake's key and checks the backend's accept (RFC 6455 §4.2.2), as the
 * client itself does over HTTP/1.1.
 *
 * ```ts
 * const side = request.httpVersionMajor === 2 ? http2UpgradeClient(stream) : http1UpgradeClient(socket, String(request.headers.upgrade));
 * stream.write(requestHead("GET", target, [...headers, ...side.backendHeaders]));
 * ```
 */
import { createHash, randomBytes } from "node:crypto";
import { constants as http2, type OutgoingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import type { Socket } from "node:net";
import { Duplex } from "node:stream";
import { LeafmeshError } from "../../lib/errors.ts";
import { resetStream } from "../../lib/join-streams.ts";
import { http } from "../../lib/node-http.ts";
import type { ResponseHead } from "./http1-codec.ts";
import { connectionNamed, endToEnd, hopByHop, rawConnection } from "./http-message.ts";

export interface UpgradeClient {
  /** What the session's bytes flow on after the switch, to be joined with the backend: the client's connection, or its stream's. */
  joinable(): Duplex;
  /** What the client is told on a switch (101, or 200 to an extended CONNECT), for the access log. */
  readonly switchedStatus: number;
  /** The request's headers for the backend's Upgrade ([name, value, …]). */
  readonly backendHeaders: string[];
  /** The gateway's own whole answer (a refusal); the connection or stream ends after it. */
  refuse(status: number, reason: string, headers?: Record<string, string>): void;
  /** The backend's refusal's head, passed on; its body follows by stream.write(). False: it cannot be (nothing was sent). */
  passHead(answer: ResponseHead): boolean;
  /** The refusal's end: the connection closes after it, the stream ends (and asks the client to end its side). */
  end(): void;
  /** The backend switched: the client is told. A reason when the switch cannot be taken (nothing was sent). */
  switched(answer: ResponseHead, rest: Buffer): string | undefined;
  /** Ends the client's side as cut (an RST of its connection, RST_STREAM on its stream), never as a clean end. */
  cut(error: Error): void;
  /** Resets the session when it has been silent this long (the listener's idle time, as a TCP route's). */
  idle(ms: number, onIdle: () => void): void;
}

/** A whole answer of the gateway's own on a connection that closes after it. */
function answerAndClose(client: Duplex, status: number, reason: string, headers: Record<string, string>): void {
  if (client.destroyed || !client.writable) return;
  const body = `${reason}\n`;
  let extra = "";
  for (const [name, value] of Object.entries(headers)) extra += `${name}: ${value}\r\n`;
  client.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? "Error"}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`, "latin1");
}

/** The end-to-end headers of the backend's answer. */
function answerHeaders(answer: ResponseHead): string[] {
  return endToEnd(answer.headers, hopByHop, connectionNamed(rawConnection(answer.headers)));
}

/** The head of an answer passed back to an HTTP/1.1 client: its end-to-end headers, then the gateway's own. */
function answerHead(answer: ResponseHead, own: string): string {
  const headers = answerHeaders(answer);
  let head = `HTTP/1.1 ${answer.status} ${http.STATUS_CODES[answer.status] ?? ""}\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${head}${own}\r\n`;
}

/** The Upgrade header of an answer as the backend wrote it (what the client asked for, when it wrote none). */
function upgradeOf(answer: ResponseHead, asked: string): string {
  for (let i = 0; i < answer.headers.length; i += 2) if (answer.headers[i].toLowerCase() === "upgrade") return answer.headers[i + 1];
  return asked;
}

/** An HTTP/1.1 client's connection (a socket, or a terminated TLS socket) that asked for `upgrade`. */
export function http1UpgradeClient(client: Duplex, upgrade: string): UpgradeClient {
  return {
    joinable: () => client,
    switchedStatus: 101,
    backendHeaders: ["connection", "upgrade", "upgrade", upgrade],
    refuse: (status, reason, headers = {}) => answerAndClose(client, status, reason, headers),
    passHead: (answer) => client.write(answerHead(answer, "connection: close\r\n"), "latin1") || true,
    end: () => client.end(),
    switched: (answer, rest) => {
      client.write(answerHead(answer, `connection: upgrade\r\nupgrade: ${upgradeOf(answer, upgrade)}\r\n`), "latin1");
      if (rest.length > 0) client.write(rest);
      return undefined;
    },
    cut: (error) => resetStream(client, error),
    idle: (ms, onIdle) => {
      if (typeof (client as Socket).setTimeout === "function") (client as Socket).setTimeout(ms, onIdle);
    },
  };
}

/** The GUID of RFC 6455 §1.3, which a server's Sec-WebSocket-Accept hashes with the key. */
const websocketGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** A header of the backend's answer, its values joined. */
function headerOf(answer: ResponseHead, name: string): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < answer.headers.length; i += 2) if (answer.headers[i].toLowerCase() === name) value = value === undefined ? answer.headers[i + 1] : `${value}, ${answer.headers[i + 1]}`;
  return value;
}

/** An HTTP/2 client's extended CONNECT stream (RFC 8441 §4: `:protocol: websocket`). */
export function http2UpgradeClient(stream: ServerHttp2Stream): UpgradeClient {
  const key = randomBytes(16).toString("base64");
  // The answer is whole: RST_STREAM(NO_ERROR) once it went out tells the client to send no more (RFC 9113 §8.1), as
  // Node does itself for a stream whose request was never read; this one was paused, and stayed half-open.
  const end = (body?: string) => stream.end(body, () => setImmediate(() => stream.closed || stream.close(http2.NGHTTP2_NO_ERROR)));
  /** Answers on the stream; false when Node refuses the head (a status or a field HTTP/2 cannot carry). */
  const respond = (status: number, raw: readonly string[], endStream: boolean): boolean => {
    if (stream.destroyed || stream.closed || stream.headersSent) return false;
    const headers: OutgoingHttpHeaders = { ":status": status };
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i].toLowerCase();
      const existing = headers[name];
      headers[name] = existing === undefined ? raw[i + 1] : [...(Array.isArray(existing) ? existing : [String(existing)]), raw[i + 1]];
    }
    try {
      stream.respond(headers, { endStream });
      return true;
    } catch {
      return false;
    }
  };
  return {
    joinable: () => new Http2StreamSide(stream),
    switchedStatus: 200,
    // The client sent no key (HTTP/2 has none): the gateway's, for the backend's HTTP/1.1 handshake.
    backendHeaders: ["connection", "upgrade", "upgrade", "websocket", "sec-websocket-key", key],
    refuse: (status, reason, headers = {}) => {
      if (respond(status, ["content-type", "text/plain; charset=utf-8", ...Object.entries(headers).flat()], false)) end(`${reason}\n`);
    },
    passHead: (answer) => respond(answer.status, answerHeaders(answer), false),
    end: () => end(),
    switched: (answer, rest) => {
      const expected = createHash("sha1").update(key + websocketGuid).digest("base64");
      if (headerOf(answer, "sec-websocket-accept") !== expected) return "the backend's Sec-WebSocket-Accept does not answer the gateway's key";
      if ((headerOf(answer, "upgrade") ?? "websocket").toLowerCase() !== "websocket") return "the backend switched to another protocol than websocket";
      // RFC 8441 §5: the 200 carries the session's subprotocol and extensions; the key's answer has no place in it.
      const headers = answerHeaders(answer).filter((_, i, list) => list[i - (i % 2)].toLowerCase() !== "sec-websocket-accept");
      if (!respond(200, headers, false)) return "the backend's answer cannot be passed on over HTTP/2";
      if (rest.length > 0) stream.write(rest);
      return undefined;
    },
    // RST_STREAM: Node's destroy with an error resets the stream (INTERNAL_ERROR); a client that left is past caring.
    cut: (error) => (stream.destroyed ? undefined : resetStream(stream, error)),
    idle: (ms, onIdle) => {
      // The server's deadline for a request body (http2-deadlines.ts) is no deadline for a session: it is replaced.
      stream.removeAllListeners("timeout");
      stream.setTimeout(ms, onIdle);
    },
  };
}

/**
 * An extended CONNECT stream as a join (lib/join-streams.ts) needs it: its end only when the client ended it. Node
 * ends a server stream's reading side also when the stream is cut under it (measured on Node 24: a client whose
 * connection drops gives 'aborted' and 'close', then 'end'). Joined as it was, that cut reached the backend as a
 * clean FIN and was logged as a whole session. Here an 'end' waits out the read it came in: a stream reset by then
 * is destroyed with an error (the join resets the backend), else the end is passed on; a reset after a real end
 * (Node's own client ends its side before its RST_STREAM) still cuts the session when the stream closes.
 */
class Http2StreamSide extends Duplex {
  readonly #stream: ServerHttp2Stream;

  constructor(stream: ServerHttp2Stream) {
    super({ allowHalfOpen: true });
    this.#stream = stream;
    const resetByClient = () => stream.aborted || (stream.closed && stream.rstCode !== http2.NGHTTP2_NO_ERROR);
    const cut = () => new LeafmeshError("PROXY_FAILED", `the client reset its HTTP/2 stream (code ${stream.rstCode ?? "none"})`);
    stream.on("data", (chunk: Buffer) => this.push(chunk) || stream.pause());
    stream.once("end", () => setImmediate(() => (resetByClient() ? this.destroy(cut()) : this.push(null))));
    stream.on("error", (error: Error) => this.destroy(error));
    stream.once("close", () => {
      // Both directions done: the end came (or comes: the read above) and ours went out. Anything else is a cut.
      if (stream.rstCode === http2.NGHTTP2_NO_ERROR && this.writableFinished) return;
      setImmediate(() => this.destroyed || (this.readableEnded && this.writableFinished) || this.destroy(cut()));
    });
  }

  override _read(): void {
    this.#stream.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    if (this.#stream.destroyed) return done(new LeafmeshError("PROXY_FAILED", "the client's HTTP/2 stream is gone"));
    // Backpressure as the stream says it (its 'drain'); a stream that closes meanwhile destroys this side.
    if (this.#stream.write(chunk)) done();
    else this.#stream.once("drain", () => done());
  }

  override _final(done: (error?: Error | null) => void): void {
    this.#stream.end(() => done());
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    // A cut: RST_STREAM (Node resets with INTERNAL_ERROR for an error). Both sides ended: the stream closes by itself.
    if (error && !this.#stream.destroyed) this.#stream.destroy(error);
    done(error);
  }
}
