/**
 * The SOCKS proxy's Prometheus metrics, read from its stats when scraped: clients
 * connected, waiting for a place, dialling and joined, and every counted event by
 * reason (refusals at the door among them: `refused: client over its limit`, ...).
 *
 * ```ts
 * registerSocksMetrics(registry, socks);   // leafmesh_socks_events{reason="refused: queue full"} 3
 * ```
 */
import { Gauge, type Registry } from "../../lib/prom.ts";
import type { SocksActor } from "./index.ts";

const gauges = ["clients", "waiting", "dialing", "joined"] as const;

export function registerSocksMetrics(registry: Registry, socks: Pick<SocksActor, "stats">, prefix = "leafmesh_socks_"): void {
  for (const name of gauges) {
    new Gauge({ name: `${prefix}${name}`, help: `SOCKS clients ${name === "clients" ? "connected" : name}`, registers: [registry], collect() { this.set(socks.stats()[name]); } });
  }
  new Gauge({
    name: `${prefix}events`,
    help: "SOCKS connections, refusals and resets since start, by reason",
    labelNames: ["reason"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, value] of Object.entries(socks.stats())) if (!(gauges as readonly string[]).includes(reason)) this.set({ reason }, value);
    },
  });
}
