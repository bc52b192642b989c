/**
 * lib/prom.ts: the process metrics under the names prom-client's collectDefaultMetrics gives
 * them, counted as it counts them, without loading prom-client's index (nor, through it,
 * @opentelemetry/api) in a leafmesh process.
 */
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import * as promClient from "prom-client";
import { describe, expect, it } from "vitest";
import { nodeBinary } from "../test/support/processes.ts";
import { collectProcessMetrics, Registry } from "./prom.ts";
import { MetricsServer } from "./metrics.ts";
import { silentLogger } from "./log.ts";

describe("process metrics without prom-client's index", () => {
  it("registers every metric collectDefaultMetrics does, by name, type and help, and the CPU counters count", async () => {
    const ours = new Registry();
    collectProcessMetrics(ours, "leafmesh_process_");
    const theirs = new promClient.Registry();
    promClient.collectDefaultMetrics({ register: theirs, prefix: "leafmesh_process_" });
    const shape = async (registry: Registry) => (await registry.getMetricsAsJSON()).map(({ name, type, help }) => ({ name, type, help })).sort((a, b) => a.name.localeCompare(b.name));
    expect(await shape(ours)).toEqual(await shape(theirs));
    expect((await shape(ours)).length).toBeGreaterThan(20);

    const cpu = async () => Number(/^leafmesh_process_process_cpu_seconds_total (\S+)$/m.exec(await ours.metrics())?.[1]);
    const before = await cpu();
    // 50 ms of this process's CPU, however long a loaded machine takes to give it (bounded at 10 s)
    const start = process.cpuUsage();
    const bound = Date.now() + 10_000;
    while (Date.now() < bound) {
      const used = process.cpuUsage(start);
      if (used.user + used.system >= 50_000) break;
    }
    const after = await cpu();
    expect(after - before).toBeGreaterThanOrEqual(0.04);
    const text = await ours.metrics();
    const user = Number(/^leafmesh_process_process_cpu_user_seconds_total (\S+)$/m.exec(text)?.[1]);
    const system = Number(/^leafmesh_process_process_cpu_system_seconds_total (\S+)$/m.exec(text)?.[1]);
    const total = Number(/^leafmesh_process_process_cpu_seconds_total (\S+)$/m.exec(text)?.[1]);
    expect(user + system).toBeCloseTo(total, 6); // one collect sets all three
  });

  it("a process serving metrics loads neither prom-client's index nor @opentelemetry/api", async () => {
    // A fresh process: this test's own worker has prom-client's index loaded (the test above).
    const metrics = fileURLToPath(new URL("./metrics.ts", import.meta.url));
    const script = `
      import { createRequire } from "node:module";
      const { MetricsServer } = await import(${JSON.stringify(metrics)});
      const server = new MetricsServer({ log: { info() {}, warn() {} } });
      await server.start({ host: "127.0.0.1", port: 0 });
      const text = await (await fetch("http://127.0.0.1:" + server.port + "/metrics")).text();
      await server.stop();
      const loaded = Object.keys(createRequire(import.meta.url).cache);
      console.log(JSON.stringify({ served: text.includes("leafmesh_process_process_cpu_seconds_total"), otel: loaded.filter((path) => path.includes("@opentelemetry")).length, index: loaded.some((path) => path.endsWith("prom-client/index.js")) }));`;
    const out = execFileSync(nodeBinary, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 30_000 });
    expect(JSON.parse(out.trim().split("\n").pop()!)).toEqual({ served: true, otel: 0, index: false });
  });

  it("the metrics server serves them", async () => {
    const server = new MetricsServer({ log: silentLogger() });
    await server.start({ host: "127.0.0.1", port: 0 });
    try {
      const text = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
      for (const name of ["process_cpu_seconds_total", "process_resident_memory_bytes", "nodejs_eventloop_lag_seconds", "nodejs_gc_duration_seconds", "process_open_fds"]) expect(text).toContain(`leafmesh_process_${name}`);
    } finally {
      await server.stop();
    }
  });
});
