/**
 * The publisher lease (lease.ts) on a real three-server JetStream cluster: at most one hub leads, and a hub that lost
 * the lease writes no catalog.
 *
 * nats-server 2.9.10 checks an expected last subject sequence above 0 only before it proposes a write to a clustered
 * stream (nats-io/nats-server#4320). A released lease left a delete marker, and `kv.create` on a marker is such an
 * update: hubs woken by one release that reached the stream within milliseconds all took the lease (measured on the
 * old lease, five runs: 5 to 20 of 40 rounds of six contenders had two to six leaders). Each then published the catalog from where
 * its own source stood.
 */
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Bus } from "../../bus/bus.ts";
import { buckets, leaseKeys } from "../../bus/subjects.ts";
import { ManualClock } from "../../lib/clock.ts";
import { capturedLog } from "../../test/support/log-lines.ts";
import { sampleService, writeManifest } from "../../test/support/manifests.ts";
import { startJetStreamCluster } from "../../test/support/jetstream-cluster.ts";
import { eventually } from "../../test/support/ports.ts";
import { tempDir } from "../../test/support/processes.ts";
import type { TestServer } from "../../test/support/trust-servers.ts";
import { KvLease, leaseBucketOptions } from "./lease.ts";
import { ManifestSource } from "./manifest-source.ts";
import { CatalogPublisher } from "./publisher.ts";

const servers: TestServer[] = [];
const connections: NatsConnection[] = [];
let cluster: TestServer[];
beforeAll(async () => {
  cluster = await startJetStreamCluster(["n1", "n2", "n3"], "leases");
  servers.push(...cluster);
  // Every server knows the metadata leader: a bucket asked for before waits out its client's 5 s timeout.
  for (const server of cluster) {
    await eventually(async () => ((await (await fetch(`http://127.0.0.1:${server.monitorPort}/jsz`)).json()) as { meta_cluster?: { leader?: string } }).meta_cluster?.leader, 20_000, `${server.name} to know the metadata leader`);
  }
}, 30_000);
afterAll(async () => {
  for (const connection of connections) await connection.close();
  for (const server of servers) await server.stop();
});

const connectTo = async (server: TestServer) => {
  const connection = await connect({ servers: server.clientUrl });
  connections.push(connection);
  return connection;
};

/** A hub's handle on a lease bucket (the publisher's, or one of a test's own: a bucket's TTL is set once): its own connection to one server. */
async function hubOn(server: TestServer, ttlMs: number, bucket: string = buckets.leases) {
  const connection = await connectTo(server);
  const kv = await eventually(() => new Kvm(connection).create(bucket, leaseBucketOptions(ttlMs, 3)).catch(() => undefined), 20_000, `the lease bucket ${bucket}`);
  return { kv, manager: await jetstreamManager(connection), bucket, key: leaseKeys.catalogPublisher };
}

describe("hubs woken together by a release", () => {
  it("take the lease one at a time: one leads, at once, whether the release removed the key or left a delete marker", { timeout: 60_000 }, async () => {
    // Six hubs, two on each server: their writes reach the stream's leader directly and over routes.
    // The bucket made by one first: six asking for a new stream at once on 2.9.10 left one waiting out its 5 s timeout.
    const first = await hubOn(cluster[0], 6_000, "leases-woken");
    const hubs = [first, ...(await Promise.all(Array.from({ length: 5 }, (_, index) => hubOn(cluster[(index + 1) % 3], 6_000, "leases-woken"))))];
    const { log } = capturedLog("error");
    const rounds = 40;
    const leadersPerRound: number[] = [];
    for (let round = 0; round < rounds; round++) {
      // Each lease's machine started without its timer: it tries once per tick(), as its timer would have it do.
      const holder = new KvLease({ ...hubs[round % 6], holder: "holder", log });
      holder.actor.start();
      await holder.tick();
      expect(holder.leading, `round ${round}: the holder to take the lease`).toBe(true);
      const contenders = hubs.map((hub, index) => new KvLease({ ...hub, holder: `hub-${index}`, log }));
      // Every other round the holder is an older hub (or an operator's `nats kv del`): its release leaves a delete marker.
      if (round % 2 === 1) {
        await hubs[round % 6].kv.delete(leaseKeys.catalogPublisher);
        holder.actor.stop();
      } else await holder.stop();
      // The others try at the same instant (a release is seen at each one's next tick, and their timers fall together
      // by chance; here they are made to).
      await Promise.all(contenders.map((contender) => (contender.actor.start(), contender.tick())));
      leadersPerRound.push(contenders.filter((contender) => contender.leading).length);
      for (const contender of contenders) await contender.stop();
    }
    // Before: rounds with two to six leaders at once, each sure it held the lease until its next renewal (2 s).
    expect(leadersPerRound.filter((leaders) => leaders > 1), `leaders per round: ${leadersPerRound.join(" ")}`).toEqual([]);
    // And released or marked, the lease was taken at once, by one of them (not after the key's TTL).
    expect(leadersPerRound).toEqual(leadersPerRound.map(() => 1));
  });
});

