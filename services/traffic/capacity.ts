/**
 * The traffic actor's capacity: the admission every proxied TCP connection of the
 * agent passes (lib/admission.ts), with its defaults and why, and the log that
 * says its refusals once per burst. One per actor, shared by all its listeners:
 * the limits are the agent's, whatever service a connection is for.
 *
 * Per-connection cost, measured with test/capacity.test.ts and bench/capacity
 * (2,000 concurrent downloads through edge-a's proxy to an endpoint on edge-b,
 * a direct path with a TLS session per stream, loopback): edge-a's RSS peaked
 * 191 → 308 MiB with 200 streams carried at once (and 1,800 waiting), 184 → 381
 * MiB with ~1,024 carried. So about 100 KiB per carried stream (the client
 * socket, the stream's TLS session, the buffers of both), on top of ~100 MiB the
 * runtime takes at full throughput whatever the count. At the default
 * `maxConnections` of 2,048 that is some 300 MiB above an idle agent, and no more
 * however many clients come: the rest wait (a paused accepted socket, a few KiB)
 * or are refused. Before admission, 2,000 streams opened at once grew an agent
 * 169 → 727 MiB (issue 15 item 12).
 *
 * ```ts
 * const capacity = createTrafficCapacity({ log, clock, limits: { maxConnections: 512 } });
 * new TcpServicePortListener({ ..., admission: capacity.admission, refusals: capacity.refusals });
 * ```
 */
import { Admission, type AdmissionLimits } from "../../lib/admission.ts";
import { BurstLog } from "../../lib/burst-log.ts";
import type { Clock } from "../../lib/clock.ts";
import type { Logger } from "../../lib/log.ts";

/** The defaults of `AdmissionLimits` for the cluster-IP proxy (also the agent's flags' defaults: cli/agent.ts). */
export const defaultTrafficLimits: AdmissionLimits = {
  /** @default 2_048 — Envoy's circuit-breaker default is 1,024 per cluster; an edge gateway node carries more, within ~300 MiB (see above). */
  maxConnections: 2_048,
  /** @default 64 — a tunnel stream open is a TLS handshake (~1–3 ms of CPU); 64 at once keep the event loop's timers on time on 2 cores. */
  maxOpening: 64,
  /** @default 1_024 — half the places: one busy client (a pod, a scan) leaves room for the others. */
  maxPerClient: 1_024,
  /** @default 4_096 — a waiting connection costs a paused socket; beyond this many, refusing at once is kinder than a long wait. */
  maxWaiting: 4_096,
  /** @default 30_000 — longer than a client's usual connect timeout would be pointless; shorter would refuse a burst that drains in seconds. */
  waitTimeoutMs: 30_000,
};

/**
 * How long a cluster-IP UDP flow (its socket to the endpoint, or its tunnel stream) is kept without a datagram either
 * way: the kernel's own UDP conntrack timeout (nf_conntrack_udp_timeout), which a UDP client of a cluster IP already
 * lives with (also the default of the agent's --proxy-udp-idle-timeout).
 */
export const defaultUdpIdleTimeoutMs = 30_000;

export type TrafficLimits = AdmissionLimits;

export interface TrafficCapacity {
  admission: Admission;
  refusals: BurstLog;
  close(): void;
}

export function createTrafficCapacity(options: { log: Logger; clock: Clock; limits?: Partial<AdmissionLimits> }): TrafficCapacity {
  const limits = { ...defaultTrafficLimits, ...options.limits };
  const admission = new Admission({ clock: options.clock, limits });
  const refusals = new BurstLog({ log: options.log, clock: options.clock, message: "proxy connection refused at the door" });
  return {
    admission,
    refusals,
    close() {
      admission.close();
      refusals.close();
    },
  };
}
