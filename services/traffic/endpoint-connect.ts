/**
 * One new TCP connection to a service port, as its balancer decides: choose an endpoint,
 * connect (the next one when a connect fails, up to `maxAttempts`), and keep the books the
 * balancer reads: the endpoint counted active from its connect on (least-connections sees a
 * connect storm), a failure that proves the endpoint bad counted towards its ejection, a
 * success clearing it. The cluster-IP listeners (tcp-proxy.ts) and the SOCKS proxy's Service
 * connections (service-ports.ts) both go through here, so that they cannot choose differently.
 *
 * ```ts
 * const outcome = await connectToEndpoint(options, balancer, "198.18.1.7", signal, "tcp");
 * if (outcome.kind === "connected") join(client, outcome.upstream, () => releaseEndpoint(options.shared, outcome.target));
 * ```
 */
import type { Duplex, Readable } from "node:stream";
import { EarlyBytes } from "../../lib/early-bytes.ts";
import { connectTcp } from "../../lib/connect-tcp.ts";
import type { BurstLog } from "../../lib/burst-log.ts";
import type { Logger } from "../../lib/log.ts";
import type { BalancerShared, ServicePortBalancer } from "../../balance/balancer.ts";
import type { EndpointTarget } from "../../balance/policy.ts";
import { endpointAtFault, localShortageCode, localTrafficPolicyCode, openStreamWithin, type StreamDialer } from "../../bus/streams.ts";
import { describeError } from "../../lib/errors.ts";
import type { Counters } from "./counters.ts";
import type { ServicePortPlan } from "./plan.ts";

/** The counter and log label of an endpoint its node refused by internalTrafficPolicy Local (local-only.ts). */
export const localOnlyRefusal = "the endpoint's node serves it to its own clients only (internalTrafficPolicy Local)";

export interface EndpointConnectOptions {
  shared: BalancerShared;
  log: Logger;
  counters: Counters;
  /** Refusals logged once per burst. */
  refusals: BurstLog;
  dialer?: StreamDialer;
  /** See TcpProxyOptions. */
  connectTimeoutMs: number;
  remoteConnectTimeoutMs: number;
  maxAttempts: number;
}

export type EndpointConnection =
  | { kind: "connected"; upstream: Duplex; target: EndpointTarget }
  /** The client gave it up (its signal): nothing is held against any endpoint. */
  | { kind: "client left" }
  /** A tunnel stream failed after the client's first bytes went with its header: they may have reached the endpoint, so no other is tried (reset the client). */
  | { kind: "early bytes in doubt" }
  /** No endpoint left to try, or every attempt failed. */
  | { kind: "unreachable"; tried: string[] };

/**
 * Connects as the balancer chooses; counters labelled `${via} …` ("tcp" for the cluster IP, "socks" for the SOCKS
 * proxy). On "connected" the endpoint stays counted active until the caller's `releaseEndpoint`. `client`: where the
 * client's first bytes are read from, to go with a tunnel stream's header (lib/early-bytes.ts); a refusal puts them
 * back for the next endpoint.
 */
export async function connectToEndpoint(options: EndpointConnectOptions, balancer: ServicePortBalancer<ServicePortPlan>, clientIp: string, signal: AbortSignal, via: string, client?: Readable): Promise<EndpointConnection> {
  const { counters, shared } = options;
  const exclude = new Set<string>();
  for (let attempt = 0; attempt < options.maxAttempts; attempt++) {
    const target = balancer.choose(clientIp, exclude);
    if (!target) break;
    shared.active.set(target.key, (shared.active.get(target.key) ?? 0) + 1);
    let upstream: Duplex;
    const early = client ? new EarlyBytes(client) : undefined;
    try {
      upstream = await connect(options, target, signal, early);
    } catch (error) {
      releaseEndpoint(shared, target);
      if (signal.aborted) return { kind: "client left" };
      if (early?.inDoubt) {
        counters.count(`${via} connect failed: early bytes in doubt`);
        options.refusals.note(`${via} connect failed after the client's first bytes went (no other endpoint tried)`, { client: clientIp, service: balancer.plan.key, endpoint: target.key });
        return { kind: "early bytes in doubt" };
      }
      exclude.add(target.key);
      counters.count(`${via} connect failed`);
      if ((error as { targetCode?: unknown }).targetCode === localTrafficPolicyCode) {
        // The endpoint's node has the Service as internalTrafficPolicy Local where this node's catalog does not (yet): said, then as any refusal.
        counters.count(`${via} connect failed: ${localOnlyRefusal}`);
        options.refusals.note(`${via} connect failed: ${localOnlyRefusal}`, { client: clientIp, service: balancer.plan.key, endpoint: target.key, err: describeError(error) });
      }
      const remote = options.dialer !== undefined && target.nodeName !== undefined && target.nodeName !== shared.node;
      if (!endpointAtFault(error, remote)) {
        // The tunnel could not carry it (no path, a slow open, the peer's limit), or a node ran out of descriptors: the next endpoint, and no mark against this one.
        const shortage = localShortageCode(error);
        if (shortage) {
          counters.count(`${via} connect failed: ${shortage}`);
          options.refusals.note(`${via} connect failed: ${shortage} (a node out of file descriptors, memory or local ports; no endpoint is held at fault)`, { client: clientIp, service: balancer.plan.key, endpoint: target.key });
        } else counters.count(`${via} connect failed: tunnel`);
        continue;
      }
      if (shared.outliers.failure(target.key)) {
        counters.count("endpoint ejected");
        options.log.warn({ endpoint: target.key, service: balancer.plan.key, err: error }, "endpoint ejected after repeated connect failures");
      }
      continue;
    }
    shared.outliers.success(target.key);
    return { kind: "connected", upstream, target };
  }
  return { kind: "unreachable", tried: [...exclude] };
}

/** The end of a connection made by connectToEndpoint: its endpoint no longer counted active. */
export function releaseEndpoint(shared: BalancerShared, target: EndpointTarget): void {
  const next = (shared.active.get(target.key) ?? 1) - 1;
  if (next <= 0) shared.active.delete(target.key);
  else shared.active.set(target.key, next);
}

function connect(options: EndpointConnectOptions, target: EndpointTarget, signal: AbortSignal, early: EarlyBytes | undefined): Promise<Duplex> {
  const { dialer, shared } = options;
  if (dialer && target.nodeName && target.nodeName !== shared.node) {
    return openStreamWithin(dialer, target.nodeName, { host: target.host, port: target.port, protocol: "TCP" }, { timeoutMs: options.remoteConnectTimeoutMs, signal, what: target.key, early });
  }
  return connectTcp({ host: target.host, port: target.port, timeoutMs: options.connectTimeoutMs, signal, what: target.key });
}
