/**
 * The proxier actor's Prometheus metrics, read from its stats when scraped: rule
 * syncs and their failures, rules installed, the last sync's duration, clashes.
 *
 * ```ts
 * registerProxierMetrics(registry, proxier);   // leafmesh_proxier_rules 42
 * ```
 */
import { Gauge, type Registry } from "../../lib/prom.ts";
import type { ProxierActor } from "./actor.ts";

export function registerProxierMetrics(registry: Registry, proxier: Pick<ProxierActor, "stats">, prefix = "leafmesh_proxier_"): void {
  const gauge = (name: string, help: string, read: (stats: ReturnType<ProxierActor["stats"]>) => number) =>
    new Gauge({ name: `${prefix}${name}`, help, registers: [registry], collect() { this.set(read(proxier.stats())); } });
  gauge("rules", "Interception rules installed (one per cluster IP, port and protocol)", (stats) => stats.rules);
  gauge("syncs", "Rule syncs applied since start", (stats) => stats.syncs);
  gauge("sync_failures", "Rule syncs that failed (retried)", (stats) => stats.failures);
  gauge("last_sync_seconds", "Duration of the last applied sync", (stats) => (stats.lastSyncMs ?? 0) / 1000);
  gauge("clashes", "Service ports left out because another one holds their cluster IP and port", (stats) => stats.clashes.length);
}
