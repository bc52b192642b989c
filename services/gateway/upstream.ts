/**
 * The gateway's way to a backend: one balancer per Service port a route sends
 * to (balance/: the same policies, topology tiers and outlier ejection as the
 * traffic actor), and a connect that tries the next endpoint when one fails.
 * An endpoint on this node is dialled by IP; one on another node through the
 * tunnel's `StreamDialer` (direct, hole-punched or relayed, as the tunnel
 * chose), so a gateway reaches backends anywhere in the mesh.
 *
 * ```ts
 * const pools = new BackendPools({ node: "edge-a", dialer: tunnel, shared, count, log });
 * pools.refresh(catalog, plannedBackends);
 * const { stream, endpoint, release } = await pools.connect(backend, "198.18.1.7", new AbortController());
 * ```
 */
import { connectTcp } from "../../lib/connect-tcp.ts";
import { Readable, type Duplex } from "node:stream";
import { BurstLog } from "../../lib/burst-log.ts";
import { EarlyBytes, EarlyBytesInDoubt } from "../../lib/early-bytes.ts";
import { ServicePortBalancer, type BalancerShared } from "../../balance/balancer.ts";
import { choosePolicy, endpointsOf, slicesServedTo } from "../../balance/endpoints.ts";
import type { EndpointTarget } from "../../balance/policy.ts";
import type { CatalogReader } from "../../bus/catalog.ts";
import { localShortageCode, openStreamWithin, type StreamDialer } from "../../bus/streams.ts";
import { describeError, LeafmeshError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import type { PlannedBackend } from "./plan.ts";
import { HttpConnection, IdleConnections } from "./upstream-http.ts";
import { both, Http2SessionAbandoned, Http2Sessions, speaksHttp2, whileWanted } from "./upstream-h2.ts";
import type { ClientHttp2Session } from "node:http2";

const noneExcluded: ReadonlySet<string> = new Set();

export interface UpstreamOptions {
  node: string;
  dialer?: StreamDialer;
  shared: BalancerShared;
  /** Counts a reason (refusals and failures are counted, never only logged). */
  count: (reason: string) => void;
  log: Logger;
  /** @default 3_000 — a LAN endpoint answers a SYN in milliseconds; 3 s covers one SYN retransmit, then the next endpoint. */
  connectTimeoutMs?: number;
  /** @default 10_000 — a tunnel stream to a node not reached yet waits for its path (a punch, then the relay). */
  remoteConnectTimeoutMs?: number;
  /** @default 4 — endpoints tried per connection or request before it fails. */
  maxAttempts?: number;
  /** @default 15_000 — an idle HTTP connection to a backend is ended after this (upstream-http.ts). */
  idleConnectionMs?: number;
  /** @default 10_000 — an HTTP/2 endpoint whose SETTINGS have not come this long after its connect is failed (upstream-h2.ts). */
  http2SettingsTimeoutMs?: number;
  /** @default 5_000 — a session asked whether it lives (a stream on it unanswered in time) has this long to answer a PING (upstream-h2.ts). */
  http2PingTimeoutMs?: number;
}

export interface Upstream {
  stream: Duplex;
  endpoint: EndpointTarget;
  /** An idle connection used before (HTTP keep-alive): the backend may have closed it meanwhile. */
  reused: boolean;
  /** Ends its share in least-connections' count; call once, when the connection or request is over. */
  release(): void;
}

/** An HTTP/1.1 connection for one request: kept alive between requests (upstream-http.ts). */
export interface HttpUpstream extends Upstream {
  connection: HttpConnection;
  /** On a new connection, what of the request's head did not go with a tunnel stream's header (all of it to a local endpoint): for the exchange to write. */
  unsent?: Readable;
}

/** An HTTP/2 session to one endpoint for one request (upstream-h2.ts). */
export interface Http2Upstream {
  session: ClientHttp2Session;
  endpoint: EndpointTarget;
  /** A session open before this request: the backend may have closed it meanwhile (a request it refused is no failure then). */
  reused: boolean;
  release(): void;
  /** A stream on the session got no answer in time: asks the session whether its connection lives (a PING). */
  suspect(): void;
}

/** No endpoint could be reached (or there is none): a gateway answers 503, or resets a TCP client. */
export class NoUpstreamError extends LeafmeshError {
  readonly reason: "no endpoints" | "no endpoint reachable";
  constructor(reason: "no endpoints" | "no endpoint reachable", backend: string, cause?: unknown) {
    super("PROXY_FAILED", `${backend}: ${reason}`, cause === undefined ? undefined : { cause });
    this.reason = reason;
  }
}

export class BackendPools {
  readonly #options: UpstreamOptions;
  readonly #balancers = new Map<string, ServicePortBalancer>();
  /** Idle HTTP/1.1 connections (sockets or tunnel streams) by endpoint. */
  readonly #idle: IdleConnections;
  /** Service ports whose backends speak HTTP/2 (upstream-h2.ts), and their sessions by endpoint. */
  #http2 = new Set<string>();
  readonly #sessions: Http2Sessions;
  /** Endpoints said (once each) not to speak the HTTP/2 their port claims. */
  readonly #notHttp2 = new Set<string>();
  /** Answers per endpoint (endpointTimedOut), forgotten with the endpoint. */
  readonly #answers = new Map<string, number>();
  /** Opens that failed after the client's first bytes went (lib/early-bytes.ts), logged once per burst. */
  readonly #inDoubt: BurstLog;

  constructor(options: UpstreamOptions) {
    this.#options = options;
    this.#inDoubt = new BurstLog({ log: options.log, clock: options.shared.clock, message: "a tunnel stream to a backend failed after the client's first bytes went with its header: they may have reached the backend, so no other endpoint is tried (the client is reset, or answered 502)" });
    this.#idle = new IdleConnections({ count: options.count, idleMs: options.idleConnectionMs });
    this.#sessions = new Http2Sessions(options.count, options.idleConnectionMs, options.http2PingTimeoutMs);
  }

  /** Balancers for exactly these Service ports, with the catalog's current endpoints and policies (kept state: picker positions). */
  refresh(catalog: CatalogReader, backends: Iterable<PlannedBackend>): void {
    const wanted = new Map<string, PlannedBackend>();
    for (const backend of backends) wanted.set(backend.key, backend);
    for (const key of this.#balancers.keys()) if (!wanted.has(key)) this.#balancers.delete(key);
    const http2 = new Set<string>();
    for (const [key, backend] of wanted) {
      const service = catalog.service(backend.namespace, backend.service);
      const port = service?.ports.find((candidate) => candidate.port === backend.port && candidate.protocol === "TCP");
      if (!service || !port) continue; // compile.ts refused the route already
      if (speaksHttp2(port)) http2.add(key);
      const plan = { endpoints: endpointsOf(port, slicesServedTo(service, catalog.slices(service.namespace, service.name), this.#options.node)), policy: choosePolicy(service, catalog.destinationRule(service.namespace, service.name)) };
      const existing = this.#balancers.get(key);
      if (existing) existing.update(plan);
      else this.#balancers.set(key, new ServicePortBalancer(plan, this.#options.shared));
    }
    this.#http2 = http2;
    // An endpoint that left every backend (its EndpointSlice changed) is forgotten as Envoy forgets a removed host:
    // its failures and ejection (one that comes back starts afresh; kept, they grew with every endpoint that ever
    // failed), and its HTTP/2 session, closed gracefully (streams open on it finish; new ones go elsewhere).
    const current = new Set<string>();
    for (const balancer of this.#balancers.values()) for (const endpoint of balancer.plan.endpoints) current.add(endpoint.key);
    this.#options.shared.outliers.retain(current);
    this.#sessions.retain(current);
    for (const key of this.#answers.keys()) if (!current.has(key)) this.#answers.delete(key);
  }

  /** Whether the backend's Service port speaks HTTP/2 (gRPC): its requests go as HTTP/2 (upstream-h2.ts). */
  speaksHttp2(key: string): boolean {
    return this.#http2.has(key);
  }

  /**
   * An HTTP/2 session to the endpoint the balancer picks, for one request: the endpoint's open session, or a new
   * one on a new connection (made as `connect` makes it). An endpoint whose session fails before it is ready (no
   * SETTINGS: a hung server, a port that does not speak HTTP/2; a GOAWAY or a close at once) is that endpoint's
   * failure, as a refused connect is: counted towards its ejection, and the next endpoint tried. Throws
   * NoUpstreamError when none can be had.
   */
  async connectHttp2(backend: PlannedBackend, hashKey: string, abort: { readonly signal: AbortSignal }): Promise<Http2Upstream> {
    const balancer = this.#balancer(backend);
    const exclude = new Set<string>();
    let lastError: unknown;
    for (let attempt = 0; attempt < (this.#options.maxAttempts ?? 4); attempt++) {
      const endpoint = balancer.choose(hashKey, exclude);
      if (!endpoint) break;
      // The endpoint's open session, or a new one on a new connection; then one wait for it, either way.
      let held: { ready: Promise<ClientHttp2Session>; release: () => void; reused: boolean };
      const open = this.#sessions.open(endpoint.key);
      if (open) held = { ready: open.ready, release: both(this.#hold(endpoint), this.#sessions.hold(open)), reused: true };
      else {
        const dialled = await this.#dialOne(backend, endpoint, abort, false);
        if ("error" in dialled) {
          lastError = dialled.error;
          exclude.add(endpoint.key);
          continue;
        }
        const made = this.#sessions.add(endpoint.key, dialled.upstream.stream, this.#options.http2SettingsTimeoutMs);
        // The session's failure is its endpoint's whoever still waits for it (this request may be gone).
        made.ready.catch((error: unknown) => (error instanceof Http2SessionAbandoned ? this.#sessionAbandoned(backend, endpoint, error) : this.#sessionFailed(backend, endpoint, error)));
        held = { ready: made.ready, release: both(dialled.upstream.release, this.#sessions.hold(made)), reused: false };
      }
      try {
        const session = await whileWanted(held.ready, abort.signal);
        return { session, endpoint, release: held.release, reused: held.reused, suspect: () => this.#sessions.check(session) };
      } catch (error) {
        // The session failed before it was ready (its maker counted it), or the request's deadline passed or its client left.
        held.release();
        if (abort.signal.aborted) throw error;
        lastError = error;
        exclude.add(endpoint.key);
      }
    }
    throw new NoUpstreamError("no endpoint reachable", backend.key, lastError);
  }

  /** A session the gateway gave up before it was ready: said as what happened, and not held against the endpoint. */
  #sessionAbandoned(backend: PlannedBackend, endpoint: EndpointTarget, error: Http2SessionAbandoned): void {
    this.#options.count(`http2 session abandoned: ${error.reason}`);
    const said = error.reason === "endpoint left the catalog" ? "the endpoint left the catalog while its HTTP/2 session was being made" : "the gateway stopped while an HTTP/2 session was being made";
    this.#options.log.info({ endpoint: endpoint.key, backend: backend.key }, `${said}: the session is abandoned (no failure of the endpoint's), a request waiting for it goes to the next endpoint`);
  }

  #sessionFailed(backend: PlannedBackend, endpoint: EndpointTarget, error: unknown): void {
    this.#options.count("http2 backend did not speak HTTP/2");
    if (!this.#notHttp2.has(endpoint.key)) {
      this.#notHttp2.add(endpoint.key);
      this.#options.log.warn({ endpoint: endpoint.key, backend: backend.key, err: describeError(error) }, "the backend's Service port says HTTP/2 (appProtocol or a grpc-/http2- port name), but the endpoint's h2c session failed before it was ready (no SETTINGS: a hung server or one that does not speak HTTP/2; or it closed at once); the next endpoint is tried");
    }
    this.endpointFailed(backend, endpoint, error);
  }

  /**
   * An HTTP exchange with the endpoint failed before its answer (a reset, a refused stream, the connection closed):
   * the endpoint's failure, as a refused connect is (Envoy's consecutive gateway failures), towards its ejection.
   */
  endpointFailed(backend: PlannedBackend, endpoint: EndpointTarget, error: unknown): void {
    if (!this.#options.shared.outliers.failure(endpoint.key)) return;
    this.#options.count("endpoint ejected");
    this.#options.log.warn({ endpoint: endpoint.key, backend: backend.key, err: describeError(error) }, "endpoint ejected after repeated failures (connects refused or timed out; requests reset, refused or not answered in time)");
  }

  /** The endpoint answered an HTTP request: its run of failures ends. */
  endpointAnswered(endpoint: EndpointTarget): void {
    this.#options.shared.outliers.success(endpoint.key);
    this.#answers.set(endpoint.key, (this.#answers.get(endpoint.key) ?? 0) + 1);
  }

  /** The answers the endpoint has given so far (to any request, any client): taken as a request is sent, for endpointTimedOut. */
  answerMark(endpoint: EndpointTarget): number {
    return this.#answers.get(endpoint.key) ?? 0;
  }

  /**
   * A request got no answer by its deadline (the route's or the attempt's): the endpoint's failure only when it
   * answered nothing else since `mark` (answerMark as the request was sent). A hung process answers nobody; an
   * endpoint that answered other requests meanwhile is alive, and the slowness is this request's (docs/gateway.md,
   * Outlier ejection): held against it, a client that sent a few slow requests at once got a healthy endpoint ejected.
   */
  endpointTimedOut(backend: PlannedBackend, endpoint: EndpointTarget, mark: number, why: string): void {
    if (this.answerMark(endpoint) !== mark) return this.#options.count("http timeout not held against an endpoint that answered others");
    this.endpointFailed(backend, endpoint, why);
  }

  /** Ready endpoints of a Service port, for status. */
  endpoints(key: string): number {
    return this.#balancers.get(key)?.plan.endpoints.length ?? 0;
  }

  /** The header a Service's DestinationRule hashes on (consistent hash), when it names one. */
  hashHeader(key: string): string | undefined {
    return this.#balancers.get(key)?.plan.policy.hashHeader;
  }

  /**
   * Keeps an HTTP connection whose exchange ended cleanly for the next request to the same endpoint (one
   * connection, or tunnel stream, per request costs a connect, and over the tunnel a stream open, each time).
   */
  park(connection: HttpConnection): void {
    this.#idle.park(connection);
  }

  /** Idle connections waiting, for tests. */
  get idleConnections(): number {
    return this.#idle.size;
  }

  /** Ends every idle connection (the gateway stops). */
  closeIdle(): void {
    this.#idle.closeAll();
    this.#sessions.closeAll();
  }

  /** HTTP/2 sessions open to endpoints, for tests. */
  get http2Sessions(): number {
    return this.#sessions.size;
  }

  /**
   * A connection to one endpoint of the backend: endpoints are tried in the balancer's order, a failed one left out
   * and reported to outlier ejection, until one answers or `maxAttempts` failed. `hashKey` is what a consistent hash
   * or session affinity keys on (the client's IP, or a header's value). `abort.signal` is read only when a connect is
   * made (an AbortController, or the HTTP forwarder's request that makes its signal only then). `first`: where the
   * client's first bytes are read from, to go with a remote endpoint's tunnel stream header (lib/early-bytes.ts): a
   * refusal puts them back for the next endpoint; an open that failed after they went throws EarlyBytesInDoubt (they
   * may have reached that endpoint: none other is tried).
   */
  async connect(backend: PlannedBackend, hashKey: string, abort: { readonly signal: AbortSignal }, first?: Readable): Promise<Upstream> {
    const balancer = this.#balancer(backend);
    return this.#connectFrom(balancer, backend, hashKey, abort, balancer.choose(hashKey, noneExcluded), true, first);
  }

  /**
   * An HTTP/1.1 connection for one request: an idle one to the endpoint the balancer picks when `reuse` (at once,
   * no promise), else a new one as `connect` makes it, the request's `head` as its first bytes (`unsent` holds what
   * did not go). Throws NoUpstreamError at once when there is no endpoint.
   */
  connectHttp(backend: PlannedBackend, hashKey: string, abort: { readonly signal: AbortSignal }, reuse: boolean, head: string): HttpUpstream | Promise<HttpUpstream> {
    const balancer = this.#balancer(backend);
    const endpoint = balancer.choose(hashKey, noneExcluded);
    const idle = reuse && endpoint ? this.#idle.take(endpoint.key) : undefined;
    if (idle) return { stream: idle.stream, connection: idle, endpoint: endpoint!, release: this.#hold(endpoint!), reused: true };
    // The endpoint's answer, not its connect, ends its run of failures: a server that accepts and then closes every
    // connection unanswered is as dead as one that refuses them.
    const unsent = firstBytes(head);
    return this.#connectFrom(balancer, backend, hashKey, abort, endpoint, false, unsent).then((upstream) => ({ ...upstream, connection: new HttpConnection(upstream.stream, upstream.endpoint.key, this.#idle), unsent }));
  }

  #balancer(backend: PlannedBackend): ServicePortBalancer {
    const balancer = this.#balancers.get(backend.key);
    if (!balancer?.hasEndpoints) throw new NoUpstreamError("no endpoints", backend.key);
    return balancer;
  }

  /** Counts a connection or request on the endpoint for least-connections; the function ends it, once. */
  #hold(endpoint: EndpointTarget): () => void {
    const { active } = this.#options.shared;
    active.set(endpoint.key, (active.get(endpoint.key) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (active.get(endpoint.key) ?? 1) - 1;
      if (left <= 0) active.delete(endpoint.key);
      else active.set(endpoint.key, left);
    };
  }

  /** Dials `first`, then the balancer's next endpoints, one failed endpoint left out each time. */
  async #connectFrom(balancer: ServicePortBalancer, backend: PlannedBackend, hashKey: string, abort: { readonly signal: AbortSignal }, first: EndpointTarget | undefined, connectIsSuccess: boolean, firstBytes?: Readable): Promise<Upstream> {
    const exclude = new Set<string>();
    let lastError: unknown;
    let endpoint = first;
    for (let attempt = 0; endpoint && attempt < (this.#options.maxAttempts ?? 4); attempt++) {
      const dialled = await this.#dialOne(backend, endpoint, abort, connectIsSuccess, firstBytes);
      if ("upstream" in dialled) return dialled.upstream;
      if (dialled.error instanceof EarlyBytesInDoubt) throw dialled.error;
      lastError = dialled.error;
      exclude.add(endpoint.key);
      endpoint = balancer.choose(hashKey, exclude);
    }
    throw new NoUpstreamError("no endpoint reachable", backend.key, lastError);
  }

  /**
   * A connection to one endpoint, or the error it failed with (counted, and reported to outlier ejection unless this
   * node or the serving node ran short of descriptors, memory or ports); throws when the client left.
   * `connectIsSuccess`: a connect ends the endpoint's run of failures (TCP, WebSocket); HTTP waits for an answer.
   * An open that failed after `firstBytes` went (no answer came) is EarlyBytesInDoubt: the caller tries no other endpoint.
   */
  async #dialOne(backend: PlannedBackend, endpoint: EndpointTarget, abort: { readonly signal: AbortSignal }, connectIsSuccess: boolean, firstBytes?: Readable): Promise<{ upstream: Upstream } | { error: unknown }> {
    const { shared, count, log } = this.#options;
    const release = this.#hold(endpoint);
    const early = firstBytes ? new EarlyBytes(firstBytes) : undefined;
    try {
      const stream = await this.#dial(endpoint, abort.signal, early);
      if (connectIsSuccess) shared.outliers.success(endpoint.key);
      return { upstream: { stream, endpoint, release, reused: false } };
    } catch (error) {
      release();
      if (abort.signal.aborted) throw error; // the client left: not the endpoint's fault
      count("backend connect failed");
      const shortage = localShortageCode(error);
      if (shortage) count(`backend connect failed: ${shortage}`);
      // This node's (or the serving node's) own shortage of descriptors, memory or ports is no mark against the endpoint.
      if (!shortage && shared.outliers.failure(endpoint.key)) {
        count("endpoint ejected");
        log.warn({ endpoint: endpoint.key, backend: backend.key, err: error }, "endpoint ejected after repeated connect failures");
      }
      if (early?.inDoubt) {
        count("backend connect failed: early bytes in doubt");
        this.#inDoubt.note("early bytes in doubt", { endpoint: endpoint.key, backend: backend.key, bytes: early.sentBytes, err: describeError(error) });
        return { error: new EarlyBytesInDoubt(early.sentBytes, error) };
      }
      return { error };
    }
  }

  #dial(target: EndpointTarget, signal: AbortSignal, early: EarlyBytes | undefined): Promise<Duplex> {
    const { dialer, node } = this.#options;
    if (signal.aborted) return Promise.reject(new LeafmeshError("PROXY_FAILED", `connect to ${target.key} abandoned: the client left`));
    if (dialer && target.nodeName && target.nodeName !== node) {
      const timeoutMs = this.#options.remoteConnectTimeoutMs ?? 10_000;
      return openStreamWithin(dialer, target.nodeName, { host: target.host, port: target.port, protocol: "TCP" }, { timeoutMs, signal, what: target.key, early });
    }
    const timeoutMs = this.#options.connectTimeoutMs ?? 3_000;
    return connectTcp({ host: target.host, port: target.port, timeoutMs, signal, what: target.key });
  }
}

/** Bytes to send first on a new connection, as a source EarlyBytes reads (never ended: a refusal puts them back). */
export function firstBytes(...chunks: (string | Buffer)[]): Readable {
  const source = new Readable({ read() {} });
  for (const chunk of chunks) if (chunk.length > 0) source.push(typeof chunk === "string" ? Buffer.from(chunk, "latin1") : chunk);
  return source;
}
