/**
 * prom-client's Registry, Counter and Gauge and its default process metrics, loaded without
 * prom-client's index. The index also loads its cluster aggregator, Pushgateway client, Summary
 * (tdigest, bintrees) and, for the exemplars of its CPU counters, all of @opentelemetry/api
 * (51 modules): measured in a bare Node 24, the index and its default metrics took 85–112 ms
 * and 20 MiB of RSS, these parts 21–38 ms and 6 MiB. Every hub, site and agent serves metrics.
 * The same classes (one module instance: prom-client's own files), so the index's objects and
 * these mix where a test imports it.
 *
 * ```ts
 * const registry = new Registry();
 * collectProcessMetrics(registry, "leafmesh_process_");   // what collectDefaultMetrics registers
 * new Gauge({ name: "leafmesh_x", help: "…", registers: [registry] });
 * ```
 */
import { createRequire } from "node:module";
import type * as PromClient from "prom-client";

const require = createRequire(import.meta.url);

export const Registry = require("prom-client/lib/registry.js") as typeof PromClient.Registry;
export type Registry = PromClient.Registry;
export const Counter = require("prom-client/lib/counter.js") as typeof PromClient.Counter;
export type Counter<T extends string = string> = PromClient.Counter<T>;
export const Gauge = require("prom-client/lib/gauge.js") as typeof PromClient.Gauge;
export type Gauge<T extends string = string> = PromClient.Gauge<T>;

/** prom-client's default metrics but its CPU counters, in its order (lib/defaultMetrics.js of 15.1). */
const defaultMetrics = [
  "processStartTime", "osMemoryHeap", "processOpenFileDescriptors", "processMaxFileDescriptors", "eventLoopLag",
  "processResources", "processHandles", "processRequests", "heapSizeAndUsed", "heapSpacesSizeAndUsed", "version", "gc",
];

/** What `collectDefaultMetrics({ register: registry, prefix })` registers, under the same names. */
export function collectProcessMetrics(registry: Registry, prefix: string): void {
  const config = { prefix, eventLoopMonitoringPrecision: 10 };
  const registers = [registry];
  // The CPU counters, as processCpuTotal.js makes them (without exemplars): one collect sets all three.
  let last = process.cpuUsage();
  const user = new Counter({
    name: `${prefix}process_cpu_user_seconds_total`,
    help: "Total user CPU time spent in seconds.",
    registers,
    collect() {
      const now = process.cpuUsage();
      const userSeconds = (now.user - last.user) / 1e6;
      const systemSeconds = (now.system - last.system) / 1e6;
      last = now;
      user.inc(userSeconds);
      system.inc(systemSeconds);
      total.inc(userSeconds + systemSeconds);
    },
  });
  const system = new Counter({ name: `${prefix}process_cpu_system_seconds_total`, help: "Total system CPU time spent in seconds.", registers });
  const total = new Counter({ name: `${prefix}process_cpu_seconds_total`, help: "Total user and system CPU time spent in seconds.", registers });
  for (const name of defaultMetrics) {
    if (name === "processResources" && typeof process.getActiveResourcesInfo !== "function") continue;
    (require(`prom-client/lib/metrics/${name}.js`) as (registry: Registry, config: object) => void)(registry, config);
  }
}
