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
import type { Duplex } from "node:stream";
import { ServicePortBalancer, type BalancerShared } from "../../balance/balancer.ts";
import { choosePolicy, endpointsOf } from "../../balance/endpoints.ts";
import type { EndpointTarget } from "../../balance/policy.ts";
import type { CatalogReader } from "../../bus/catalog.ts";
import { openStreamWithin, type StreamDialer } from "../../bus/streams.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import type { PlannedBackend } from "./plan.ts";

/** Where an idle connection keeps the function that takes it out of the pool. */
const taken = Symbol("leave the idle pool");

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
}

export interface Upstream {
  stream: Duplex;
  endpoint: EndpointTarget;
  /** An idle connection used before (HTTP keep-alive): the backend may have closed it meanwhile. */
  reused: boolean;
  /** Ends its share in least-connections' count; call once, when the connection or request is over. */
  release(): void;
}

/** No endpoint could be reached (or there is none): a gateway answers 503, or resets a TCP client. */
export class NoUpstreamError extends LeafmeshError {
  readonly reason: "no endpoints" | "no endpoint reachable";
  constructor(reason: "no endpoints" | "no endpoint reachable", backend: string, cause?: unknown) {
    super("PROXY_FAILED", `${backend}: ${reason}`, cause === undefined ? undefined : { cause });
    this.reason = reason;
  }
}

/** Idle HTTP connections kept per endpoint: enough for a burst of concurrent requests, few enough to hold little. */
const maxIdlePerEndpoint = 32;
/** @default 15_000 — an idle connection is closed by the gateway first, well before backends' usual 60 s keep-alive. */
const idleConnectionMs = 15_000;

export class BackendPools {
  readonly #options: UpstreamOptions;
  readonly #balancers = new Map<string, ServicePortBalancer>();
  /** Idle HTTP/1.1 connections (sockets or tunnel streams) by endpoint, most recent last. */
  readonly #idle = new Map<string, Set<Duplex>>();

  constructor(options: UpstreamOptions) {
    this.#options = options;
  }

