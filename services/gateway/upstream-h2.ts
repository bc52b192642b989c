/**
 * HTTP/2 to backends whose Service port says they speak it, as gRPC servers
 * do: `appProtocol` grpc, h2c, http2 or kubernetes.io/h2c, or a port named
 * grpc, http2, h2c or with one of those and a dash before a suffix
 * (`grpc-api`), as Istio selects a port's protocol. Such a backend gets h2c
 * with prior knowledge (RFC 9113 §3.3): one session per endpoint, its streams
 * multiplexed (another when they reach the backend's limit), made on the same
 * connection any request gets (a socket, or a tunnel stream to another node),
 * dropped when it closes or says GOAWAY, closed when its endpoint leaves.
 *
 * Before, every backend got HTTP/1.1: a gRPC client through the gateway got 502
 * (a gRPC server does not speak HTTP/1.1), and trailers, where gRPC puts its
 * status, had nowhere to go.
 *
 * ```ts
 * const sessions = new Http2Sessions(count);
 * const entry = sessions.open(endpoint.key) ?? sessions.add(endpoint.key, (await pools.connect(backend, client, abort)).stream);
 * const release = sessions.hold(entry); // the stream's place on the session, until its exchange ends
 * const stream = (await entry.ready).request(headers);
 * ```
 */
