/**
 * Flags every server command (hub, site, agent) shares, declared once. The
 * metrics port differs per role so that a hub and an agent on one machine do
 * not collide by default.
 */
import { LeafmeshError } from "../lib/errors.ts";
import type { OptionSpec } from "./command.ts";

export function serverOptions(defaults: { metricsListen: string }) {
  return {
    monitorListen: { type: "string", default: "127.0.0.1:8222", value: "H:P", description: "the nats-server's HTTP monitoring address (health, links)" },
    metricsListen: { type: "string", default: defaults.metricsListen, value: "H:P", description: "address of /metrics (Prometheus), /healthz and /readyz; 'off' to disable" },
    logLevel: { type: "string", default: "info", value: "LEVEL", description: "log level: trace, debug, info, warn, error" },
  } as const satisfies Record<string, OptionSpec>;
}

/** Flags of the commands that attach to upstreams (site, agent). */
export const upstreamOrderOption = {
  upstreamOrder: { type: "string", default: "rtt", value: "rtt|given", description: "which upstream to attach to first: the nearest by measured round-trip time, or the first given" },
} as const satisfies Record<string, OptionSpec>;

/** --upstream-order: "rtt" (nearest first) or "given". */
export function parseUpstreamOrder(text: string): "rtt" | "given" {
  if (text !== "rtt" && text !== "given") throw new LeafmeshError("CONFIG_INVALID", `--upstream-order: '${text}' is not rtt or given`);
  return text;
}