describe("a lease whose renewals stopped", () => {
  it("may not write once two thirds of its TTL passed without one, and may again after a renewal", { timeout: 30_000 }, async () => {
    const hub = await hubOn(cluster[0], 3_000, "leases-late");
    const clock = new ManualClock();
    const lease = new KvLease({ ...hub, holder: "hub-1", ttlMs: 3_000, log: capturedLog("error").log, clock });
    lease.actor.start();
    await lease.tick();
    expect(lease.leading).toBe(true);
    expect(lease.mayWrite()).toBe(true);
    clock.advance(2_000);
    expect(lease.leading).toBe(true);
    expect(lease.mayWrite()).toBe(false);
    expect(await lease.confirm()).toBe(true);
    expect(lease.mayWrite()).toBe(true);
    await lease.stop();
  });
});

describe("a publisher that lost its lease while it was not looking", () => {
  it("writes nothing over the newer leader: it renews before each batch, fails, and steps down", { timeout: 30_000 }, async () => {
    const ttlMs = 1_000;
    const connection = await connectTo(cluster[1]);
    const manifests = join(tempDir("leafmesh-lease-fence-"), "manifests");
    writeManifest(manifests, "first.yaml", sampleService({ name: "first", clusterIP: "198.19.0.10" }));
    const { log, lines } = capturedLog();
    const source = new ManifestSource({ path: manifests, log });
    // Its clock never moves: it renews nothing, as a hub paused (a long GC, a frozen VM) or cut off from its servers.
    const publisher = new CatalogPublisher({ connection, source, holder: "hub-old", bus: new Bus({ connection, node: "hub-old", log }), log, replicas: 3, leaseTtlMs: ttlMs, clock: new ManualClock() });
    await publisher.start();
    await eventually(() => publisher.leading && [...publisher.stored.keys()].some((key) => key.includes("first")), 20_000, "hub-old to lead and write the catalog");
    // Its lease expires on the servers; another hub takes it.
    const newer = new KvLease({ ...(await hubOn(cluster[2], ttlMs)), holder: "hub-new", ttlMs, log: capturedLog("error").log });
    newer.start();
    await eventually(() => newer.leading, 10_000, "hub-new to take the lease once hub-old's expired");
    expect(publisher.leading).toBe(true);
    // hub-old's source moves on (a manifest edited): it reconciles.
    writeManifest(manifests, "second.yaml", sampleService({ name: "second", clusterIP: "198.19.0.11" }));
    const written = () => lines.filter((line) => line.msg === "catalog written").length;
    const heldBack = () => lines.some((line) => String(line.msg).startsWith("catalog writes held back"));
    await eventually(() => written() > 1 || heldBack(), 10_000, "hub-old to reconcile");
    // Before: it still held `leading` (set at its last renewal) and wrote the second service beside hub-new.
    const keys = await (await new Kvm(connection).open(buckets.catalog)).keys();
    const catalog: string[] = [];
    for await (const key of keys) catalog.push(key);
    expect(catalog.filter((key) => key.includes("second")), "written by hub-old after hub-new took the lease").toEqual([]);
    expect(lines.some((line) => line.msg === "lease renewal failed; stepping down")).toBe(true);
    expect(publisher.leading).toBe(false);
    await newer.stop();
    await publisher.stop();
  });
});
