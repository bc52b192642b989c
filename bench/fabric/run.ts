/**
 * Fabric benchmark (issue 2): a catalog of 10,000 Services and 10,000
 * EndpointSlices (3 endpoints each). Measures, for leafmesh (hub and agent
 * processes) and beside it for plain NATS (the same nats-server hub and leaf,
 * plain KV puts and a plain mirror, no leafmesh process):
 * - time until a fresh agent's leaf holds the whole catalog,
 * - hub → agent propagation latency of single changes (p50/p99 over 1,000),
 * - the agent's resident memory.
 *
 * Run: `node bench/fabric/run.ts` (or `npm run bench`).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { catalogKey, encodeCatalogObject, type EndpointSlice, type Service } from "../../bus/catalog.ts";
import { NatsServerSupervisor } from "../../nats/supervisor.ts";
import { buckets } from "../../bus/subjects.ts";
import { silentLogger } from "../../lib/log.ts";
import { renderHubConfig, renderLeafConfig, toLeafUrl } from "../../nats/render.ts";
import { writeManifest } from "../../test/support/manifests.ts";
import { freePort } from "../../test/support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "../../test/support/processes.ts";
import { percentile, ratio, writeTables, type BenchTable } from "../table.ts";

const serviceCount = Number(process.env.LEAFMESH_BENCH_SERVICES ?? 10_000);
const changeCount = Number(process.env.LEAFMESH_BENCH_CHANGES ?? 1_000);

function rawCatalog(count: number): object[] {
  const objects: object[] = [];
  for (let index = 0; index < count; index++) {
    const name = `svc-${index}`;
    objects.push(
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name, namespace: "bench" },
        spec: { clusterIP: `198.19.${index >> 8}.${index & 255}`, ports: [{ name: "http", port: 80, targetPort: 8080 }] },
      },
      {
        apiVersion: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        metadata: { name: `${name}-abc`, namespace: "bench", labels: { "kubernetes.io/service-name": name } },
        addressType: "IPv4",
        endpoints: [0, 1, 2].map((replica) => ({ addresses: [`198.18.${(index >> 8) & 255}.${(index & 255) ^ replica}`], nodeName: `edge-${replica}`, conditions: { ready: true } })),
        ports: [{ name: "http", port: 8080, protocol: "TCP" }],
      },
    );
  }
  return objects;
}

/** The same catalog as normalised objects, for the plain-NATS baseline's puts. */
function normalisedCatalog(count: number): [string, Service | EndpointSlice][] {
  const entries: [string, Service | EndpointSlice][] = [];
  for (let index = 0; index < count; index++) {
    const name = `svc-${index}`;
    const service: Service = {
      kind: "Service", namespace: "bench", name, type: "ClusterIP", headless: false, clusterIPs: [`198.19.${index >> 8}.${index & 255}`], ipFamilies: ["IPv4"],
      ports: [{ name: "http", protocol: "TCP", port: 80, targetPort: 8080 }], sessionAffinity: "None", sessionAffinityTimeoutSeconds: 10800, publishNotReadyAddresses: false, labels: {}, annotations: {},
    };
    const slice: EndpointSlice = {
      kind: "EndpointSlice", namespace: "bench", name: `${name}-abc`, serviceName: name, addressType: "IPv4",
      endpoints: [0, 1, 2].map((replica) => ({ addresses: [`198.18.${(index >> 8) & 255}.${(index & 255) ^ replica}`], nodeName: `edge-${replica}`, conditions: { ready: true, serving: true, terminating: false } })),
      ports: [{ name: "http", protocol: "TCP", port: 8080 }], labels: { "kubernetes.io/service-name": name }, annotations: {},
    };
    entries.push([catalogKey(service), service], [catalogKey(slice), slice]);
  }
  return entries;
}

