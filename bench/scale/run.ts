/**
 * Scale benchmark (issue 17, "how cost grows"): curves, each point beside its
 * baseline where one exists, as tables and as SVG charts in bench/results/
 * (scale-*.svg):
 * (a) against catalog size: the fabric benchmark's scenario at each size
 *     (catalog-curve.ts), beside plain NATS KV;
 * (b) against nodes on one hub: simulated nodes doing an agent's upstream work
 *     through the agent's code (nodes-curve.ts); and beside it what node
 *     credentials cost as nodes join (keys-curve.ts);
 * (c) against concurrent relayed streams between two agents whose only path is
 *     the relay (relay-curve.ts), beside plain NATS pub/sub on the same path.
 * docs/limits.md reads the hub's limits for 100k nodes off these curves.
 *
 * Run: `node bench/scale/run.ts` (or `npm run bench -- scale`). Sizes (comma lists):
 * LEAFMESH_BENCH_SCALE_SERVICES (1000,10000,50000), _CHANGES (200 per size),
 * _NODES (100,300,1000), _NODE_SERVICES (1000), _NODE_CHANGES (20), _REST_S (10),
 * _STREAMS (1,100,1000), _RELAY_MIB (64 in all per point, at least 64 KiB a
 * stream), _KEY_NODES (10,20,40), _MEMORY_SERVICES (10000: memory per actor, a heap
 * snapshot), _PARTS (catalog,nodes,keys,relay,memory). A quick run:
 * LEAFMESH_BENCH_SCALE_SERVICES=500,2000 LEAFMESH_BENCH_SCALE_NODES=10,50
 * LEAFMESH_BENCH_SCALE_STREAMS=1,20 LEAFMESH_BENCH_SCALE_KEY_NODES=5,10.
 */
import { loadavg } from "node:os";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ratio, resultsDir, writeTables, type BenchTable } from "../table.ts";
import { lineChart, type Series } from "./chart.ts";
import { measureCatalogCurve } from "./catalog-curve.ts";
import { measureNodesCurve } from "./nodes-curve.ts";
import { measureKeysCurve } from "./keys-curve.ts";
import { measureRelayCurve } from "./relay-curve.ts";
import { measureActorMemory } from "./actor-memory.ts";

const list = (name: string, fallback: number[]) => (process.env[name] ? process.env[name]!.split(",").map(Number).filter((value) => value > 0) : fallback);
const number = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

const services = list("LEAFMESH_BENCH_SCALE_SERVICES", [1_000, 10_000, 50_000]);
const catalogChanges = number("LEAFMESH_BENCH_SCALE_CHANGES", 200);
const nodeCounts = list("LEAFMESH_BENCH_SCALE_NODES", [100, 300, 1_000]);
const nodeServices = number("LEAFMESH_BENCH_SCALE_NODE_SERVICES", 1_000);
const nodeChanges = number("LEAFMESH_BENCH_SCALE_NODE_CHANGES", 20);
const restSeconds = number("LEAFMESH_BENCH_SCALE_REST_S", 10);
const streamCounts = list("LEAFMESH_BENCH_SCALE_STREAMS", [1, 100, 1_000]);
const relayBytes = number("LEAFMESH_BENCH_SCALE_RELAY_MIB", 64) * 1024 * 1024;
const keyNodes = list("LEAFMESH_BENCH_SCALE_KEY_NODES", [10, 20, 40]);
const memoryServices = number("LEAFMESH_BENCH_SCALE_MEMORY_SERVICES", 10_000);
const parts = (process.env.LEAFMESH_BENCH_SCALE_PARTS ?? "catalog,nodes,keys,relay,memory").split(",");

const r = (value: number, digits = 0) => (Number.isFinite(value) ? Math.round(value * 10 ** digits) / 10 ** digits : NaN);
const count = (value: number) => value.toLocaleString("en-US");
const load = () => loadavg().map((value) => value.toFixed(2)).join(" / ");

function chart(file: string, title: string, xLabel: string, yLabel: string, series: Series[]): string {
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, file), lineChart({ title, xLabel, yLabel, series }));
  return file;
}

