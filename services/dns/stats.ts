/**
 * The DNS actor's counters: queries by transport and by how they were answered,
 * rcodes, drops by reason (STYLE 16), and the latency of the last answers as
 * p50/p99 (every TCP answer, one UDP answer in 16: transport.ts). Counting costs a few integer increments on the hot path; percentiles
 * and Prometheus values are computed only when someone reads them.
 *
 * ```ts
 * const stats = new DnsStats();
 * stats.snapshot();            // { queries: 10, udp: 9, tcp: 1, cluster: 8, ..., latencyMs: { p50, p99 } }
 * registerDnsMetrics(registry, stats, () => forwarder.counters);
 * ```
 */
import { Counter, Gauge, type Registry } from "../../lib/prom.ts";
import type { ForwarderCounters } from "./forwarder.ts";

export type AnswerKind = "cluster" | "forwarded" | "cache" | "stale" | "servfail" | "error";

/** Latencies kept for percentiles: the last 8,192 timed answers, enough for a stable p99 at any rate. */
const latencyWindow = 8192;

export class DnsStats {
  queries = 0;
  udp = 0;
  tcp = 0;
  truncated = 0;
  /**
   * Lookups in the server's answer cache (encoded cluster answers and forward markers): a miss
   * encodes. Keyed case-insensitively: a resolver with DNS 0x20 asks each name in a new case.
   */
  readonly answerCache = { hits: 0, misses: 0 };
  readonly answers: Record<AnswerKind, number> = { cluster: 0, forwarded: 0, cache: 0, stale: 0, servfail: 0, error: 0 };
  /** Responses by the header's 4-bit rcode: an array slot per code, where a Map's get and set cost a hash each per answer. */
  readonly #rcodeCounts = new Array<number>(16).fill(0);
  readonly drops = new Map<string, number>();
  readonly #latencies = new Float64Array(latencyWindow);
  #latencyCount = 0;

  countRcode(rcode: number): void {
    this.#rcodeCounts[rcode & 0xf]++;
  }

  /** The rcodes answered so far and how often (those answered at least once). */
  get rcodes(): Map<number, number> {
    const counts = new Map<number, number>();
    this.#rcodeCounts.forEach((count, code) => count > 0 && counts.set(code, count));
    return counts;
  }

  /** Returns true the first time a reason is seen, so the caller logs it once. */
  drop(reason: string): boolean {
    const count = this.drops.get(reason) ?? 0;
    this.drops.set(reason, count + 1);
    return count === 0;
  }

  latency(ms: number): void {
    this.#latencies[this.#latencyCount++ % latencyWindow] = ms;
  }

  latencyPercentiles(): { p50: number; p99: number; samples: number } {
    const samples = Math.min(this.#latencyCount, latencyWindow);
    if (samples === 0) return { p50: 0, p99: 0, samples: 0 };
    const sorted = this.#latencies.slice(0, samples).sort();
    const at = (p: number) => sorted[Math.min(samples - 1, Math.max(0, Math.ceil(p * samples) - 1))];
    return { p50: round(at(0.5)), p99: round(at(0.99)), samples };
  }

  snapshot(): Record<string, unknown> {
    return {
      queries: this.queries,
      udp: this.udp,
      tcp: this.tcp,
      truncated: this.truncated,
      answerCache: { ...this.answerCache },
      answers: { ...this.answers },
      rcodes: Object.fromEntries([...this.rcodes].map(([code, count]) => [rcodeName(code), count])),
      drops: Object.fromEntries(this.drops),
      latencyMs: this.latencyPercentiles(),
    };
  }
}

const round = (value: number) => Math.round(value * 1000) / 1000;

const rcodeNames = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];
export function rcodeName(code: number): string {
  return rcodeNames[code] ?? `RCODE${code}`;
}

/**
 * Registers the DNS metrics on a prom-client registry. Values are read from the
 * counters at scrape time (`collect`), so the hot path never touches prom-client.
 */
export function registerDnsMetrics(registry: Registry, stats: DnsStats, forwarder: () => ForwarderCounters | undefined, prefix = "leafmesh_dns_"): void {
  new Counter({
    name: `${prefix}queries_total`,
    help: "DNS queries received, by transport",
    labelNames: ["transport"],
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ transport: "udp" }, stats.udp);
      this.inc({ transport: "tcp" }, stats.tcp);
    },
  });
  new Counter({
    name: `${prefix}answers_total`,
    help: "DNS answers, by source (cluster zone, forwarded, cache, stale, servfail, error)",
    labelNames: ["source"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [source, count] of Object.entries(stats.answers)) this.inc({ source }, count);
    },
  });
  new Counter({
    name: `${prefix}responses_total`,
    help: "DNS responses, by rcode",
    labelNames: ["rcode"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [code, count] of stats.rcodes) this.inc({ rcode: rcodeName(code) }, count);
    },
  });
  new Counter({
    name: `${prefix}drops_total`,
    help: "DNS packets dropped or refused, by reason",
    labelNames: ["reason"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, count] of stats.drops) this.inc({ reason }, count);
    },
  });
  new Counter({
    name: `${prefix}truncated_total`,
    help: "UDP answers sent truncated (TC) because they did not fit the client's size",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(stats.truncated);
    },
  });
  new Counter({
    name: `${prefix}answer_cache_lookups_total`,
    help: "Questions looked up in the answer cache (encoded cluster answers), by result (hit, miss: encoded)",
    labelNames: ["result"],
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ result: "hit" }, stats.answerCache.hits);
      this.inc({ result: "miss" }, stats.answerCache.misses);
    },
  });
  new Gauge({
    name: `${prefix}latency_seconds`,
    help: "DNS answer latency over the last 8,192 answers",
    labelNames: ["quantile"],
    registers: [registry],
    collect() {
      const latency = stats.latencyPercentiles();
      this.set({ quantile: "0.5" }, latency.p50 / 1000);
      this.set({ quantile: "0.99" }, latency.p99 / 1000);
    },
  });
  new Counter({
    name: `${prefix}upstream_queries_total`,
    help: "Questions sent to upstream servers",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(forwarder()?.upstreamQueries ?? 0);
    },
  });
  new Counter({
    name: `${prefix}upstream_failures_total`,
    help: "Upstream exchanges that failed, by reason",
    labelNames: ["reason"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, count] of Object.entries(forwarder()?.upstreamFailures ?? {})) this.inc({ reason }, count);
    },
  });
  new Gauge({
    name: `${prefix}cache_entries`,
    help: "Upstream answers held in the cache",
    registers: [registry],
    collect() {
      this.set(forwarder()?.cacheEntries ?? 0);
    },
  });
}
