/**
 * Curve (b): cost at the hub against the number of nodes on it. Each simulated
 * node is a light NATS client of the hub doing what an agent does upstream,
 * through the agent's own code:
 * - its node record in KV `mesh-nodes`, put when it changes and kept alive every 45–60 s, and a watch of
 *   every other node's record (services/tunnel/node-directory.ts NodeDirectory);
 * - the catalog followed from its first revision (bus/kv-follow.ts followBucket,
 *   the controller's follower). An agent's leaf server mirrors the catalog; at
 *   the hub a mirror is one push consumer with flow control per node, as this
 *   watch is, so the hub's work per node is the same.
 * Measured: the hub (leafmesh hub process + its nats-server) CPU and RSS while
 * the nodes join and at rest with their refreshes, and single catalog changes
 * hub → every node (p50/p99 over node × change, and until the last node has it).
 *
 * The nodes run in this process on an insecure hub (one account): with node
 * credentials every node has an account of its own that imports from every
 * other (trust/claims.ts), and issuing 1,000 of them is out of reach here
 * (bench/scale/keys-curve.ts measures that cost on its own).
 */
import { readFileSync } from "node:fs";
import { Writable } from "node:stream";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { encodeCatalogObject } from "../../bus/catalog.ts";
import { followBucket, type BucketFollower } from "../../bus/kv-follow.ts";
import { buckets, hubDomain } from "../../bus/subjects.ts";
import type { NodeRecord } from "../../bus/node-record.ts";
import { meshProtocol } from "../../bus/protocol.ts";
import { systemClock } from "../../lib/clock.ts";
import { createLogger } from "../../lib/log.ts";
import { NodeDirectory } from "../../services/tunnel/node-directory.ts";
import { startHubProcess, stopAllProcesses, tempDir } from "../../test/support/processes.ts";
import { normalisedCatalog, writeManifests } from "../fabric/catalog.ts";
import { cpuMs, rssMiB } from "../fabric/process-stats.ts";
import { percentile } from "../table.ts";

export interface NodesPoint {
  nodes: number;
  services: number;
  /** First node connecting → every node holds the catalog and its peers' records. */
  joinMs: number;
  /** Hub CPU (leafmesh hub + nats-server) while the nodes joined, ms. */
  hubJoinCpuMs: number;
  /** Hub CPU at rest (refreshes and their fan-out), ms per second: 1,000 = one core. */
  hubRestCpuMsPerS: number;
  benchRestCpuMsPerS: number;
  hubServerRssMiB: number;
  hubProcessRssMiB: number;
  changeP50: number;
  changeP99: number;
  /** Per change: until the last node had it. */
  lastNodeP50: number;
  lastNodeP99: number;
  changes: number;
  failed?: string;
}

interface LightNode {
  connection: NatsConnection;
  directory: NodeDirectory;
  follower: BucketFollower;
  catalogEntries: number;
}

const poll = async (check: () => boolean, timeoutMs: number, what: string): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
};

function nodeRecord(node: string, index: number): NodeRecord {
  return {
    node, peerId: `12D3KooWsim${index}`, listen: [`/ip4/10.${index >> 16 & 255}.${index >> 8 & 255}.${index & 255}/tcp/4101`],
    observed: [{ host: `203.0.113.${index & 255}`, port: 40_000 + (index % 20_000) }], nat: "port-restricted", relay: true, pskFingerprint: "0000000000000000", protocol: meshProtocol, at: new Date().toISOString(),
  };
}

export async function measureNodesCurve(counts: number[], services: number, changes: number, restSeconds: number): Promise<NodesPoint[]> {
  const points: NodesPoint[] = [];
  for (const nodes of counts) {
    console.error(`scale: ${nodes} simulated nodes on one hub (${services} services)`);
    try {
      points.push(await measureNodes(nodes, services, changes, restSeconds));
    } catch (error) {
      const failed = (error as Error).message.split("\n")[0];
      console.error(`scale: ${nodes} nodes: ${failed}`);
      points.push({ nodes, services, joinMs: NaN, hubJoinCpuMs: NaN, hubRestCpuMsPerS: NaN, benchRestCpuMsPerS: NaN, hubServerRssMiB: NaN, hubProcessRssMiB: NaN, changeP50: NaN, changeP99: NaN, lastNodeP50: NaN, lastNodeP99: NaN, changes, failed });
    } finally {
      await stopAllProcesses();
    }
  }
  return points;
}