  /** Balancers for exactly these Service ports, with the catalog's current endpoints and policies (kept state: picker positions). */
  refresh(catalog: CatalogReader, backends: Iterable<PlannedBackend>): void {
    const wanted = new Map<string, PlannedBackend>();
    for (const backend of backends) wanted.set(backend.key, backend);
    for (const key of this.#balancers.keys()) if (!wanted.has(key)) this.#balancers.delete(key);
    for (const [key, backend] of wanted) {
      const service = catalog.service(backend.namespace, backend.service);
      const port = service?.ports.find((candidate) => candidate.port === backend.port && candidate.protocol === "TCP");
      if (!service || !port) continue; // compile.ts refused the route already
      const plan = { endpoints: endpointsOf(port, catalog.slices(service.namespace, service.name)), policy: choosePolicy(service, catalog.destinationRule(service.namespace, service.name)) };
      const existing = this.#balancers.get(key);
      if (existing) existing.update(plan);
      else this.#balancers.set(key, new ServicePortBalancer(plan, this.#options.shared));
    }
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
   * A connection that closes or errors while idle leaves the pool; one idle too long is ended.
   */
  park(endpoint: string, stream: Duplex): void {
    if (stream.destroyed || !stream.writable || stream.readableEnded) return void stream.destroy();
    let idle = this.#idle.get(endpoint);
    if (!idle) this.#idle.set(endpoint, (idle = new Set()));
    if (idle.size >= maxIdlePerEndpoint) return void stream.end();
    const leave = () => {
      clearTimeout(timer);
      stream.off("close", leave);
      stream.off("end", onEnd);
      stream.off("error", leave);
      stream.off("data", onData);
      idle.delete(stream);
      if (idle.size === 0) this.#idle.delete(endpoint);
    };
    const onEnd = () => {
      leave();
      stream.destroy();
    };
    // Bytes from an idle backend answer nothing: the connection is out of step and is dropped.
    const onData = () => {
      this.#options.count("idle backend connection sent data");
      onEnd();
    };
    const timer = setTimeout(() => {
      leave();
      stream.end();
    }, idleConnectionMs);
    timer.unref();
    stream.on("close", leave);
    stream.on("end", onEnd);
    stream.on("error", leave);
    stream.on("data", onData);
    (stream as Duplex & { [taken]?: () => void })[taken] = leave;
    idle.add(stream);
  }

  #takeIdle(endpoint: string): Duplex | undefined {
    const idle = this.#idle.get(endpoint);
    if (!idle) return undefined;
    for (const stream of idle) {
      (stream as Duplex & { [taken]?: () => void })[taken]?.();
      if (!stream.destroyed && stream.writable) return stream;
    }
    return undefined;
  }

  /** Ends every idle connection (the gateway stops). */
  closeIdle(): void {
    for (const idle of this.#idle.values()) for (const stream of idle) stream.end();
    this.#idle.clear();
  }

  /**
   * A connection to one endpoint of the backend: endpoints are tried in the balancer's order, a failed one left out
   * and reported to outlier ejection, until one answers or `maxAttempts` failed. `hashKey` is what a consistent hash
   * or session affinity keys on (the client's IP, or a header's value). `abort.signal` is read only when a connect is
   * made (an AbortController, or the HTTP forwarder's request that makes its signal only then).
   */
  async connect(backend: PlannedBackend, hashKey: string, abort: { readonly signal: AbortSignal }, options: { reuse?: boolean } = {}): Promise<Upstream> {
    const { shared, count, log } = this.#options;
    const balancer = this.#balancers.get(backend.key);
    if (!balancer?.hasEndpoints) throw new NoUpstreamError("no endpoints", backend.key);
    const exclude = new Set<string>();
    let lastError: unknown;
    for (let attempt = 0; attempt < (this.#options.maxAttempts ?? 4); attempt++) {
      const endpoint = balancer.choose(hashKey, exclude);
      if (!endpoint) break;
      shared.active.set(endpoint.key, (shared.active.get(endpoint.key) ?? 0) + 1);
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        const left = (shared.active.get(endpoint.key) ?? 1) - 1;
        if (left <= 0) shared.active.delete(endpoint.key);
        else shared.active.set(endpoint.key, left);
      };
      const idle = options.reuse ? this.#takeIdle(endpoint.key) : undefined;
      if (idle) return { stream: idle, endpoint, release, reused: true };
      try {
        const stream = await this.#dial(endpoint, abort.signal);
        shared.outliers.success(endpoint.key);
        return { stream, endpoint, release, reused: false };
      } catch (error) {
        release();
        if (abort.signal.aborted) throw error; // the client left: not the endpoint's fault
        lastError = error;
        exclude.add(endpoint.key);
        count("backend connect failed");
        if (shared.outliers.failure(endpoint.key)) {
          count("endpoint ejected");
          log.warn({ endpoint: endpoint.key, backend: backend.key, err: error }, "endpoint ejected after repeated connect failures");
        }
      }
    }
    throw new NoUpstreamError("no endpoint reachable", backend.key, lastError);
  }

  #dial(target: EndpointTarget, signal: AbortSignal): Promise<Duplex> {
    const { dialer, node } = this.#options;
    if (signal.aborted) return Promise.reject(new LeafmeshError("PROXY_FAILED", `connect to ${target.key} abandoned: the client left`));
    if (dialer && target.nodeName && target.nodeName !== node) {
      const timeoutMs = this.#options.remoteConnectTimeoutMs ?? 10_000;
      return openStreamWithin(dialer, target.nodeName, { host: target.host, port: target.port, protocol: "TCP" }, { timeoutMs, signal, what: target.key });
    }
    const timeoutMs = this.#options.connectTimeoutMs ?? 3_000;
    return connectTcp({ host: target.host, port: target.port, timeoutMs, signal, what: target.key });
  }
}
