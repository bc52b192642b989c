/**
 * The traffic actor's Prometheus metrics, read from its stats when scraped (no
 * work on the data path): listeners, open connections and UDP flows, bytes held
 * in the process, ejected endpoints, and every counted event by reason.
 *
 * ```ts
 * registerTrafficMetrics(registry, traffic);   // leafmesh_traffic_events{reason="tcp refused: no endpoints"} 3
 * ```
 */
import { Gauge, type Registry } from "../../lib/prom.ts";
import type { TrafficActor } from "./actor.ts";

export function registerTrafficMetrics(registry: Registry, traffic: Pick<TrafficActor, "stats">, prefix = "leafmesh_traffic_"): void {
  const gauge = (name: string, help: string, read: (stats: ReturnType<TrafficActor["stats"]>) => number) =>
    new Gauge({ name: `${prefix}${name}`, help, registers: [registry], collect() { this.set(read(traffic.stats())); } });
  gauge("listeners", "Service port listeners (TCP and UDP)", (stats) => stats.listeners);
  gauge("connections", "Open TCP connections and UDP flows", (stats) => stats.connections);
  gauge("buffered_bytes", "Bytes held in the process, not yet taken by the kernel", (stats) => stats.bufferedBytes);
  gauge("ejected_endpoints", "Endpoints ejected after repeated connect failures", (stats) => stats.ejected.length);
  new Gauge({
    name: `${prefix}events`,
    help: "Connections, flows, refusals, drops and ejections since start, by reason",
    labelNames: ["reason"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, value] of Object.entries(traffic.stats().counters)) this.set({ reason }, value);
    },
  });
}
