/**
 * Capacity benchmark (issue 15 item 12): many concurrent downloads through one
 * agent's cluster-IP proxy to a service whose only endpoint runs on another
 * node, as an edge gateway node sees them. A secured hub and two agent processes
 * on loopback (the path between them is direct: each stream a TLS connection of
 * its own); the backend is a process of its own that sends `bytes` to every
 * connection that asks.
 *
 * For each round: how many downloads arrived whole, how many were refused at the
 * door (an RST before any byte: the agent's admission limit) and how many failed
 * after bytes had come (what must not happen); the agents' peak RSS; and their
 * refusals, ejections and tunnel counters. Not a test: nothing passes or fails here.
 *
 * Run: `node bench/capacity/run.ts` (or `npm run bench -- capacity`); env
 * LEAFMESH_BENCH_CAPACITY_CONCURRENCY (2000), _BYTES (1 MiB), _ROUNDS (3), _ARGS
 * (extra agent flags, e.g. "--proxy-max-connections 500").
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { sampleService, writeManifest } from "../../test/support/manifests.ts";
import { freePort } from "../../test/support/ports.ts";
import { download as downloadOnce, rssMiB, startDownloadBackend, type DownloadOutcome as Outcome } from "../../test/support/downloads.ts";
import { proxyListener, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess } from "../../test/support/processes.ts";
import { writeTables, type BenchTable } from "../table.ts";

const concurrency = Number(process.env.LEAFMESH_BENCH_CAPACITY_CONCURRENCY ?? 2_000);
const bytes = Number(process.env.LEAFMESH_BENCH_CAPACITY_BYTES ?? 1024 * 1024);
const rounds = Number(process.env.LEAFMESH_BENCH_CAPACITY_ROUNDS ?? 3);
const extraArgs = (process.env.LEAFMESH_BENCH_CAPACITY_ARGS ?? "").split(/\s+/).filter(Boolean);
/** A download that has not finished by then counts as failed (it would be a hung client). */
const downloadTimeoutMs = 180_000;
const download = (listener: { host: string; port: number }) => downloadOnce(listener, bytes, downloadTimeoutMs);

async function detail(agent: AgentProcess, actor: string): Promise<Record<string, unknown>> {
  return ((await agent.view()).status.actors.find((entry) => entry.name === actor)?.detail ?? {}) as Record<string, unknown>;
}

export async function runCapacityBench(): Promise<BenchTable> {
  const keys = join(tempDir("leafmesh-bench-capacity-"), "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
  const backendPort = await freePort();
  const backend = await startDownloadBackend(backendPort, bytes);
  try {
    const manifests = tempDir();
    writeManifest(manifests, "files.yaml", sampleService({ name: "files", clusterIP: "198.19.0.20", endpoints: [{ ip: "127.0.0.1", node: "edge-b" }], backendPort }));
    const hub = await startHubProcess({ name: "hub-1", manifests, keys });
    const tunnelArgs = ["--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off", ...extraArgs];
    const [edgeA, edgeB] = await Promise.all(["edge-a", "edge-b"].map((node) => startAgentProcess({ node, hubs: [hub.leafUrl], keys, extraArgs: tunnelArgs })));
    const port = await proxyListener(edgeA, "demo/files:http/TCP");
    // One download first: the path to edge-b is made (not part of a round).
    if ((await download(port)) !== "whole") throw new Error("the first download through the tunnel failed");
    const rows: (string | number)[][] = [];
    const rssBefore = { a: rssMiB(edgeA.child.pid), b: rssMiB(edgeB.child.pid) };
    for (let round = 1; round <= rounds; round++) {
      const peak = { a: 0, b: 0 };
      const sampler = setInterval(() => {
        peak.a = Math.max(peak.a, rssMiB(edgeA.child.pid));
        peak.b = Math.max(peak.b, rssMiB(edgeB.child.pid));
      }, 100);
      const started = Date.now();
      const outcomes = await Promise.all(Array.from({ length: concurrency }, () => download(port)));
      const seconds = (Date.now() - started) / 1000;
      clearInterval(sampler);
      const tally = (outcome: Outcome) => outcomes.filter((value) => value === outcome).length;
      const traffic = await detail(edgeA, "traffic");
      rows.push([
        round,
        concurrency,
        tally("whole"),
        tally("refused at the door"),
        tally("cut after bytes") + tally("short, clean end") + tally("timed out"),
        seconds,
        peak.a,
        rssMiB(edgeA.child.pid),
        peak.b,
        (traffic.ejected as string[] | undefined)?.length ?? 0,
        JSON.stringify(Object.fromEntries(Object.entries((traffic.counters ?? {}) as Record<string, number>).filter(([reason]) => /refused|ejected|failed|queue|reset/.test(reason)))),
      ]);
      console.error(`round ${round}: ${JSON.stringify(rows.at(-1))}`);
    }
    const warnings = (agent: AgentProcess) => {
      const counts = new Map<string, number>();
      for (const line of agent.output().split("\n")) {
        if (!/"level":(40|50)/.test(line)) continue;
        const message = /"msg":"([^"]*)"/.exec(line)?.[1] ?? line.slice(0, 80);
        counts.set(message, (counts.get(message) ?? 0) + 1);
      }
      return [...counts].map(([message, count]) => `${count}× ${message}`).join("; ") || "none";
    };
    return {
      title: `capacity: ${concurrency} concurrent ${bytes / 1024 / 1024} MiB downloads through edge-a's cluster-IP proxy to an endpoint on edge-b (direct path, TLS streams)`,
      columns: ["round", "downloads", "whole", "refused at the door", "failed after accept", "seconds", "edge-a peak RSS MiB", "edge-a RSS after MiB", "edge-b peak RSS MiB", "ejected endpoints", "edge-a traffic refusals and failures"],
      rows,
      notes: [
        `RSS before the first round: edge-a ${rssBefore.a.toFixed(0)} MiB, edge-b ${rssBefore.b.toFixed(0)} MiB. Agent flags added: ${extraArgs.join(" ") || "none"}.`,
        "whole: every byte and a clean end; refused at the door: an RST before any byte (the proxy's admission limit or queue timeout); failed after accept: a reset or short read once bytes flowed, or no end within 180 s.",
        `Warnings and errors logged: edge-a: ${warnings(edgeA)}; edge-b: ${warnings(edgeB)}.`,
      ],
    };
  } finally {
    await stopAllProcesses();
    backend.kill();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const written = writeTables("capacity", [await runCapacityBench()]);
  console.log(readFileSync(written.markdown, "utf8"));
}
