/**
 * Fresh agents against one hub, started one after another, from one tree or
 * alternately from several (an A/B of two commits in the same minutes): when
 * each agent's nats-server took clients, when its controller announced its
 * first and last catalog object, when traffic published a listener set holding
 * every service, the agent's CPU by then, and its resident memory once at rest. The fabric bench (run.ts) times
 * one fresh agent per run beside plain NATS; this one repeats the start, which
 * is what telling a change from the machine's noise needs (issue 17: a fresh
 * node holds 10,000 services in < 2 s).
 *
 * Run (a tree is a checkout with node_modules; its own bin/leafmesh.js starts the agents):
 *   node bench/fabric/fresh-starts.ts
 *   LEAFMESH_STARTS_TREES=/tmp/before,/work/main LEAFMESH_STARTS_ROUNDS=12 node bench/fabric/fresh-starts.ts
 * LEAFMESH_STARTS_SERVICES sets the catalog's size (default 10,000); LEAFMESH_STARTS_PROFILE=DIR has each
 * agent write a V8 CPU profile there (--cpu-prof; the bench and its hub are not profiled); LEAFMESH_STARTS_HEAP=DIR
 * a sampling heap profile that keeps collected objects, from launch until traffic holds every service
 * (bench/profile/heap-sampling-preload.ts; read with bench/profile/heap-profile.ts). LEAFMESH_STARTS_NODE_FLAGS
 * gives each agent's Node flags (`--trace-gc-nvp`), LEAFMESH_STARTS_OUTPUT=DIR keeps each agent's output there.
 */
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { buckets } from "../../bus/subjects.ts";
import { freePort } from "../../test/support/ports.ts";
import { nodeBinary, startHubProcess, stopAllProcesses, tempDir } from "../../test/support/processes.ts";
import { percentile } from "../table.ts";
import { writeManifests } from "./catalog.ts";
import { cpuMs, rssMiB } from "./process-stats.ts";

const count = Number(process.env.LEAFMESH_STARTS_SERVICES ?? 10_000);
const rounds = Number(process.env.LEAFMESH_STARTS_ROUNDS ?? 6);
const profileDir = process.env.LEAFMESH_STARTS_PROFILE;
const heapDir = process.env.LEAFMESH_STARTS_HEAP;
// V8's flags are not allowed in NODE_OPTIONS: these go on the agent's command line (bin/leafmesh.js keeps them when it
// starts again in place), and what the agent writes goes to a file per agent.
const nodeFlags = (process.env.LEAFMESH_STARTS_NODE_FLAGS ?? "").split(" ").filter(Boolean);
const outputDir = process.env.LEAFMESH_STARTS_OUTPUT;
const heapPreload = join(dirname(fileURLToPath(import.meta.url)), "../profile/heap-sampling-preload.ts");
const trees = (process.env.LEAFMESH_STARTS_TREES ?? join(dirname(fileURLToPath(import.meta.url)), "../..")).split(",");

interface Start {
  /** The agent's nats-server took this bench's connection. */
  connected: number;
  firstEvent: number;
  lastEvent: number;
  /** A traffic.listeners generation held every service. */
  traffic: number;
  cpu: number;
  /** Listener generations traffic published until then (each carries the whole set). */
  generations: number;
  /** Catalog batches the controller announced until then (its catalog events come in one write per batch). */
  batches: number;
  /** Traffic's state changes until then: two per reconcile (idle → reconciling → idle), each a bus event. */
  trafficStates: number;
  /** Resident memory at rest: 3.5 s later, past the agent's collection once a large change has settled (lib/release-memory.ts). */
  rss: number;
}

