/**
 * The sockets of one gateway port, thin around the plan (plan.ts): a TCP port
 * joins each client with a backend; an HTTP port hands each connection to an
 * HTTP/1.1 server, or to an HTTP/2 one when it opens with the HTTP/2 preface
 * (h2c with prior knowledge, RFC 9113 §3.3); a TLS port reads the ClientHello
 * (client-hello.ts), picks the entry of its server name, and either passes the
 * bytes through to a backend untouched or terminates TLS with the entry's
 * certificate and goes on as HTTP (h2 or http/1.1 by ALPN) or TCP.
 *
 * A connection keeps the routes it was accepted with; a new plan applies to
 * the connections after it. Every refusal resets the client (RST) and is
 * counted with its reason.
 */
import type { IncomingMessage, Server as HttpServer, ServerResponse } from "node:http";
import { http } from "../../lib/node-http.ts";
import { createServer as createHttp2Server, type Http2Server, type Http2ServerRequest, type Http2ServerResponse, type ServerHttp2Session } from "node:http2";
import { boundHttp2Session } from "./http2-deadlines.ts";
import { answerStallMs, cutIfStalled } from "./stalled-reader.ts";
import { createServer, type Server, type Socket } from "node:net";
import { Http1Connection } from "./http1-server.ts";
import { replayed } from "./replayed.ts";
import type { Duplex } from "node:stream";
import { TLSSocket, type SecureContext } from "node:tls";
import { SecureContexts } from "./secure-contexts.ts";
import { describeError, LeafmeshError } from "../../lib/errors.ts";
import { listenMeaning } from "../../lib/listen-errors.ts";
import { resetStream, type JoinedStreams } from "../../lib/join-streams.ts";
import type { Logger } from "../../lib/log.ts";
import { maxClientHelloBytes, parseClientHello } from "./client-hello.ts";
import type { HttpContext, HttpForwarder } from "./http-proxy.ts";
import { isWebSocketUpgrade } from "./http-message.ts";
import type { UpgradeContext } from "./http-upgrade.ts";
import type { PlannedL4Route, PortPlan, SniEntry } from "./plan.ts";
import { joinBackend, type ConnectionEntry } from "./backend-join.ts";
import { routeSni, WeightedChoice } from "./router.ts";
import type { BackendPools } from "./upstream.ts";

export type { ConnectionEntry };

export interface ListenerDeps {
  host: string;
  forwarder: HttpForwarder;
  pools: BackendPools;
  log: Logger;
  count: (reason: string) => void;
  routeOutcome: (route: string, status: number) => void;
  access: (entry: ConnectionEntry) => void;
  /** @default 10_000 — a client that has not sent its ClientHello (or first bytes) by then is cut: a slow-loris holds no socket longer. */
  helloTimeoutMs?: number;
  /** @default 3_600_000 — a TCP or TLS connection silent this long is reset, as the traffic actor's. */
  idleTimeoutMs?: number;
  /** @default 10_000 — a terminated TLS handshake not done this long after the ClientHello is reset (as the hello's own deadline). */
  handshakeTimeoutMs?: number;
  /** stalled-reader.ts's: @default 300_000 */
  answerStallMs?: number;
  /** http2-deadlines.ts's idleMs (@default 60_000) and requestMs (@default 300_000). */
  http2IdleMs?: number;
  http2RequestMs?: number;
}

/** The HTTP/2 connection preface (RFC 9113 §3.4): what an h2c client with prior knowledge sends first. */
const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export type ListenerState = { state: "listening" } | { state: "failed"; error: string } | { state: "opening" };

export class GatewayPortListener {
  readonly port: number;
  readonly #deps: ListenerDeps;
  #plan: PortPlan;
  readonly #server: Server;
  readonly #http1: HttpServer;
  /** HTTP/2 sessions: h2c with prior knowledge, or TLS with ALPN h2. */
  readonly #http2: Http2Server;
  readonly #contexts = new WeakMap<object, HttpContext>();
  /** The context of the connection being handed to the HTTP/2 server: its 'session' event comes synchronously. */
  #pendingContext: HttpContext | undefined;
  readonly #sockets = new Set<Socket>();
  readonly #joins = new Set<JoinedStreams>();
  readonly #weights = new WeightedChoice();
  readonly #secureContexts = new SecureContexts();
  /** Secrets whose certificate could not be used, said once each. */
  readonly #unusable = new Set<string>();
  #state: ListenerState = { state: "opening" };

