/**
 * An edge gateway's load (issue 15 item 12): 2,000 concurrent downloads through
 * one agent's cluster-IP proxy to a service whose only endpoint runs on another
 * node, real agents (a secured hub and two agent processes on loopback, a direct
 * path with a TLS session per stream) and a real backend process. Past its
 * capacity the agent makes connections wait at the door or refuses them there
 * (an RST before any byte); it never fails one it accepted, never ejects the
 * healthy endpoint for its own overload, and its memory stays bounded by its
 * `--proxy-max-connections`. Nothing here asserts a speed.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { download, rssMiB, startDownloadBackend, type DownloadOutcome } from "./support/downloads.ts";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually, freePort } from "./support/ports.ts";
import { proxyListener, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess } from "./support/processes.ts";
import type { ChildProcess } from "node:child_process";

const concurrency = 2_000;
const bytes = 64 * 1024;
/** The backend answers a second after the request: without admission, all 2,000 streams are open at once. */
const thinkMs = 1_000;
/** Carried at once: the memory bound below is this many streams' cost. */
const maxConnections = 200;

let backend: ChildProcess;
let edgeA: AgentProcess;
let port: { host: string; port: number };

const trafficDetail = async (agent: AgentProcess) => ((await agent.view()).status.actors.find((actor) => actor.name === "traffic")?.detail ?? {}) as {
  counters?: Record<string, number>;
  ejected?: string[];
  admission?: { connections: number; opening: number; waiting: number };
};

beforeAll(async () => {
  const keys = join(tempDir("leafmesh-capacity-"), "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
  const backendPort = await freePort();
  backend = await startDownloadBackend(backendPort, bytes, thinkMs);
  const manifests = tempDir();
  writeManifest(manifests, "files.yaml", sampleService({ name: "files", clusterIP: "198.19.0.20", endpoints: [{ ip: "127.0.0.1", node: "edge-b" }], backendPort }));
  const hub = await startHubProcess({ name: "hub-1", manifests, keys });
  const tunnelArgs = ["--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off"];
  // Room in line for every download, and time for it on a slow machine: what is measured is what the agent carries.
  const limits = ["--proxy-max-connections", String(maxConnections), "--proxy-max-per-client", String(concurrency), "--proxy-queue", String(concurrency), "--proxy-queue-timeout", "120000"];
  [edgeA] = await Promise.all([
    startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], keys, extraArgs: [...tunnelArgs, ...limits] }),
    startAgentProcess({ node: "edge-b", hubs: [hub.leafUrl], keys, extraArgs: tunnelArgs }),
  ]);
  port = await proxyListener(edgeA, "demo/files:http/TCP");
  // The path to edge-b is made by the first stream.
  await eventually(async () => (await download(port, bytes, 10_000)) === "whole", 30_000, "a first download through the tunnel");
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
  backend?.kill();
});

describe("2,000 concurrent downloads through one agent", () => {
  it("carries every download it accepts, ejects no healthy endpoint, and holds its memory to its connection limit", async () => {
    const pid = edgeA.child.pid;
    const before = rssMiB(pid);
    let peak = before;
    let peakCarried = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(pid))), 100);
    const carriedSampler = setInterval(() => void trafficDetail(edgeA).then((detail) => (peakCarried = Math.max(peakCarried, detail.admission?.connections ?? 0)), () => undefined), 1_000);
    let outcomes: DownloadOutcome[];
    try {
      outcomes = await Promise.all(Array.from({ length: concurrency }, () => download(port, bytes, 150_000)));
    } finally {
      clearInterval(sampler);
      clearInterval(carriedSampler);
    }
    const tally: Record<string, number> = {};
    for (const outcome of outcomes) tally[outcome] = (tally[outcome] ?? 0) + 1;
    console.log(`capacity: ${JSON.stringify(tally)}; edge-a RSS ${before.toFixed(0)} → peak ${peak.toFixed(0)} MiB; peak carried ${peakCarried}; ejected ${(await trafficDetail(edgeA)).counters?.["endpoint ejected"] ?? 0}`);
    // Each download is whole or refused at the door; none is cut, short or hung once it was let in.
    expect({ ...tally, whole: undefined, "refused at the door": undefined }).toEqual({ whole: undefined, "refused at the door": undefined });
    expect(tally.whole).toBeGreaterThan(concurrency / 2);
    const detail = await trafficDetail(edgeA);
    expect(detail.ejected).toEqual([]);
    expect(detail.counters?.["endpoint ejected"] ?? 0).toBe(0);
    expect(peakCarried).toBeLessThanOrEqual(maxConnections);
    // Bounded: 200 streams' cost (~100 KiB each, services/traffic/capacity.ts) and the runtime's own slack
    // at full throughput (~100 MiB), where 2,000 streams at once grew an agent by hundreds of MiB.
    expect(peak - before).toBeLessThan(150);
    await eventually(async () => (await trafficDetail(edgeA)).admission?.connections === 0, 10_000, "every place given back");
  }, 200_000);
});
