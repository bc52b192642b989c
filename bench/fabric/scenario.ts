/**
 * One catalog size, measured for leafmesh and, beside it, for plain NATS on the
 * same nats-server configs (the fabric benchmark's rows; the scale benchmark
 * runs it at several sizes):
 * - the catalog written at the hub, from a cold start: leafmesh from launching
 *   `leafmesh hub --manifests` until KV holds every object; plain NATS from
 *   launching nats-server until 64 concurrent KV puts of the same objects are acked;
 * - a fresh node holding the catalog, from launching it: leafmesh until its
 *   controller announced every object, traffic listens for every service and DNS
 *   answers the last one; plain NATS until a KV mirror on a fresh leaf holds
 *   every object and a KV watcher on it has read them all;
 * - single changes hub → node (p50/p99), the node's resident memory, hub CPU.
 * Nothing polls the leafmesh processes while they load: the benchmark listens to
 * their bus events and asks the servers (stream info), so it does not slow them.
 */
import { spawn } from "node:child_process";
import { withCompileCache } from "../../bin/compile-cache.js";
import { memoryOf } from "../../bin/memory.js";
import { readFileSync } from "node:fs";
import { createSocket } from "node:dgram";
import { join } from "node:path";
import dnsPacket from "dns-packet";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { encodeCatalogObject, type EndpointSlice, type Service } from "../../bus/catalog.ts";
import { buckets } from "../../bus/subjects.ts";
import { rpcRequest } from "../../bus/bus.ts";
import { rpc } from "../../bus/rpc.ts";
import { KvPuts } from "../../bus/kv-puts.ts";
import { silentLogger } from "../../lib/log.ts";
import { NatsServerSupervisor } from "../../nats/supervisor.ts";
import { renderHubConfig, renderLeafConfig, toLeafUrl } from "../../nats/render.ts";
import { freePort } from "../../test/support/ports.ts";
import { launch, nodeBinary, startHubProcess, stopAllProcesses, tempDir } from "../../test/support/processes.ts";
import { serviceName, writeManifests } from "./catalog.ts";
import { cpuMs, rssMiB } from "./process-stats.ts";

export type Entries = [string, Service | EndpointSlice][];

export interface PlainResult {
  /** nats-server launched → every put acked. */
  writeMs: number;
  putsMs: number;
  /** The same objects put again through pipelined publishes (bus/kv-puts.ts, 256 in flight), as leafmesh's hub writes. */
  pipelinedPutsMs: number;
  /** Leaf launched → its mirror holds every object. */
  leafHoldsMs: number;
  /** Leaf launched → a KV watcher on the mirror has read every object. */
  clientHoldsMs: number;
  latencies: number[];
  serverRssMiB: number;
}

export interface LeafmeshResult {
  /** `leafmesh hub` launched → KV holds every object. */
  writeMs: number;
  hubCpuMs: number;
  hubRssMiB: number;
  /** `leafmesh agent` launched → its leaf's mirror holds every object. */
  leafHoldsMs: number;
  /** … → its controller announced every object (catalog events). */
  controllerHoldsMs: number;
  /** … → traffic listens for every service (a complete listeners generation). */
  trafficHoldsMs: number;
  /** … → DNS answers the last service. */
  dnsAnswersMs: number;
  /** The latest of the three: the node holds the catalog. */
  nodeHoldsMs: number;
  /** The floor (node-floor.ts) launched → it holds every object, parsed; and its RSS then. */
  floorHoldsMs: number;
  floorRssMiB: number;
  floorRssAtRestMiB: number;
  /** Catalog events of the load sent before this benchmark's subscription was in place (0 as a rule). */
  missedEvents: number;
  agentCpuLoadMs: number;
  rssLoadedMiB: number;
  rssMiB: number;
  /**
   * Resident memory at rest, what `top` shows on an idle node: once the hub has put back what the changes wrote
   * past it and no catalog event has come for 12 s (the agent gives back a change's garbage 2 s after it settles,
   * lib/release-memory.ts).
   */
  rssAtRestMiB: number;
  serverRssMiB: number;
  latencies: number[];
}

const poll = async (check: () => Promise<boolean> | boolean, timeoutMs: number, what: string, everyMs = 20): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
};

async function streamMessages(connection: NatsConnection): Promise<number> {
  const jsm = await jetstreamManager(connection);
  return (await jsm.streams.info(`KV_${buckets.catalog}`).catch(() => undefined))?.state.messages ?? 0;
}

/** Puts changed values one at a time and measures until `waitSeen(key)` resolves for each. */
async function measureChanges(kv: KV, entries: Entries, changes: number, waitSeen: (key: string) => Promise<void>): Promise<number[]> {
  const latencies: number[] = [];
  for (let change = 0; change < changes; change++) {
    const [key, object] = entries[(change * 2) % entries.length];
    const changed = { ...object, labels: { ...object.labels, change: String(change) } };
    const seen = waitSeen(key);
    const started = performance.now();
    await kv.put(key, encodeCatalogObject(changed));
    await seen;
    latencies.push(performance.now() - started);
  }
  return latencies;
}