async function measureNodes(count: number, services: number, changes: number, restSeconds: number): Promise<NodesPoint> {
  const manifests = tempDir();
  writeManifests(manifests, services);
  const entries = normalisedCatalog(services);
  const hub = await startHubProcess({ name: "hub-scale", manifests });
  const serverPid = Number(readFileSync(join(hub.dataDir, "nats-server.pid"), "utf8"));
  const hubCpu = () => cpuMs(hub.child.pid) + cpuMs(serverPid);
  const hubConnection = await connect({ servers: hub.clientUrl });
  const hubKv: KV = await new Kvm(hubConnection).open(buckets.catalog);
  for (let attempt = 0; (await hubKv.status()).values < entries.length; attempt++) {
    if (attempt > 1_200) throw new Error("the hub never published the catalog");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }

  // Arrival times of the change awaited now, by node.
  let awaitedKey: string | undefined;
  let arrivals: number[] = [];
  const lightNodes: LightNode[] = [];
  // The simulated nodes' warnings, counted by message (printed with the progress while they join).
  const warnings = new Map<string, number>();
  const log = createLogger({
    level: "warn",
    destination: new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split("\n")) {
          if (!line) continue;
          const { msg, err } = JSON.parse(line) as { msg: string; err?: { message?: string } | string };
          const key = `${msg}${err ? `: ${typeof err === "string" ? err : err.message}` : ""}`.slice(0, 160);
          warnings.set(key, (warnings.get(key) ?? 0) + 1);
        }
        done();
      },
    }),
  });
  const startLightNode = async (index: number): Promise<LightNode> => {
    const node = `sim-${index}`;
    const connection = await connect({ servers: hub.clientUrl, name: node, reconnectTimeWait: 500, maxReconnectAttempts: -1 }).catch((error: Error) => {
      throw new Error(`${node} could not connect (${error.message}) with ${lightNodes.length} nodes joined, the hub's nats-server at ${Math.round(rssMiB(serverPid))} MiB`);
    });
    const directory = new NodeDirectory({ nats: connection, node, log, clock: systemClock, record: () => nodeRecord(node, index) });
    directory.start();
    const kv = await new Kvm(jetstream(connection, { domain: hubDomain, checkAPI: false })).open(buckets.catalog);
    const light: LightNode = { connection, directory, follower: undefined as unknown as BucketFollower, catalogEntries: 0 };
    light.follower = followBucket({
      kv, log,
      onEntry: (entry) => {
        light.catalogEntries++;
        if (entry.key === awaitedKey) arrivals.push(performance.now());
      },
    });
    return light;
  };

  const cpuBeforeJoin = hubCpu();
  const joinStarted = performance.now();
  const joined = () => {
    const catalogs = lightNodes.filter((light) => light.catalogEntries >= entries.length).length;
    const peers = lightNodes.map((light) => light.directory.all().length).sort((a, b) => a - b);
    return `${catalogs} hold the catalog; peers' records: fewest ${peers[0]}, median ${peers[peers.length >> 1]}`;
  };
  const progress = setInterval(() => {
    console.error(`scale: ${count} nodes, ${Math.round((performance.now() - joinStarted) / 1000)} s: ${joined()}; hub CPU ${Math.round(hubCpu() - cpuBeforeJoin)} ms; warnings ${JSON.stringify(Object.fromEntries(warnings))}`);
  }, 10_000);
  // In waves of 50, each once the wave before holds the catalog: nodes that join a running mesh. A thousand
  // asking at once (a hub restart) is another test: on two shared cores the hub then answers their consumer
  // requests after nats.js's 5 s timeout, makes each consumer anyway, and is asked again (docs/limits.md).
  try {
    for (let start = 0; start < count; start += 50) {
      const wave = await Promise.all(Array.from({ length: Math.min(50, count - start) }, (_, offset) => startLightNode(start + offset)));
      lightNodes.push(...wave);
      await poll(() => wave.every((light) => light.catalogEntries >= entries.length), 120_000, `nodes ${start}–${start + wave.length - 1} to hold the catalog`);
    }
  } catch (error) {
    clearInterval(progress);
    throw error;
  }
  await poll(() => lightNodes.every((light) => light.catalogEntries >= entries.length && light.directory.all().length >= count - 1), 120_000, `${count} nodes to hold the catalog and every peer's record`).catch((error: Error) => {
    throw new Error(`${error.message} (${joined()}; the hub's nats-server at ${Math.round(rssMiB(serverPid))} MiB)`);
  }).finally(() => clearInterval(progress));
  const joinMs = performance.now() - joinStarted;
  const hubJoinCpuMs = hubCpu() - cpuBeforeJoin;

  // At rest: every node puts its unchanged record again every 45–60 s (its keep-alive), and every record reaches every node.
  const restCpuBefore = hubCpu();
  const benchBefore = process.cpuUsage();
  const restStarted = performance.now();
  await new Promise((resolve) => setTimeout(resolve, restSeconds * 1000));
  const restElapsedS = (performance.now() - restStarted) / 1000;
  const hubRestCpuMsPerS = (hubCpu() - restCpuBefore) / restElapsedS;
  const benchUsage = process.cpuUsage(benchBefore);
  const benchRestCpuMsPerS = (benchUsage.user + benchUsage.system) / 1000 / restElapsedS;

  const latencies: number[] = [];
  const lastNode: number[] = [];
  for (let change = 0; change < changes; change++) {
    const [key, object] = entries[(change * 2) % entries.length];
    awaitedKey = key;
    arrivals = [];
    const started = performance.now();
    await hubKv.put(key, encodeCatalogObject({ ...object, labels: { ...object.labels, change: String(change) } }));
    await poll(() => arrivals.length >= count, 60_000, `change ${change} at every node`);
    for (const at of arrivals) latencies.push(at - started);
    lastNode.push(Math.max(...arrivals) - started);
  }
  awaitedKey = undefined;
  const point: NodesPoint = {
    nodes: count, services, joinMs, hubJoinCpuMs, hubRestCpuMsPerS, benchRestCpuMsPerS,
    hubServerRssMiB: rssMiB(serverPid), hubProcessRssMiB: rssMiB(hub.child.pid),
    changeP50: percentile(latencies, 50), changeP99: percentile(latencies, 99),
    lastNodeP50: percentile(lastNode, 50), lastNodeP99: percentile(lastNode, 99), changes,
  };
  await Promise.all(lightNodes.map(async (light) => {
    light.directory.stop();
    await light.follower.stop();
    await light.connection.close().catch(() => undefined);
  }));
  await hubConnection.close();
  return point;
}