function rssMiB(pid: number | undefined): number {
  if (!pid) return NaN;
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match ? Number(match[1]) / 1024 : NaN;
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function mirrorCount(connection: NatsConnection): Promise<number> {
  const jsm = await jetstreamManager(connection);
  return (await jsm.streams.info(`KV_${buckets.catalog}`).catch(() => undefined))?.state.messages ?? 0;
}

/** Puts changed values one at a time and measures until `seen(key)` resolves for each. */
async function measureChanges(kv: KV, entries: [string, Service | EndpointSlice][], waitSeen: (key: string) => Promise<void>): Promise<number[]> {
  const latencies: number[] = [];
  for (let change = 0; change < changeCount; change++) {
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

async function benchLeafmesh(entries: [string, Service | EndpointSlice][]) {
  try {
    return await measureLeafmesh(entries);
  } finally {
    await stopAllProcesses(); // also when a step fails: a left-over agent holds 10,000 ports
  }
}

async function measureLeafmesh(entries: [string, Service | EndpointSlice][]) {
  const manifests = tempDir();
  const objects = rawCatalog(serviceCount);
  for (let file = 0; file < 20; file++) writeManifest(manifests, `part-${file}.yaml`, objects.slice((file * objects.length) / 20, ((file + 1) * objects.length) / 20));
  const publishStarted = performance.now();
  const hub = await startHubProcess({ name: "hub-bench", manifests });
  const hubConnection = await hub.connection();
  const hubKv = await new Kvm(hubConnection).open(buckets.catalog);
  await waitFor(async () => (await hubKv.status()).values === serviceCount * 2, 300_000, "the hub to publish the catalog");
  const publishMs = performance.now() - publishStarted;

  const agentStarted = performance.now();
  const agent = await startAgentProcess({ node: "edge-bench", hubs: [hub.leafUrl] });
  const agentConnection = await agent.connection();
  await waitFor(async () => (await mirrorCount(agentConnection)) >= serviceCount * 2, 300_000, "the agent's leaf to hold the catalog");
  const leafHoldsMs = performance.now() - agentStarted;
  // A busy agent may let one status request time out while it takes in 20,000 objects: ask again.
  await waitFor(async () => (await agent.view().catch(() => undefined))?.status.catalogObjects === serviceCount * 2, 300_000, "the agent's controller to hold the catalog");
  const controllerHoldsMs = performance.now() - agentStarted;

  const waiting = new Map<string, () => void>();
  agentConnection.subscribe("mesh.edge-bench.controller.catalog", {
    callback: (_error, message) => waiting.get(message.json<{ key: string }>().key)?.(),
  });
  await agentConnection.flush();
  const latencies = await measureChanges(hubKv, entries, (key) => new Promise<void>((resolve) => waiting.set(key, resolve)));
  const agentNodeRss = rssMiB(agent.child.pid);
  const agentServerRss = rssMiB(Number(readFileSync(join(agent.dataDir, "nats-server.pid"), "utf8")));
  return { publishMs, leafHoldsMs, controllerHoldsMs, latencies, agentNodeRss, agentServerRss };
}

async function benchPlainNats(entries: [string, Service | EndpointSlice][]) {
  const dir = tempDir();
  const [client, leaf, monitor, leafClient, leafMonitor] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const hub = new NatsServerSupervisor({
    name: "plain-hub", dataDir: join(dir, "hub"), monitor: { host: "127.0.0.1", port: monitor }, log: silentLogger(),
    configText: renderHubConfig({ serverName: "plain-hub", storeDir: join(dir, "hub/js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } }),
  });
  await hub.start();
  const hubConnection = await connect({ servers: `nats://127.0.0.1:${client}` });
  const kv = await new Kvm(hubConnection).create(buckets.catalog, { history: 1 });
  const putsStarted = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < entries.length) {
        const [key, object] = entries[next++];
        await kv.put(key, encodeCatalogObject(object));
      }
    }),
  );
  const putsMs = performance.now() - putsStarted;

  const leafStarted = performance.now();
  const leafServer = new NatsServerSupervisor({
    name: "plain-leaf", dataDir: join(dir, "leaf"), monitor: { host: "127.0.0.1", port: leafMonitor }, log: silentLogger(),
    configText: renderLeafConfig({ serverName: "plain-leaf", domain: "plain-leaf", storeDir: join(dir, "leaf/js"), client: { host: "127.0.0.1", port: leafClient }, monitor: { host: "127.0.0.1", port: leafMonitor }, upstreams: [toLeafUrl(`nats://127.0.0.1:${leaf}`)] }),
  });
  await leafServer.start();
  const leafConnection = await connect({ servers: `nats://127.0.0.1:${leafClient}` });
  const mirror = await new Kvm(leafConnection).create(buckets.catalog, { mirror: { name: buckets.catalog, domain: "hub" } });
  await waitFor(async () => (await mirrorCount(leafConnection)) >= entries.length, 300_000, "the plain mirror to hold the catalog");
  const leafHoldsMs = performance.now() - leafStarted;

  const waiting = new Map<string, () => void>();
  const watch = await mirror.watch({ include: "updates" });
  void (async () => {
    for await (const entry of watch) waiting.get(entry.key)?.();
  })();
  const latencies = await measureChanges(kv, entries, (key) => new Promise<void>((resolve) => waiting.set(key, resolve)));
  const serverRss = rssMiB(leafServer.pid);
  watch.stop();
  await leafConnection.close();
  await hubConnection.close();
  await leafServer.stop();
  await hub.stop();
  return { putsMs, leafHoldsMs, latencies, serverRss };
}

export async function runFabricBench(): Promise<BenchTable> {
  const entries = normalisedCatalog(serviceCount);
  const plain = await benchPlainNats(entries);
  const leafmesh = await benchLeafmesh(entries);
  const p = (values: number[], q: number) => Math.round(percentile(values, q) * 100) / 100;
  return {
    title: `Fabric: catalog of ${serviceCount.toLocaleString("en-US")} Services + ${serviceCount.toLocaleString("en-US")} EndpointSlices (3 endpoints each)`,
    columns: ["metric", "leafmesh", "plain NATS (same servers)", "leafmesh / plain"],
    rows: [
      ["catalog written at the hub (ms; leafmesh includes starting the hub)", Math.round(leafmesh.publishMs), Math.round(plain.putsMs), ratio(leafmesh.publishMs, plain.putsMs)],
      ["fresh agent: leaf holds the whole catalog (ms; leafmesh includes starting the agent)", Math.round(leafmesh.leafHoldsMs), Math.round(plain.leafHoldsMs), ratio(leafmesh.leafHoldsMs, plain.leafHoldsMs)],
      ["fresh agent: controller serves the whole catalog (ms)", Math.round(leafmesh.controllerHoldsMs), "—", "—"],
      [`single change hub → agent, p50 (ms, ${changeCount} changes)`, p(leafmesh.latencies, 50), p(plain.latencies, 50), ratio(percentile(leafmesh.latencies, 50), percentile(plain.latencies, 50))],
      [`single change hub → agent, p99 (ms, ${changeCount} changes)`, p(leafmesh.latencies, 99), p(plain.latencies, 99), ratio(percentile(leafmesh.latencies, 99), percentile(plain.latencies, 99))],
      ["agent RSS: leafmesh process (MiB)", Math.round(leafmesh.agentNodeRss), "—", "—"],
      ["agent RSS: its nats-server (MiB)", Math.round(leafmesh.agentServerRss), Math.round(plain.serverRss), ratio(leafmesh.agentServerRss, plain.serverRss)],
    ],
    notes: [
      "leafmesh: `leafmesh hub --manifests` (20 YAML files parsed, validated, written under the publisher lease) and a fresh `leafmesh agent`; changes are KV puts at the hub, timed until the agent's controller publishes the catalog event on its bus.",
      "plain NATS: the same nats-server configs with no leafmesh process: 64 concurrent KV puts, a KV mirror on the leaf, changes timed until the mirror's watcher sees them.",
    ],
  };
}

if (import.meta.main) {
  const table = await runFabricBench();
  const written = writeTables("fabric", [table]);
  console.log(readFileSync(written.markdown, "utf8"));
  process.exit(0);
}