/** Puts every entry, `inFlight` at a time, through `put`. */
async function putAll(entries: Entries, inFlight: number, put: (key: string, value: Uint8Array) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < entries.length) {
        const [key, object] = entries[next++];
        await put(key, encodeCatalogObject(object));
      }
    }),
  );
}

export async function measurePlain(entries: Entries, changes: number): Promise<PlainResult> {
  const dir = tempDir();
  const [client, leaf, monitor, leafClient, leafMonitor] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const started = performance.now();
  const hub = new NatsServerSupervisor({
    name: "plain-hub", dataDir: join(dir, "hub"), monitor: { host: "127.0.0.1", port: monitor }, log: silentLogger(),
    configText: renderHubConfig({ serverName: "plain-hub", storeDir: join(dir, "hub/js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } }),
  });
  const leafServer = new NatsServerSupervisor({
    name: "plain-leaf", dataDir: join(dir, "leaf"), monitor: { host: "127.0.0.1", port: leafMonitor }, log: silentLogger(),
    configText: renderLeafConfig({ serverName: "plain-leaf", domain: "plain-leaf", storeDir: join(dir, "leaf/js"), client: { host: "127.0.0.1", port: leafClient }, monitor: { host: "127.0.0.1", port: leafMonitor }, upstreams: [toLeafUrl(`nats://127.0.0.1:${leaf}`)] }),
  });
  try {
    await hub.start();
    const hubConnection = await connect({ servers: `nats://127.0.0.1:${client}` });
    const kv = await new Kvm(hubConnection).create(buckets.catalog, { history: 1 });
    const putsStarted = performance.now();
    await putAll(entries, 64, (key, value) => kv.put(key, value));
    const writeMs = performance.now() - started;
    const putsMs = performance.now() - putsStarted;

    const leafStarted = performance.now();
    await leafServer.start();
    const leafConnection = await connect({ servers: `nats://127.0.0.1:${leafClient}` });
    const mirror = await new Kvm(leafConnection).create(buckets.catalog, { mirror: { name: buckets.catalog, domain: "hub" } });
    const seen = new Set<string>();
    const waiting = new Map<string, () => void>();
    let clientHoldsMs = NaN;
    const watch = await mirror.watch();
    void (async () => {
      for await (const entry of watch) {
        waiting.get(entry.key)?.();
        if (seen.size < entries.length) {
          seen.add(entry.key);
          if (seen.size === entries.length) clientHoldsMs = performance.now() - leafStarted;
        }
      }
    })();
    let leafHoldsMs = NaN;
    await poll(async () => {
      if (Number.isNaN(leafHoldsMs) && (await streamMessages(leafConnection)) >= entries.length) leafHoldsMs = performance.now() - leafStarted;
      return !Number.isNaN(leafHoldsMs) && !Number.isNaN(clientHoldsMs);
    }, 600_000, "the plain mirror to hold the catalog");
    const latencies = await measureChanges(kv, entries, changes, (key) => new Promise<void>((resolve) => waiting.set(key, resolve)));
    const serverRssMiB = rssMiB(leafServer.pid);
    watch.stop();
    // Without the leaf and its mirror, as the baseline's puts ran: the mirror's consumer would slow every write.
    await leafConnection.close();
    await leafServer.stop();
    const pipeline = new KvPuts({ connection: hubConnection, bucket: buckets.catalog });
    const pipelinedStarted = performance.now();
    await putAll(entries, 256, (key, value) => pipeline.put(key, value));
    const pipelinedPutsMs = performance.now() - pipelinedStarted;
    pipeline.close();
    await hubConnection.close();
    return { writeMs, putsMs, pipelinedPutsMs, leafHoldsMs, clientHoldsMs, latencies, serverRssMiB };
  } finally {
    await leafServer.stop().catch(() => undefined);
    await hub.stop().catch(() => undefined);
  }
}

const floorScript = join(import.meta.dirname, "node-floor.ts");

/**
 * Runs the floor (node-floor.ts) against the hub until it holds every object and has collected once: its time
 * from launch to holding, and its RSS then and at rest. With the agent's memory settings (bin/memory.js).
 */
async function measureFloor(hubLeafUrl: string, count: number): Promise<{ holdsMs: number; rssMiB: number; rssAtRestMiB: number }> {
  const [client, monitor] = await Promise.all([freePort(), freePort()]);
  const started = performance.now();
  const agent = memoryOf("agent")!;
  const args = [`--max-semi-space-size=${agent.semiSpaceMiB}`, floorScript, hubLeafUrl, String(count), tempDir("leafmesh-floor-"), String(client), String(monitor)];
  // The agent's compile cache too, as bin/leafmesh.js enables it: the floor does not strip its types at each start either.
  const env = withCompileCache(agent.oneArena ? { ...process.env, MALLOC_ARENA_MAX: "1" } : process.env);
  const child = spawn(nodeBinary, args, { stdio: ["ignore", "pipe", "pipe"], env });
  let output = "";
  let holdsMs = NaN;
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the floor did not hold the catalog in 600 s: ${output.slice(-2000)}`)), 600_000);
      child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
      child.stdout!.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        const held = /held (\d+)/.exec(output);
        if (held && Number.isNaN(holdsMs)) holdsMs = performance.now() - started;
        const rest = /rest (\d+)/.exec(output);
        if (!held || !rest) return;
        clearTimeout(timer);
        resolve({ holdsMs, rssMiB: Number(held[1]), rssAtRestMiB: Number(rest[1]) });
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`the floor exited (${code}) before it held the catalog: ${output.slice(-2000)}`));
      });
    });
  } finally {
    const exited = new Promise((resolve) => child.once("exit", resolve));
    if (child.exitCode === null) child.kill("SIGTERM");
    await exited;
  }
}

/** Asks the agent's DNS for `name` (A); true when it answers with `ip`. */
function dnsAnswers(port: number, name: string, ip: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket("udp4");
    const timer = setTimeout(() => finish(false), 200);
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      socket.close();
      resolve(ok);
    };
    socket.on("error", () => finish(false));
    socket.on("message", (message) => {
      try {
        const answer = dnsPacket.decode(message);
        finish((answer.answers ?? []).some((record) => record.type === "A" && record.data === ip));
      } catch {
        finish(false);
      }
    });
    socket.send(dnsPacket.encode({ type: "query", id: 7, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: "A", name }] }), port, "127.0.0.1");
  });
}

export interface LeafmeshOptions {
  /** Called once the agent holds the catalog, before the single changes (a heap snapshot, say). */
  onLoaded?: (agentPid: number) => Promise<void>;
  /** Called at each poll while the agent loads; a throw ends the wait (a wall reached: no use waiting). */
  whileLoading?: (agentPid: number) => void;
  /** @default 600_000 */
  loadTimeoutMs?: number;
}

export async function measureLeafmesh(count: number, entries: Entries, changes: number, options: LeafmeshOptions = {}): Promise<LeafmeshResult> {
  try {
    return await runLeafmesh(count, entries, changes, options);
  } finally {
    await stopAllProcesses(); // also when a step fails: a left-over agent holds thousands of ports
  }
}

async function runLeafmesh(count: number, entries: Entries, changes: number, options: LeafmeshOptions): Promise<LeafmeshResult> {
  const manifests = tempDir();
  writeManifests(manifests, count);
  const started = performance.now();
  const hub = await startHubProcess({ name: "hub-bench", manifests, waitReady: false });
  const hubConnection = await connect({ servers: hub.clientUrl, waitOnFirstConnect: true, reconnectTimeWait: 20, maxReconnectAttempts: -1 });
  let hubKv: KV | undefined;
  await poll(async () => {
    hubKv ??= await new Kvm(hubConnection).open(buckets.catalog).catch(() => undefined);
    return (await hubKv?.status().catch(() => undefined))?.values === entries.length;
  }, 600_000, "the hub to publish the catalog");
  const writeMs = performance.now() - started;
  const hubCpuMs = cpuMs(hub.child.pid);
  const hubRssMiB = rssMiB(hub.child.pid);

  const floor = await measureFloor(hub.leafUrl, entries.length);
  const node = "edge-bench";
  const [client, monitor, metrics, dns] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const agentStarted = performance.now();
  const dataDir = tempDir(`leafmesh-${node}-`);
  const agent = launch(node, ["agent", "--node", node, "--hub", hub.leafUrl, "--data", dataDir, "--nats-listen", `127.0.0.1:${client}`, "--monitor-listen", `127.0.0.1:${monitor}`, "--metrics-listen", `127.0.0.1:${metrics}`, "--dns", `127.0.0.1:${dns}`, "--upstream", "127.0.0.1:9", "--insecure"], `nats://127.0.0.1:${client}`, dataDir);
  const connection = await connect({ servers: agent.clientUrl, waitOnFirstConnect: true, reconnectTimeWait: 10, maxReconnectAttempts: -1 });
  const announced = new Set<string>();
  const waiting = new Map<string, () => void>();
  let controllerHoldsMs = NaN;
  let trafficHoldsMs = NaN;
  let lastCatalogEventAt = performance.now();
  connection.subscribe(`mesh.${node}.controller.catalog`, {
    callback: (_error, message) => {
      lastCatalogEventAt = performance.now();
      const key = message.json<{ key: string }>().key;
      waiting.get(key)?.();
      if (announced.size < entries.length) {
        announced.add(key);
        if (announced.size === entries.length) controllerHoldsMs = performance.now() - agentStarted;
      }
    },
  });
  const generations = new Map<number, number>();
  connection.subscribe(`mesh.${node}.traffic.listeners`, {
    callback: (_error, message) => {
      const event = message.json<{ generation: number; listeners: unknown[] }>();
      const total = (generations.get(event.generation) ?? 0) + event.listeners.length;
      generations.set(event.generation, total);
      if (total >= count && Number.isNaN(trafficHoldsMs)) trafficHoldsMs = performance.now() - agentStarted;
    },
  });
  const last = serviceName(count - 1);
  let leafHoldsMs = NaN;
  let dnsAnswersMs = NaN;
  // A failure to load keeps what the hub measured: the hub's cost stands whether or not an agent can hold it.
  const hubPart = { writeMs, hubCpuMs, hubRssMiB };
  // The catalog events are counted from this connection's subscription, which the agent's first events can beat:
  // this connection is made once the agent's nats-server takes clients, and its first events came 30–200 ms after
  // that in 50 fresh starts. Events go out in the mirror's order, so missing some of the first ones does not move
  // the time of the last. Once everything else is held and no event has come for 2 s, the agent's own count
  // (its status, asked once) says whether the last one seen was the last one.
  let missedEvents = 0;
  await poll(async () => {
    if (agent.child.exitCode !== null) throw new Error(`the agent exited: ${agent.output().slice(-2000)}`);
    options.whileLoading?.(agent.child.pid!);
    if (Number.isNaN(leafHoldsMs) && (await streamMessages(connection).catch(() => 0)) >= entries.length) leafHoldsMs = performance.now() - agentStarted;
    if (Number.isNaN(dnsAnswersMs) && (await dnsAnswers(dns, last.name, last.ip))) dnsAnswersMs = performance.now() - agentStarted;
    const quietMs = performance.now() - lastCatalogEventAt;
    if (Number.isNaN(controllerHoldsMs) && announced.size > 0 && [leafHoldsMs, trafficHoldsMs, dnsAnswersMs].every((value) => !Number.isNaN(value)) && quietMs > 2_000) {
      const objects = (await rpcRequest(connection, node, rpc.status, undefined, 5_000).catch(() => undefined))?.catalogObjects;
      if (objects === entries.length) [controllerHoldsMs, missedEvents] = [lastCatalogEventAt - agentStarted, entries.length - announced.size];
      else if (quietMs > 15_000) throw new Error(`this benchmark saw ${announced.size} of ${entries.length} catalog events and no more for 15 s; the agent says it holds ${objects ?? "(no answer)"} objects`);
    }
    return [leafHoldsMs, controllerHoldsMs, trafficHoldsMs, dnsAnswersMs].every((value) => !Number.isNaN(value));
  }, options.loadTimeoutMs ?? 600_000, "the agent to hold the catalog").catch((error: Error) => {
    throw Object.assign(error, { hub: hubPart });
  });
  const nodeHoldsMs = Math.max(controllerHoldsMs, trafficHoldsMs, dnsAnswersMs);
  const agentCpuLoadMs = cpuMs(agent.child.pid);
  const rssLoadedMiB = rssMiB(agent.child.pid);
  await options.onLoaded?.(agent.child.pid!);

  const latencies = await measureChanges(hubKv!, entries, changes, (key) => new Promise<void>((resolve) => waiting.set(key, resolve)));
  const rssAfterChangesMiB = rssMiB(agent.child.pid);
  // At rest: nothing in flight. The hub puts back what the changes above wrote past it at its next resync (every
  // 10 s: services/controller/publisher.ts), and the agent takes those as changes too; once no catalog event has
  // come for 12 s, that has happened, and so has the collection the agent makes 2 s after a large change.
  await poll(() => performance.now() - lastCatalogEventAt > 12_000, 60_000, "the agent's catalog to be quiet for 12 s", 250);
  const result: LeafmeshResult = {
    writeMs, hubCpuMs, hubRssMiB, leafHoldsMs, controllerHoldsMs, trafficHoldsMs, dnsAnswersMs, nodeHoldsMs, agentCpuLoadMs, rssLoadedMiB,
    floorHoldsMs: floor.holdsMs, floorRssMiB: floor.rssMiB, floorRssAtRestMiB: floor.rssAtRestMiB, missedEvents,
    rssMiB: rssAfterChangesMiB,
    rssAtRestMiB: rssMiB(agent.child.pid),
    serverRssMiB: rssMiB(Number(readFileSync(join(dataDir, "nats-server.pid"), "utf8"))),
    latencies,
  };
  await connection.close();
  await hubConnection.close();
  return result;
}