async function startOnce(tree: string, hubLeafUrl: string, node: string): Promise<Start> {
  const [client, monitor, metrics, dns] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const dataDir = tempDir(`leafmesh-${node}-`);
  const args = ["agent", "--node", node, "--hub", hubLeafUrl, "--data", dataDir, "--nats-listen", `127.0.0.1:${client}`, "--monitor-listen", `127.0.0.1:${monitor}`, "--metrics-listen", `127.0.0.1:${metrics}`, "--dns", `127.0.0.1:${dns}`, "--upstream", "127.0.0.1:9", "--insecure"];
  const started = performance.now();
  const nodeOptions = [process.env.NODE_OPTIONS ?? "", profileDir ? `--cpu-prof --cpu-prof-dir=${profileDir}` : "", heapDir ? `--import=${heapPreload}` : ""].join(" ").trim();
  const env = { ...process.env, NODE_OPTIONS: nodeOptions, ...(heapDir ? { LEAFMESH_HEAP_SAMPLING_DIR: heapDir } : {}) };
  const out = outputDir ? openSync(join(outputDir, `${node}.log`), "w") : "ignore";
  const agent = spawn(nodeBinary, [...nodeFlags, join(tree, "bin/leafmesh.js"), ...args], { stdio: ["ignore", out, out], env });
  if (typeof out === "number") closeSync(out); // the agent has its own copy
  const exited = new Promise((resolve) => agent.once("exit", resolve));
  try {
    const connection = await connect({ servers: `nats://127.0.0.1:${client}`, waitOnFirstConnect: true, reconnectTimeWait: 10, maxReconnectAttempts: -1 });
    const connected = performance.now() - started;
    let events = 0;
    let firstEvent = Number.NaN;
    let lastEvent = Number.NaN;
    let traffic = Number.NaN;
    const generations = new Map<number, number>();
    let batches = 0;
    let lastAt = "";
    let trafficStates = 0;
    connection.subscribe(`mesh.${node}.traffic.state`, { callback: () => void (Number.isNaN(traffic) && trafficStates++) });
    connection.subscribe(`mesh.${node}.controller.catalog`, {
      callback: (_error, message) => {
        // A batch's events share their time (services/controller/agent-controller.ts flushChanges).
        const at = message.string().slice(7, 31);
        if (at !== lastAt) batches++;
        lastAt = at;
        events++;
        lastEvent = performance.now() - started;
        if (Number.isNaN(firstEvent)) firstEvent = lastEvent;
      },
    });
    connection.subscribe(`mesh.${node}.traffic.listeners`, {
      callback: (_error, message) => {
        const event = message.json<{ generation: number; listeners: unknown[] }>();
        const total = (generations.get(event.generation) ?? 0) + event.listeners.length;
        generations.set(event.generation, total);
        if (total >= count && Number.isNaN(traffic)) traffic = performance.now() - started;
      },
    });
    // Done once traffic holds every service and no catalog event came for 1.5 s; at most 60 s.
    for (let waited = 0; waited < 60_000; waited += 50) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      if (!Number.isNaN(traffic) && events >= 2 * count && performance.now() - started - lastEvent > 1_500) break;
    }
    if (Number.isNaN(traffic) || events < 2 * count) throw new Error(`${node} (${tree}) did not hold the catalog within 60 s: ${events} catalog events`);
    const cpu = cpuMs(agent.pid!);
    if (heapDir) agent.kill("SIGUSR2"); // the heap profile of the load, written now (heap-sampling-preload.ts)
    await new Promise((resolve) => setTimeout(resolve, 3_500));
    const rss = rssMiB(agent.pid!);
    await connection.close();
    return { connected, firstEvent, lastEvent, traffic, cpu, generations: generations.size, batches, trafficStates, rss };
  } finally {
    agent.kill("SIGTERM");
    await exited;
  }
}

const manifests = tempDir();
writeManifests(manifests, count);
const hub = await startHubProcess({ name: "hub-starts", manifests, waitReady: false });
try {
  const hubConnection = await connect({ servers: hub.clientUrl, waitOnFirstConnect: true, maxReconnectAttempts: -1 });
  const kv = await new Kvm(hubConnection).open(buckets.catalog);
  // The hub makes the bucket once it holds the publisher's lease: until then, its stream is not found.
  const values = () => kv.status().then((status) => status.values, () => 0);
  for (let waited = 0; (await values()) < 2 * count; waited += 100) {
    if (waited > 600_000) throw new Error("the hub did not publish the catalog within 10 minutes");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await hubConnection.close();
  const results = new Map<string, Start[]>(trees.map((tree) => [tree, []]));
  for (let round = 0; round < rounds * trees.length; round++) {
    const tree = trees[round % trees.length];
    const start = await startOnce(tree, hub.leafUrl, `edge-start-${round}`);
    results.get(tree)!.push(start);
    console.log(JSON.stringify({ tree, round, ...Object.fromEntries(Object.entries(start).map(([key, value]) => [key, Math.round(value)])) }));
  }
  const median = (starts: Start[], key: keyof Start) => Math.round(percentile(starts.map((start) => start[key]), 50));
  console.log(`\nmedians of ${rounds} fresh agents per tree, ${count.toLocaleString("en-US")} services (ms from launch):`);
  for (const [tree, starts] of results) {
    console.log(`${tree}: server takes clients ${median(starts, "connected")}, first catalog event ${median(starts, "firstEvent")}, last ${median(starts, "lastEvent")}, traffic holds every service ${median(starts, "traffic")}, agent CPU ${median(starts, "cpu")}, RSS at rest ${median(starts, "rss")} MiB`);
  }
} finally {
  await stopAllProcesses();
}
