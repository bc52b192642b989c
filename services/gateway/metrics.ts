/**
 * The gateway's Prometheus metrics, read from its status when scraped (no work
 * on the data path): listeners by state, requests and connections per route by
 * status class, endpoints ejected now, and every counted event (refusals by
 * reason included).
 *
 * ```ts
 * registerGatewayMetrics(registry, gateway); // leafmesh_gateway_route_requests{route="HTTPRoute shop/web",class="2xx"} 1200
 * ```
 */
import { Gauge, type Registry } from "../../lib/prom.ts";
import type { GatewayActor } from "./actor.ts";

export function registerGatewayMetrics(registry: Registry, gateway: Pick<GatewayActor, "status">, prefix = "leafmesh_gateway_"): void {
  new Gauge({
    name: `${prefix}listeners`,
    help: "Gateway listeners by state (listening, failed)",
    labelNames: ["state"],
    registers: [registry],
    collect() {
      this.reset();
      const byState = new Map<string, number>();
      for (const listener of gateway.status().listeners) byState.set(listener.state, (byState.get(listener.state) ?? 0) + 1);
      for (const [state, value] of byState) this.set({ state }, value);
    },
  });
  new Gauge({
    name: `${prefix}route_requests`,
    help: "Requests (HTTP) and connections (TCP, TLS) per route since start, by status class (a TCP connection that ended cleanly is 2xx)",
    labelNames: ["route", "class"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [route, classes] of Object.entries(gateway.status().routeStats)) for (const [statusClass, value] of Object.entries(classes)) this.set({ route, class: statusClass }, value);
    },
  });
  new Gauge({
    name: `${prefix}ejected_endpoints`,
    help: "Backend endpoints left out now by outlier ejection (repeated failed connects, resets, refusals or timeouts)",
    registers: [registry],
    collect() {
      this.set(gateway.status().ejected.length);
    },
  });
  new Gauge({
    name: `${prefix}events`,
    help: "Connections, requests, refusals (routes refused by reason included), failures and ejections since start, by reason",
    labelNames: ["reason"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, value] of Object.entries(gateway.status().counters)) this.set({ reason }, value);
    },
  });
}