export async function runScaleBench(): Promise<BenchTable[]> {
  const started = performance.now();
  const tables: BenchTable[] = [];
  const charts: string[] = [];
  const loads: string[] = [];

  if (parts.includes("catalog")) {
    loads.push(`catalog curve: load average ${load()} (1 / 5 / 15 min) at its start`);
    const points = await measureCatalogCurve(services, catalogChanges);
    const at = (pick: (point: (typeof points)[number]) => number): [number, number][] => points.map((point) => [point.services, pick(point)]);
    charts.push(
      chart("scale-catalog-latency.svg", "One change hub → agent vs catalog size", "services", "ms", [
        { name: "leafmesh p50", points: at((p) => p.changeP50) }, { name: "leafmesh p99", points: at((p) => p.changeP99) },
        { name: "plain KV p50", points: at((p) => p.plainChangeP50), dashed: true }, { name: "plain KV p99", points: at((p) => p.plainChangeP99), dashed: true },
      ]),
      chart("scale-catalog-rss.svg", "Agent memory vs catalog size", "services", "MiB (RSS)", [
        { name: "agent, loaded", points: at((p) => p.agentRssLoadedMiB) }, { name: "agent, after changes", points: at((p) => p.agentRssMiB) }, { name: "agent, at rest", points: at((p) => p.agentRssAtRestMiB) },
        { name: "agent's nats-server", points: at((p) => p.agentServerRssMiB) }, { name: "plain leaf nats-server", points: at((p) => p.plainServerRssMiB), dashed: true },
      ]),
      chart("scale-catalog-time.svg", "Catalog written at the hub / held by a fresh node", "services", "ms", [
        { name: "hub writes", points: at((p) => p.hubWriteMs) }, { name: "plain KV writes", points: at((p) => p.plainWriteMs), dashed: true },
        { name: "agent holds", points: at((p) => p.agentHoldsMs) }, { name: "plain mirror holds", points: at((p) => p.plainHoldsMs), dashed: true },
      ]),
      chart("scale-catalog-cpu.svg", "CPU to load the catalog", "services", "CPU ms", [
        { name: "hub process, writing", points: at((p) => p.hubCpuMs) }, { name: "agent process, holding", points: at((p) => p.agentCpuLoadMs) },
      ]),
    );
    tables.push({
      title: "Scale (a): cost against catalog size (Services + EndpointSlices of 3 endpoints)",
      columns: ["services", "hub writes (ms)", "plain KV (ms)", "×", "hub process CPU (ms)", "hub RSS (MiB)", "fresh agent holds (ms)", "plain mirror (ms)", "×", "agent CPU to hold (ms)", "agent RSS loaded / after changes / at rest (MiB)", "agent's nats-server RSS (MiB)", "plain leaf RSS (MiB)", "change p50 / p99 (ms)", "plain p50 / p99 (ms)"],
      rows: points.map((p) => [
        count(p.services), r(p.hubWriteMs), r(p.plainWriteMs), ratio(p.hubWriteMs, p.plainWriteMs), r(p.hubCpuMs), r(p.hubRssMiB),
        r(p.agentHoldsMs), r(p.plainHoldsMs), ratio(p.agentHoldsMs, p.plainHoldsMs), r(p.agentCpuLoadMs),
        `${r(p.agentRssLoadedMiB)} / ${r(p.agentRssMiB)} / ${r(p.agentRssAtRestMiB)}`, r(p.agentServerRssMiB), r(p.plainServerRssMiB),
        `${r(p.changeP50, 2)} / ${r(p.changeP99, 2)}`, `${r(p.plainChangeP50, 2)} / ${r(p.plainChangeP99, 2)}`,
      ]),
      notes: [
        `Each size is bench/fabric's scenario (bench/fabric/scenario.ts: what each column times); ${catalogChanges} single changes per size.`,
        ...points.filter((p) => p.failed).map((p) => `${count(p.services)} services: leafmesh not measured: ${p.failed}.`),
        loads.at(-1)!,
      ],
    });
  }

  if (parts.includes("nodes")) {
    loads.push(`nodes curve: load average ${load()} at its start`);
    const points = await measureNodesCurve(nodeCounts, nodeServices, nodeChanges, restSeconds);
    const at = (pick: (point: (typeof points)[number]) => number): [number, number][] => points.map((point) => [point.nodes, pick(point)]);
    charts.push(
      chart("scale-nodes-cpu.svg", "Hub CPU at rest vs nodes (records kept alive every 45–60 s)", "nodes", "CPU ms per s (1,000 = a core)", [
        { name: "hub (server + process)", points: at((p) => p.hubRestCpuMsPerS) }, { name: "the simulated nodes", points: at((p) => p.benchRestCpuMsPerS), dashed: true },
      ]),
      chart("scale-nodes-rss.svg", "Hub memory vs nodes", "nodes", "MiB (RSS)", [
        { name: "hub nats-server", points: at((p) => p.hubServerRssMiB) }, { name: "hub process", points: at((p) => p.hubProcessRssMiB) },
      ]),
      chart("scale-nodes-latency.svg", "One change hub → every node vs nodes", "nodes", "ms", [
        { name: "per node p50", points: at((p) => p.changeP50) }, { name: "per node p99", points: at((p) => p.changeP99) }, { name: "last node p50", points: at((p) => p.lastNodeP50) },
      ]),
    );
    tables.push({
      title: `Scale (b): cost at the hub against nodes on it (${nodeServices.toLocaleString("en-US")} services)`,
      columns: ["nodes", "all joined and hold catalog + peers (ms)", "hub CPU to join them (ms)", "hub CPU at rest (ms/s)", "simulated nodes' CPU at rest (ms/s)", "hub nats-server RSS (MiB)", "hub process RSS (MiB)", "change per node p50 / p99 (ms)", "change to the last node p50 / p99 (ms)"],
      rows: points.map((p) => [count(p.nodes), r(p.joinMs), r(p.hubJoinCpuMs), r(p.hubRestCpuMsPerS), r(p.benchRestCpuMsPerS), r(p.hubServerRssMiB), r(p.hubProcessRssMiB), `${r(p.changeP50, 2)} / ${r(p.changeP99, 2)}`, `${r(p.lastNodeP50, 2)} / ${r(p.lastNodeP99, 2)}`]),
      notes: [
        "Simulated nodes (bench/scale/nodes-curve.ts): light NATS clients of the hub in the benchmark's process, each running the agent's NodeDirectory (its record put when it changes and kept alive every 45–60 s, a watch of every record) and the controller's followBucket on the catalog (at the hub the same push consumer with flow control a leaf's mirror is). Nodes join in waves of 50, each once the wave before holds the catalog. Insecure hub, one account: node credentials are measured apart (the next table).",
        ...points.filter((p) => p.failed).map((p) => `${count(p.nodes)} nodes: not measured: ${p.failed}.`),
        `At rest: ${restSeconds} s after every node joined. The nodes share this machine's two cores with the hub: at the largest point they compete with it.`,
        loads.at(-1)!,
      ],
    });
  }

  if (parts.includes("keys")) {
    loads.push(`keys curve: load average ${load()} at its start`);
    const points = await measureKeysCurve(keyNodes);
    const at = (pick: (point: (typeof points)[number]) => number): [number, number][] => points.map((point) => [point.nodes, pick(point)]);
    charts.push(
      chart("scale-keys.svg", "Node credentials vs nodes (every account imports from every other)", "nodes", "ms / KiB", [
        { name: "one join: issue (ms)", points: at((p) => p.lastIssueMs) }, { name: "largest account JWT (KiB)", points: at((p) => p.largestAccountJwtBytes / 1024) },
        { name: "all account JWTs (KiB)", points: at((p) => p.accountJwtBytes / 1024) },
      ]),
    );
    tables.push({
      title: "Scale (b'): node credentials against nodes (trust/node-credentials.ts issueNode)",
      columns: ["nodes", "one more node issued (ms)", "all issued, one by one (ms)", "account JWTs, all (KiB)", "largest account JWT (KiB)", "secured hub ready (ms)", "its nats-server RSS (MiB)"],
      rows: points.map((p) => [count(p.nodes), r(p.lastIssueMs), r(p.allIssuesMs), r(p.accountJwtBytes / 1024), r(p.largestAccountJwtBytes / 1024, 1), r(p.hubReadyMs), r(p.hubServerRssMiB)]),
      notes: ["Each node account imports relay frames and the punch method from every other node account (trust/claims.ts nodeAccountJwt): a join signs every account again, and the JWTs grow with the square of the nodes.", loads.at(-1)!],
    });
  }

  if (parts.includes("relay")) {
    loads.push(`relay curve: load average ${load()} at its start`);
    const points = await measureRelayCurve(streamCounts, relayBytes, 64 * 1024);
    const at = (pick: (point: (typeof points)[number]) => number): [number, number][] => points.map((point) => [point.streams, pick(point)]);
    charts.push(
      chart("scale-relay-throughput.svg", "Aggregate throughput vs concurrent relayed streams", "streams", "Mbit/s", [
        { name: "leafmesh relayed", points: at((p) => p.mbps) }, { name: "plain NATS pub/sub", points: at((p) => p.plainMbps), dashed: true },
      ]),
      chart("scale-relay-cpu.svg", "CPU per MiB vs concurrent relayed streams", "streams", "CPU ms per MiB", [
        { name: "leafmesh (agents + hub)", points: at((p) => p.cpuMsPerMiB) }, { name: "  of which the hub", points: at((p) => p.hubCpuMsPerMiB) },
        { name: "plain NATS (clients + servers)", points: at((p) => p.plainCpuMsPerMiB), dashed: true },
      ]),
      chart("scale-relay-rss.svg", "Memory vs concurrent relayed streams", "streams", "MiB (peak RSS)", [
        { name: "agent (larger of two)", points: at((p) => p.agentRssMiB) }, { name: "hub nats-server", points: at((p) => p.hubServerRssMiB) },
        { name: "plain hub nats-server", points: at((p) => p.plainHubServerRssMiB), dashed: true },
      ]),
    );
    tables.push({
      title: "Scale (c): cost against concurrent relayed streams (edge-a → hub → edge-b, relay only)",
      columns: ["streams", "bytes each", "whole", "leafmesh (Mbit/s)", "plain NATS (Mbit/s)", "×", "CPU per MiB: leafmesh / plain (ms)", "of which agents / hub (ms)", "agent peak RSS (MiB)", "hub nats-server peak RSS: leafmesh / plain (MiB)"],
      rows: points.map((p) => [
        count(p.streams), count(p.bytesPerStream), `${p.whole} (plain ${p.plainDelivered})`, r(p.mbps), r(p.plainMbps), ratio(p.mbps, p.plainMbps),
        `${r(p.cpuMsPerMiB, 1)} / ${r(p.plainCpuMsPerMiB, 1)}`, `${r(p.agentCpuMsPerMiB, 1)} / ${r(p.hubCpuMsPerMiB, 1)}`, r(p.agentRssMiB), `${r(p.hubServerRssMiB)} / ${r(p.plainHubServerRssMiB)}`,
      ]),
      notes: ["bench/scale/relay-curve.ts says what is counted. Secured agents: each relayed stream runs its own TLS session over its own relay channel.", loads.at(-1)!],
    });
  }

  if (parts.includes("memory")) {
    loads.push(`memory: load average ${load()} at its start`);
    const memory = await measureActorMemory(memoryServices);
    const mib = (bytes: number) => r(bytes / 1048576, 1);
    tables.push({
      title: `Memory per actor: an agent holding ${count(memoryServices)} services (heap snapshot, retained by owner)`,
      columns: ["owner", "retained (MiB)", "root objects"],
      rows: [
        ...memory.owners.map((owner) => [owner.owner, mib(owner.retainedBytes), owner.roots ? count(owner.roots) : "—"]),
        ["JS heap in all (self sizes)", r(memory.heapMiB, 1), "—"],
        ["agent process RSS at the snapshot", r(memory.rssMiB), "—"],
        ["its nats-server RSS", r(memory.serverRssMiB), "—"],
      ],
      notes: [
        "bench/profile/heap-owners.ts: each object is charged to the outermost actor root that dominates it (every path from the GC roots to it passes through that root); what several actors share (the catalog objects the controller's index and DNS both hold) stays with no single actor.",
        "RSS beyond the JS heap: code, V8's spaces not yet returned, Node's and libuv's buffers, one socket per traffic listener.",
        loads.at(-1)!,
      ],
    });
  }

  const minutes = (performance.now() - started) / 60_000;
  tables.push({
    title: "Scale: charts",
    columns: ["chart (bench/results/)"],
    rows: charts.map((file) => [file]),
    notes: [`The scale benchmark took ${minutes.toFixed(1)} min; load average at the end ${load()} (2 cores shared).`],
  });
  return tables;
}

if (import.meta.main) {
  const tables = await runScaleBench();
  const written = writeTables("scale", tables);
  console.log(readFileSync(written.markdown, "utf8"));
  process.exit(0);
}
