/**
 * Flags every server command (hub, site, agent) shares, declared once. The
 * metrics port differs per role so that a hub and an agent on one machine do
 * not collide by default.
 */
import { option } from "./options.ts";

export const logLevels = ["trace", "debug", "info", "warn", "error"] as const;

export function serverOptions(defaults: { metricsListen: string }) {
  return {
    monitorListen: option.hostPort({ default: "127.0.0.1:8222", description: "the nats-server's HTTP monitoring address (health, links)" }),
    metricsListen: option.hostPort({ default: defaults.metricsListen, off: true, description: "address of /metrics (Prometheus), /healthz and /readyz; 'off' to disable" }),
    logLevel: option.choice(logLevels, { default: "info", value: "LEVEL", description: "log level: trace, debug, info, warn, error" }),
  };
}

/** Flags of the commands that attach to upstreams (site, agent). */
export const upstreamOrderOption = {
  upstreamOrder: option.choice(["rtt", "given"] as const, { default: "rtt", description: "which upstream to attach to first: the nearest by measured round-trip time, or the first given" }),
};