  constructor(port: number, plan: PortPlan, deps: ListenerDeps) {
    this.port = port;
    this.#plan = plan;
    this.#deps = deps;
    this.#server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.#accept(socket));
    const onRequest = (request: IncomingMessage | Http2ServerRequest, response: ServerResponse | Http2ServerResponse) => {
      if (request.httpVersionMajor === 2 && (request as Http2ServerRequest).stream.destroyed) return deps.count("http2 stream reset by the client before its request"); // no session left to route by
      const context = request.httpVersionMajor === 2 ? this.#contexts.get((request as Http2ServerRequest).stream.session as ServerHttp2Session) : this.#contexts.get(request.socket);
      if (!context) {
        deps.count("http connection without routes");
        (response as ServerResponse).writeHead(503);
        response.end();
        return;
      }
      deps.forwarder.handle(request, response, context);
    };
    // Only WebSocket upgrades leave the server for http-upgrade.ts; any other (h2c) is answered as a plain request.
    this.#http1 = http.createServer({ noDelay: true, shouldUpgradeCallback: (request: IncomingMessage) => isWebSocketUpgrade(request.method, request.headers) }, onRequest);
    this.#http1.on("upgrade", (request: IncomingMessage, socket: Duplex, early: Buffer) => {
      const context = this.#contexts.get(socket);
      if (!context) {
        deps.count("http connection without routes");
        return void socket.destroy();
      }
      deps.forwarder.upgrade(request, socket, early, this.#upgradeContext(context));
    });
    // Node's server keeps no deadline for an answer its client does not read (its timeout is off); with a handler
    // of ours, a socket quiet for other reasons is left to Node's own deadlines (headers, request, keep-alive).
    const stallMs = deps.answerStallMs ?? answerStallMs;
    this.#http1.setTimeout(stallMs, (socket: Socket) => cutIfStalled(socket, stallMs, deps.count));
    // RFC 8441: WebSockets over HTTP/2 (extended CONNECT, `:protocol: websocket`), joined as HTTP/1.1 upgrades are.
    this.#http2 = createHttp2Server({ settings: { enableConnectProtocol: true } }, onRequest);
    this.#http2.on("connect", (request: Http2ServerRequest, response: Http2ServerResponse) => {
      const context = request.headers[":protocol"] === "websocket" && !request.stream.destroyed && this.#contexts.get(request.stream.session as ServerHttp2Session);
      if (!context) return onRequest(request, response); // any other CONNECT is the forwarder's to refuse (405)
      deps.forwarder.upgrade(request, request.stream, Buffer.alloc(0), this.#upgradeContext(context));
    });
    this.#http2.on("session", (session) => {
      if (this.#pendingContext) this.#contexts.set(session, this.#pendingContext);
      // Counted here only: the server's 'sessionError' is this same error again (each was counted twice).
      session.on("error", () => deps.count("http2 session error"));
      boundHttp2Session(session, { count: deps.count, idleMs: deps.http2IdleMs, requestMs: deps.http2RequestMs, answerStallMs: deps.answerStallMs });
    });
    for (const server of [this.#http1, this.#http2] as const) {
      // A malformed request is the client's: answered 400 by Node, counted, never an exception.
      server.on("clientError", (_error: Error, socket: Duplex) => {
        deps.count("http malformed request");
        socket.destroy();
      });
    }
  }

  get state(): ListenerState {
    return this.#state;
  }

  get plan(): PortPlan {
    return this.#plan;
  }

  get connections(): number {
    return this.#sockets.size;
  }

  update(plan: PortPlan): void {
    this.#plan = plan;
  }

  async listen(): Promise<void> {
    try {
      await new Promise<void>((resolve, reject) => {
        this.#server.once("error", reject);
        this.#server.listen({ port: this.port, host: this.#deps.host, backlog: 4096 }, () => {
          this.#server.off("error", reject);
          resolve();
        });
      });
    } catch (error) {
      this.#state = { state: "failed", error: `${this.#deps.host}:${this.port}: ${listenMeaning(error) ?? (error as Error).message}` };
      throw new LeafmeshError("CONFIG_INVALID", this.#state.error, { cause: error });
    }
    // After listen, errors are accept failures (EMFILE): counted; unhandled they would end the agent.
    this.#server.on("error", (error: NodeJS.ErrnoException) => this.#deps.count(`accept failed: ${error.code ?? "error"}`));
    this.#state = { state: "listening" };
  }

  /** Stops accepting and resets every open connection. */
  async close(): Promise<void> {
    const stopping = new LeafmeshError("NOT_RUNNING", `the gateway listener on port ${this.port} closed`);
    for (const join of this.#joins) join.reset(stopping);
    for (const socket of this.#sockets) resetStream(socket, stopping);
    this.#http2.close();
    this.#http1.close();
    if (this.#state.state === "listening") await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#state = { state: "failed", error: "closed" };
  }

  #accept(socket: Socket): void {
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
    // A client's RST is ordinary: what it cut is counted where it matters.
    socket.on("error", () => undefined);
    const plan = this.#plan;
    if (plan.kind === "tcp") return this.#joinBackend(socket, plan.route, { kind: "tcp", port: this.port, client: clientOf(socket), durationMs: 0, complete: false }, Buffer.alloc(0));
    this.#sniff(socket, plan);
  }

  /** Reads the first bytes (the ClientHello, or enough to tell h2c from HTTP/1.1) and dispatches. */
  #sniff(socket: Socket, plan: Exclude<PortPlan, { kind: "tcp" }>): void {
    const { count } = this.#deps;
    let buffered = Buffer.alloc(0);
    const timer = setTimeout(() => {
      cleanup();
      count(plan.kind === "tls" ? "tls hello timeout" : "http first bytes timeout");
      resetStream(socket, new LeafmeshError("PROXY_FAILED", "no first bytes in time"));
    }, this.#deps.helloTimeoutMs ?? 10_000);
    const cleanup = () => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.pause();
    };
    const onEnd = () => {
      cleanup();
      count("client ended before its first bytes");
      socket.destroy();
    };
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (plan.kind === "http") {
        const prefix = Math.min(buffered.length, h2Preface.length);
        if (buffered.length < h2Preface.length && buffered.subarray(0, prefix).equals(h2Preface.subarray(0, prefix))) return;
        cleanup();
        const context: HttpContext = { port: this.port, hosts: plan.hosts, scheme: "http", client: clientOf(socket) };
        if (buffered.subarray(0, h2Preface.length).equals(h2Preface)) this.#toHttp2(replayed(socket, buffered), context);
        // HTTP/1.x on Node's parser driven on the socket's handle, the bytes read so far first (http1-server.ts).
        else
          new Http1Connection(socket, buffered, {
            count,
            answerStallMs: this.#deps.answerStallMs,
            onRequest: (request, response) => this.#deps.forwarder.handle(request, response, context),
            onUpgrade: (request, upgraded, early) => this.#deps.forwarder.upgrade(request, upgraded, early, this.#upgradeContext(context)),
          });
        return;
      }
      const hello = parseClientHello(buffered);
      if (hello.status === "incomplete" && buffered.length < maxClientHelloBytes) return;
      cleanup();
      if (hello.status !== "ok") {
        count(hello.status === "incomplete" ? "tls hello too long" : "tls not a ClientHello");
        return resetStream(socket, new LeafmeshError("PROXY_FAILED", hello.status === "invalid" ? hello.reason : "ClientHello too long"));
      }
      const entry = routeSni(plan.sni, hello.serverName);
      if (!entry) {
        count("tls no route for the server name");
        this.#deps.access({ kind: "tls-passthrough", port: this.port, client: clientOf(socket), serverName: hello.serverName ?? "", durationMs: 0, complete: false, reason: "no route for the server name" });
        return resetStream(socket, new LeafmeshError("PROXY_FAILED", `no route for server name '${hello.serverName ?? ""}'`));
      }
      this.#tls(socket, entry, buffered, hello.serverName ?? "");
    };
    socket.on("data", onData);
    socket.on("end", onEnd);
  }

  /** An upgraded connection is this listener's to reset when it closes, and to time out when idle, as a TCP route's. */
  #upgradeContext(context: HttpContext): UpgradeContext {
    return { ...context, joins: this.#joins, idleTimeoutMs: this.#deps.idleTimeoutMs };
  }

  #toHttp2(socket: Duplex, context: HttpContext): void {
    this.#contexts.set(socket, context);
    this.#pendingContext = context;
    try {
      this.#http2.emit("connection", socket);
    } finally {
      this.#pendingContext = undefined;
    }
    socket.resume();
  }

  #tls(socket: Socket, entry: SniEntry, hello: Buffer, serverName: string): void {
    const log: ConnectionEntry = { kind: entry.mode === "passthrough" ? "tls-passthrough" : "tls-terminate", port: this.port, client: clientOf(socket), serverName, durationMs: 0, complete: false };
    if (entry.mode === "passthrough") return this.#joinBackend(socket, entry.route, log, hello);
    const inner = entry.inner;
    let secureContext: SecureContext;
    try {
      secureContext = this.#secureContexts.of(entry.certificate);
    } catch (error) {
      // The hub refuses a Secret whose key is not its certificate's (normalize-ingress.ts); one that got past (a hub
      // of an older leafmesh) costs its clients, not the agent.
      this.#deps.count("tls certificate unusable");
      if (!this.#unusable.has(entry.certificate.secret)) {
        this.#unusable.add(entry.certificate.secret);
        this.#deps.log.warn({ err: describeError(error), secret: entry.certificate.secret, serverName }, "TLS certificate of the Secret cannot be used; its clients are reset (counted)");
      }
      return resetStream(socket, new LeafmeshError("PROXY_FAILED", `the certificate of Secret ${entry.certificate.secret} cannot be used`));
    }
    const tls = new TLSSocket(replayed(socket, hello), {
      isServer: true,
      secureContext,
      ...(inner.kind === "http" ? { ALPNProtocols: ["h2", "http/1.1"] } : {}),
    });
    let handshook = false;
    // A client that sent its hello and then nothing (or too little) held its socket and a TLS session for ever.
    const handshakeMs = this.#deps.handshakeTimeoutMs ?? 10_000;
    const handshakeTimer = setTimeout(() => {
      if (handshook) return;
      this.#deps.count("tls handshake timeout");
      resetStream(socket, new LeafmeshError("PROXY_FAILED", `TLS handshake not done within ${handshakeMs} ms`));
    }, handshakeMs);
    socket.once("close", () => clearTimeout(handshakeTimer));
    tls.on("error", (error: Error) => {
      // After the handshake a cut is counted where the join or the request ends.
      if (!handshook) {
        this.#deps.count("tls handshake failed");
        this.#deps.log.debug({ err: error.message, serverName }, "TLS handshake failed");
      }
      resetStream(socket, error);
    });
    tls.once("secure", () => {
      handshook = true;
      clearTimeout(handshakeTimer);
      if (inner.kind === "tcp") return this.#joinBackend(tls, inner.route, log, Buffer.alloc(0));
      const context: HttpContext = { port: this.port, hosts: inner.hosts, scheme: "https", client: clientOf(socket) };
      // HTTP/2 on a TLS socket that itself wraps a JS stream fails inside Node (reading 'receive'): it gets a plain stream.
      if (tls.alpnProtocol === "h2") return this.#toHttp2(replayed(tls, Buffer.alloc(0)), context);
      // http/1.1, or a client without ALPN.
      this.#contexts.set(tls, context);
      this.#http1.emit("connection", tls);
    });
  }

  /** A TCP (or TLS passthrough, or terminated TLS) connection joined with a backend of the route (backend-join.ts). */
  #joinBackend(client: Duplex, route: PlannedL4Route, entry: ConnectionEntry, early: Buffer): void {
    joinBackend({ ...this.#deps, weights: this.#weights, joins: this.#joins }, client, route, entry, early);
  }
}

function clientOf(socket: Socket): string {
  return (socket.remoteAddress ?? "").replace(/^::ffff:/, "");
}