import { connect, type ClientHttp2Session } from "node:http2";
import { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { TLSSocket } from "node:tls";
import { LeafmeshError } from "../../lib/errors.ts";
import { replayed } from "./replayed.ts";
import type { ServicePort } from "../../bus/catalog.ts";

const http2AppProtocols = new Set(["grpc", "h2c", "http2", "kubernetes.io/h2c"]);
const http2PortName = /^(grpc|http2|h2c)(-|$)/i;

/** Whether a Service port's backends are spoken to in HTTP/2 (h2c). */
export function speaksHttp2(port: Pick<ServicePort, "name" | "appProtocol">): boolean {
  if (port.appProtocol !== undefined) return http2AppProtocols.has(port.appProtocol.toLowerCase());
  return http2PortName.test(port.name);
}

/** Why the gateway gave up a session itself: no failure of its endpoint's. */
export type AbandonReason = "endpoint left the catalog" | "gateway stopped";

/**
 * A session the gateway gave up before it was ready (its endpoint left the catalog, the gateway stops): its ready
 * rejects with this, which is no sign that the endpoint does not speak HTTP/2 and is not held against it.
 */
export class Http2SessionAbandoned extends LeafmeshError {
  readonly reason: AbandonReason;
  constructor(endpoint: string, reason: AbandonReason) {
    super("PROXY_FAILED", `the HTTP/2 session to ${endpoint} was abandoned before the backend's SETTINGS came: ${reason}`);
    this.reason = reason;
  }
}

/** One session to an endpoint: ready once the backend's SETTINGS came, with the streams the gateway holds on it. */
export interface Http2Session {
  session: ClientHttp2Session;
  ready: Promise<ClientHttp2Session>;
  streams: number;
  /** The streams the backend allows at once (its SETTINGS_MAX_CONCURRENT_STREAMS, as last said). */
  limit: number;
  /**
   * Gives the session up: one not ready yet is ended at once (ready rejects with Http2SessionAbandoned); a ready one
   * is closed gracefully (its open streams finish), or ended with its streams when `force`.
   */
  abandon(reason: AbandonReason, force?: boolean): void;
}

/**
 * Streams a session not ready yet is given before its backend says its limit: RFC 9113 §6.5.2 recommends a limit no
 * smaller than 100.
 */
const streamsBeforeSettings = 100;

/**
 * h2c sessions to endpoints, made on demand and forgotten when they end: one per endpoint, and another when those
 * open hold as many streams as the backend allows (SETTINGS_MAX_CONCURRENT_STREAMS), as Envoy's pool does. Past
 * the limit a stream waited in Node's queue for one to end: behind long-lived streams (gRPC watches), for ever.
 */
export class Http2Sessions {
  readonly #sessions = new Map<string, Http2Session[]>();
  readonly #count: (reason: string) => void;
  readonly #idleMs: number;
  readonly #pingTimeoutMs: number;
  /** Sessions whose PING is out. */
  readonly #pinging = new WeakSet<ClientHttp2Session>();

  /**
   * `idleMs` (@default 15_000): a session without traffic this long is closed gracefully (its open streams finish
   * first); one never ready (no SETTINGS yet) is ended at once, its ready rejected as by the SETTINGS wait. `pingTimeoutMs` (@default 5_000 — a PING comes back in milliseconds on any working path, relayed ones
   * included; 5 s rides out a busy backend): how long a session asked whether it lives (check) has to answer.
   */
  constructor(count: (reason: string) => void, idleMs = 15_000, pingTimeoutMs = 5_000) {
    this.#count = count;
    this.#idleMs = idleMs;
    this.#pingTimeoutMs = pingTimeoutMs;
  }

  /**
   * Asks a session whether its connection still carries frames, when a stream on it got no answer in time: a PING
   * (RFC 9113 §6.7) not answered within pingTimeoutMs ends it, its streams cut and new ones on a new connection. A
   * path that died without a word (a node's power cut, a relay gone quiet) kept its session, and each request sent
   * on it waited out its timeout, for as long as requests came (each one kept the session from idling out).
   */
  check(session: ClientHttp2Session): void {
    if (session.closed || session.destroyed || this.#pinging.has(session)) return;
    this.#pinging.add(session);
    const timer = setTimeout(() => {
      this.#count("http2 backend session silent");
      session.destroy(new LeafmeshError("PROXY_FAILED", `no answer to an HTTP/2 PING within ${this.#pingTimeoutMs} ms: the connection to the backend is dead`));
    }, this.#pingTimeoutMs);
    const done = () => {
      clearTimeout(timer);
      this.#pinging.delete(session);
    };
    // Called with an error when the session ends first; false: too many PINGs out already (one is enough).
    if (!session.ping(done)) done();
  }

  /** An open session to the endpoint with room for one more stream, if there is one (a new request's stream goes on it without a connect). */
  open(endpoint: string): Http2Session | undefined {
    for (const entry of this.#sessions.get(endpoint) ?? []) {
      if (entry.session.closed || entry.session.destroyed) continue;
      if (entry.streams < entry.limit) return entry;
    }
    return undefined;
  }

  /** Counts a stream on the session until the function is called (once). */
  hold(entry: Http2Session): () => void {
    entry.streams++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      entry.streams--;
    };
  }

  /** A session made on `stream` (the endpoint's new connection), ready once the backend's SETTINGS came; a backend silent for `timeoutMs` fails it. */
  add(endpoint: string, stream: Duplex, timeoutMs = 10_000): Http2Session {
    // A relayed tunnel stream is TLS over a JavaScript stream (the relay channel), on which Node's HTTP/2 fails an
    // assertion of its own and ends the process (node_http2.cc, is_write_in_progress): any stream but a plain
    // socket reaches HTTP/2 through a plain Duplex, as the listeners hand HTTP/2 their TLS sockets (replayed.ts).
    const transport = stream instanceof Socket && !(stream instanceof TLSSocket) ? stream : replayed(stream as Socket, Buffer.alloc(0));
    // No server push (RFC 9113 §8.4), as Envoy asks of its upstreams: the gateway reads none, and the pushed streams it
    // accepted held their data and the session's window until the backend's answers stalled and failed.
    const session = connect(`http://${endpoint}`, { createConnection: () => transport, settings: { enablePush: false } });
    // HTTP/2 has no half-closed connection: the backend's FIN (its process gone, a restart, a close without GOAWAY)
    // ends the session and cuts its streams. Node's HTTP/2 ends a session only on the socket's 'close', which a
    // half-open connection (connectTcp's, a tunnel stream) never reaches on a FIN: the streams open on it, and every
    // new one the session took, hung for ever.
    transport.once("end", () => transport.destroy());
    const forget = () => {
      const list = this.#sessions.get(endpoint)?.filter((entry) => entry.session !== session);
      if (list?.length) this.#sessions.set(endpoint, list);
      else this.#sessions.delete(endpoint);
    };
    // A backend's GOAWAY, a cut: streams already open end as the session says; new ones take a new session.
    session.on("goaway", forget);
    // An endpoint no longer used (removed from the catalog, or its traffic gone) is not held for ever: as the
    // HTTP/1.1 idle pool's connections, closed when quiet; close() lets a quiet long-lived stream finish first.
    let isReady = false;
    session.setTimeout(this.#idleMs, () => {
      forget();
      if (isReady) return void session.close();
      // Never ready (no SETTINGS from the backend, when the SETTINGS wait is set longer than the idle time): closed
      // gracefully, Node would end it only once the backend closed its side, holding the requests waiting for it.
      session.destroy(new Error(`no HTTP/2 SETTINGS from ${endpoint} within ${this.#idleMs} ms (the session's idle time)`));
    });
    session.on("close", forget);
    session.on("error", () => {
      this.#count("http2 backend session error");
      forget();
    });
    let abandoned: AbandonReason | undefined;
    const ready = new Promise<ClientHttp2Session>((resolve, reject) => {
      const failed = (error?: Error) => reject(abandoned ? new Http2SessionAbandoned(endpoint, abandoned) : (error ?? new Error(`the HTTP/2 session to ${endpoint} closed before it was ready`)));
      // Ready once the backend's SETTINGS came: a server that is not HTTP/2 never sends them, and fails here.
      const timer = setTimeout(() => session.destroy(new Error(`no HTTP/2 SETTINGS from ${endpoint} within ${timeoutMs} ms`)), timeoutMs);
      session.once("remoteSettings", () => {
        clearTimeout(timer);
        session.off("close", failed);
        isReady = true;
        resolve(session);
      });
      session.once("close", () => clearTimeout(timer));
      session.once("error", failed);
      session.once("close", failed);
    });
    ready.catch(() => undefined);
    const abandon = (reason: AbandonReason, force = false) => {
      forget();
      if (isReady && !force) return void session.close();
      if (!isReady) abandoned = reason;
      // Not close(): a session closed gracefully before the backend's SETTINGS ends only when the backend closes its
      // side. A backend that never did (a hung server) held it, and the requests waiting for it, until their timeout;
      // one that did failed it as if it did not speak HTTP/2, a warning held against an endpoint that only left.
      session.destroy();
    };
    const entry: Http2Session = { session, ready, streams: 0, limit: streamsBeforeSettings, abandon };
    // A backend may change its limit with any SETTINGS frame; Node's default (none said) is 2^32 - 1.
    session.on("remoteSettings", (settings) => (entry.limit = settings.maxConcurrentStreams ?? 2 ** 32 - 1));
    this.#sessions.set(endpoint, [...(this.#sessions.get(endpoint) ?? []), entry]);
    return entry;
  }

  /** Sessions open, for tests and status. */
  get size(): number {
    let sessions = 0;
    for (const list of this.#sessions.values()) sessions += list.length;
    return sessions;
  }

  /** Closes gracefully the sessions to endpoints not in `endpoints` (their open streams finish first); ends those not ready yet. */
  retain(endpoints: ReadonlySet<string>): void {
    for (const [endpoint, list] of this.#sessions) {
      if (endpoints.has(endpoint)) continue;
      this.#sessions.delete(endpoint);
      for (const entry of list) entry.abandon("endpoint left the catalog");
    }
  }

  closeAll(): void {
    for (const list of [...this.#sessions.values()]) for (const entry of list) entry.abandon("gateway stopped", true);
    this.#sessions.clear();
  }
}

/**
 * `promise`, or a rejection once `signal` aborts: a request waiting for an HTTP/2 session (a backend's SETTINGS, up to
 * 10 s) is answered at its route's deadline, as one waiting for a connect is, and gives up when its client leaves.
 */
export function whileWanted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  const gone = () => new LeafmeshError("PROXY_FAILED", "the request timed out or its client left while its HTTP/2 session was being made");
  if (signal.aborted) return Promise.reject(gone());
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(gone());
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => (signal.removeEventListener("abort", onAbort), resolve(value)),
      (error: unknown) => (signal.removeEventListener("abort", onAbort), reject(error as Error)),
    );
  });
}

/** Both releases, in one call. */
export function both(first: () => void, second: () => void): () => void {
  return () => {
    first();
    second();
  };
}
