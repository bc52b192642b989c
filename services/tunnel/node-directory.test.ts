/**
 * The node directory on a real hub and leaves (test/support/tunnel-fabric.ts): a record is put when it
 * changes or its keep-alive is due, never at every look, so N nodes cost N² / keep-alive deliveries a
 * second, not N² / 5 s (docs/limits.md, wall 2); a put that fails is tried again at the next look; a
 * peer's record is kept past its TTL while the hubs are away, and expires when they are not.
 *
 * Time is a ManualClock: each look is `advance(refreshMs)`, then the look's network work is awaited
 * (`onAlive` ends every look).
 */
import { readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { NatType, NodeRecord } from "../../bus/node-record.ts";
import { meshProtocol } from "../../bus/protocol.ts";
import { Kvm } from "@nats-io/kv";
import { jetstream } from "@nats-io/jetstream";
import { hubDomain } from "../../bus/subjects.ts";
import { ManualClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { startFabric, type TestFabric } from "../../test/support/tunnel-fabric.ts";
import { NodeDirectory } from "./node-directory.ts";

const refreshMs = 5_000;
const keepaliveMs = 60_000;
const ttlMs = 150_000;

interface Member {
  directory: NodeDirectory;
  /** Looks finished (onAlive calls). */
  looks: number;
  /** Records of other nodes that arrived, by node. */
  arrivals: Map<string, number>;
  /** The NAT in each record of another node that arrived, by node, in order. */
  nats: Map<string, NatType[]>;
  observed: { host: string; port: number }[];
  nat: NatType;
}

describe("node directory", () => {
  let fabric: TestFabric;
  const members: Member[] = [];

  beforeAll(async () => {
    fabric = await startFabric({ hubs: 1, leaves: ["edge-a", "edge-b"] });
  }, 60_000);
  afterEach(() => {
    for (const member of members.splice(0)) member.directory.stop();
  });
  afterAll(async () => {
    await fabric?.stop();
  });

  /** A node on leaf `leaf` (edge-a or edge-b); names differ per test, as the bucket outlives each. */
  async function member(node: string, leaf: string, clock: ManualClock, random = () => 0, options: { nat?: NatType; requestTimeoutMs?: number } = {}): Promise<Member> {
    const nats = await fabric.connect(leaf);
    const self: Member = { directory: undefined as unknown as NodeDirectory, looks: 0, arrivals: new Map(), nats: new Map(), observed: [{ host: "203.0.113.7", port: 40_001 }], nat: options.nat ?? "port-restricted" };
    const record = (): NodeRecord => ({
      node, peerId: `12D3KooW${node}`, listen: ["/ip4/198.18.0.1/tcp/4101"], observed: self.observed, nat: self.nat,
      relay: true, pskFingerprint: "0000000000000000", protocol: meshProtocol, at: new Date(clock.now()).toISOString(),
    });
    self.directory = new NodeDirectory({
      nats, node, log: silentLogger(), clock, record, refreshMs, keepaliveMs, ttlMs, random, requestTimeoutMs: options.requestTimeoutMs,
      onRecord: (arrived) => {
        self.arrivals.set(arrived.node, (self.arrivals.get(arrived.node) ?? 0) + 1);
        self.nats.set(arrived.node, [...(self.nats.get(arrived.node) ?? []), arrived.nat]);
      },
      onAlive: () => void self.looks++,
    });
    members.push(self);
    self.directory.start();
    await eventually(() => self.looks === 1, 15_000, `${node}'s first look`);
    return self;
  }

  /** One look of every member: the clock moves by refreshMs and each member's look is awaited. */
  async function look(clock: ManualClock, ...all: Member[]): Promise<void> {
    const before = all.map((one) => one.looks);
    clock.advance(refreshMs);
    await eventually(() => all.every((one, index) => one.looks > before[index]), 15_000, "every member's look");
  }

  it("puts an unchanged record only when its keep-alive is due, and a peer receives it that often", async () => {
    const clock = new ManualClock(Date.now());
    const a = await member("a1", "edge-a", clock);
    const b = await member("b1", "edge-b", clock);
    await eventually(() => b.arrivals.get("a1") === 1 && a.arrivals.get("b1") === 1, 10_000, "each node to hold the other's record");
    expect(a.directory.puts).toBe(1);

    // random 0: the keep-alive falls at 3/4 of keepaliveMs (45 s). Eight looks (40 s) put nothing.
    for (let index = 0; index < 8; index++) await look(clock, a, b);
    expect(a.directory.puts).toBe(1);
    expect(b.arrivals.get("a1")).toBe(1);
    // Its record is still fresh at B: 40 s is within the TTL.
    expect(b.directory.get("a1")?.peerId).toBe("12D3KooWa1");

    await look(clock, a, b); // 45 s: the keep-alive
    expect(a.directory.puts).toBe(2);
    await eventually(() => b.arrivals.get("a1") === 2, 10_000, "B to receive A's keep-alive");
    expect(Date.parse(b.directory.get("a1")!.at)).toBe(clock.now());
  });

  it("puts a changed record at the next look, whatever its keep-alive", async () => {
    const clock = new ManualClock(Date.now());
    const a = await member("a2", "edge-a", clock);
    const b = await member("b2", "edge-b", clock);
    await eventually(() => b.directory.get("a2") !== undefined, 10_000, "B to hold A's record");
    await look(clock, a, b);
    expect(a.directory.puts).toBe(1);

    a.observed = [{ host: "203.0.113.7", port: 40_002 }]; // its NAT mapped it anew
    await look(clock, a, b);
    expect(a.directory.puts).toBe(2);
    await eventually(() => b.directory.get("a2")?.observed[0]?.port === 40_002, 10_000, "B to see A's new address");
    await look(clock, a, b);
    expect(a.directory.puts).toBe(2);
  });

  it("never puts an older record over a newer one: a put answered too late is sent again as the record is now, not as it was", async () => {
    // The bucket exists (the hubs make it), so this node never made it: a put that times out is followed by making it and a put again.
    await new Kvm(await fabric.connect("hub-1")).create("mesh-nodes", { history: 1, ttl: ttlMs });
    // The peer on a clock of its own: only the node's looks are stepped once the hub stops.
    const peerClock = new ManualClock(Date.now());
    const peer = await member("p10", "edge-b", peerClock);
    const clock = new ManualClock(Date.now());
    const node = await member("n10", "edge-a", clock, () => 0, { nat: "unknown", requestTimeoutMs: 1_000 });
    // A first look may fail on a fabric just started (this test run alone): another look of both until each is through.
    await eventually(() => {
      if (node.directory.puts > 0 && peer.directory.get("n10")) return true;
      for (const each of [clock, peerClock]) each.advance(refreshMs);
      return false;
    }, 10_000, "the peer to hold the node's record");
    // What the node sends towards the hub, seen on its leaf.
    const leaf = await fabric.connect("edge-a");
    const sent: { subject: string; data: string }[] = [];
    const watching = leaf.subscribe("$JS.hub.API.>", { callback: (_error, message) => void sent.push({ subject: message.subject, data: message.string() }) });
    await leaf.flush();
    const hub = fabric.hubs[0].server.pid!;
    // A hub too busy to answer for a second (short of its leaf links' pings giving up).
    process.kill(hub, "SIGSTOP");
    try {
      // The keep-alive falls due (random 0: at 3/4 of keepaliveMs), NAT still unknown: no answer within the put's time.
      clock.advance(keepaliveMs * 0.75);
      await eventually(() => sent.some((message) => /\.STREAM\.INFO\./.test(message.subject)), 10_000, "the node's put to time out, and the node to look for the bucket");
      // Its NAT was measured meanwhile: the next look puts the record with it, behind the first.
      node.nat = "full-cone";
      clock.advance(refreshMs);
      await eventually(() => sent.some((message) => message.data.includes('"full-cone"')), 10_000, "the record with the NAT to go out");
    } finally {
      process.kill(hub, "SIGCONT");
      watching.unsubscribe();
    }
    // The hub answers in order: the unanswered put, the bucket's info, the record with the NAT; then the node's put again.
    await eventually(() => node.directory.puts >= 3, 10_000, "the node's puts to be answered");
    const stored = await (await new Kvm(await fabric.connect("hub-1")).open("mesh-nodes")).get("n10");
    const last = JSON.parse(stored!.string()) as NodeRecord;
    await eventually(() => peer.directory.get("n10")?.at === last.at, 10_000, "the peer to hold the node's last record");
    // The node's last record keeps the NAT it knows, and the peer's view never went back to one from before it.
    expect(last.nat).toBe("full-cone");
    const seen = peer.nats.get("n10")!;
    expect(seen.slice(seen.indexOf("full-cone"))).not.toContain("unknown");
  }, 30_000);

  it("keeps its record alive every 20 s while a peer from before protocol levels is listed, which drops a record 30 s old", async () => {
    // Measured against a leafmesh of 8875959 (2026-12-05): it counts a record as gone 30 s after the time written in it,
    // and lost a newer node, which put its record every 45-60 s, for 15-30 s of every minute.
    const clock = new ManualClock(Date.now());
    const a = await member("a11", "edge-a", clock);
    const older = readFileSync(resolve(import.meta.dirname, "../../test/fixtures/node-record-before-levels.json"));
    const kv = await new Kvm(await fabric.connect("hub-1")).open("mesh-nodes");
    await kv.put("edge-old", older);
    await eventually(() => a.arrivals.get("edge-old") === 1, 10_000, "A to hold the older node's record");
    expect(a.directory.puts).toBe(1);
    // random 0: at 3/4 of 20 s, the look at 15 s puts; at 60 s it would wait for 45 s.
    for (let index = 0; index < 3; index++) await look(clock, a);
    expect(a.directory.puts).toBe(2);
    // The older node stops (a clean stop deletes its record): the keep-alive goes back to its own pace.
    await kv.delete("edge-old");
    await eventually(() => a.directory.get("edge-old") === undefined, 10_000, "A to drop the older node's record");
    for (let index = 0; index < 8; index++) await look(clock, a);
    expect(a.directory.puts).toBe(2);
  });

  it("judges a peer's record fresh by when it arrived, not by the time written in it on the peer's clock", async () => {
    const clock = new ManualClock(Date.now());
    // Edge boxes without an RTC or NTP: one 10 minutes slow, one 10 minutes fast.
    const a = await member("a7", "edge-a", clock);
    const slow = await member("b7", "edge-b", new ManualClock(Date.now() - 600_000));
    const fast = await member("c7", "edge-b", new ManualClock(Date.now() + 600_000));
    await eventually(() => (a.directory.get("b7") && a.directory.get("c7") && slow.directory.get("a7") && fast.directory.get("b7") ? true : undefined), 10_000, "every node to hold the others' records");
    // How far each peer's clock is from A's, as their records tell (for what they sign with their time: punch-proof.ts).
    expect(Math.abs(a.directory.clockOffsetOf("b7")! - 600_000)).toBeLessThan(5_000);
    expect(Math.abs(a.directory.clockOffsetOf("c7")! + 600_000)).toBeLessThan(5_000);
    // A watch begun after the records were written takes them as they are in the bucket, aged by its timestamps.
    const later = await member("d7", "edge-a", clock);
    await eventually(() => (later.directory.get("b7") && later.directory.get("c7") ? true : undefined), 10_000, "a node started later to hold both records");
    // The fast node stops: its record expires on this node's clock, where the time written in it is still to come.
    fast.directory.stop();
    for (let elapsed = 0; elapsed <= ttlMs; elapsed += refreshMs) await look(clock, a);
    expect(a.directory.get("c7")).toBeUndefined();
    expect(a.directory.all().map((record) => record.node)).not.toContain("c7");
  }, 60_000);

  it("keeps its keep-alives and its peers through its wall clock set an hour back, then ten minutes on (NTP)", async () => {
    const clock = new ManualClock(Date.now());
    const a = await member("a9", "edge-a", clock);
    const b = await member("b9", "edge-b", clock);
    await eventually(() => (a.directory.get("b9") && b.directory.get("a9") ? true : undefined), 10_000, "each node to hold the other's record");
    clock.jump(-3_600_000);
    // Past a keep-alive: A puts its record again, an hour of wall clock "before" the last one.
    for (let elapsed = 0; elapsed <= keepaliveMs; elapsed += refreshMs) await look(clock, a, b);
    expect(a.directory.puts).toBe(2);
    expect(b.directory.puts).toBe(2);
    clock.jump(3_600_000 + 600_000);
    await look(clock, a, b);
    // Ten minutes on by the wall clock, seconds by time: each still holds the other.
    expect(a.directory.get("b9")?.peerId).toBe("12D3KooWb9");
    expect(b.directory.get("a9")?.peerId).toBe("12D3KooWa9");
  }, 120_000);

  it("watches the bucket once, also when looks start while its watch is on its way (a slow hub)", async () => {
    const clock = new ManualClock(Date.now());
    await member("a8", "edge-a", clock);
    const nats = await fabric.connect("edge-b");
    const arrivals: string[] = [];
    let looks = 0;
    const directory = new NodeDirectory({
      nats, node: "b8", log: silentLogger(), clock, refreshMs, keepaliveMs, ttlMs,
      record: () => ({ node: "b8", peerId: "12D3KooWb8", listen: [], observed: [], nat: "unknown", relay: true, pskFingerprint: "0000000000000000", protocol: meshProtocol, at: new Date(clock.now()).toISOString() }),
      onRecord: (record) => void (record.node === "a8" && arrivals.push(record.node)),
      onAlive: () => void looks++,
    });
    members.push({ directory, looks: 0, arrivals: new Map(), nats: new Map(), observed: [], nat: "unknown" });
    directory.start();
    // Four more looks before the first has its watch: each found none yet, and asked for one of its own.
    for (let index = 0; index < 4; index++) clock.advance(refreshMs);
    await eventually(() => looks >= 5, 15_000, "the five looks");
    await eventually(() => arrivals.length >= 1, 10_000, "A's record");
    await new Promise((wake) => setTimeout(wake, 1_000));
    // One watch: A's record came once (each watch hands over every record it finds).
    expect(arrivals).toHaveLength(1);
  }, 60_000);

  it("puts its record back at the next look when the bucket holds another value under its key", async () => {
    const clock = new ManualClock(Date.now());
    const a = await member("a5", "edge-a", clock);
    const b = await member("b5", "edge-b", clock);
    await eventually(() => b.directory.get("a5") !== undefined, 10_000, "B to hold A's record");
    await look(clock, a, b);
    expect(a.directory.puts).toBe(1);
    // Another writer (the mesh account may write any key) puts a value of its own under A's key.
    const kv = await new Kvm(await fabric.connect("hub-1")).open("mesh-nodes");
    await kv.put("a5", JSON.stringify({ node: "a5", peerId: "12D3KooWforged" }));
    await eventually(() => b.directory.get("a5") === undefined, 10_000, "B to drop the value it cannot use");
    // A puts it back at its first look after its own watch brought it the other value, which may come after B's
    // (under a full run's load it did, also after five looks in a row 110 ms long): looks until then, 50 ms apart
    // and for 10 s at most, and never a second put.
    const until = Date.now() + 10_000;
    while (a.directory.puts < 2 && Date.now() < until) {
      await look(clock, a, b);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(a.directory.puts).toBe(2);
    await eventually(() => b.directory.get("a5")?.peerId === "12D3KooWa5", 10_000, "B to hold A's genuine record again");
    // Its own put seen back in the watch is not another writer's: nothing more is put.
    await look(clock, a, b);
    expect(a.directory.puts).toBe(2);
  });

  it("tells at every look which peers are fresh, and drops a peer whose record expired", async () => {
    const clock = new ManualClock(Date.now());
    const alive: string[][] = [];
    const a = await member("a3", "edge-a", clock);
    const b = await member("b3", "edge-b", clock);
    await eventually(() => a.directory.get("b3") !== undefined, 10_000, "A to hold B's record");
    b.directory.stop(); // B stops: no keep-alive any more
    const nats = await fabric.connect("edge-a");
    const watcher = new NodeDirectory({
      nats, node: "c3", log: silentLogger(), clock, refreshMs, keepaliveMs, ttlMs,
      record: () => ({ node: "c3", peerId: "12D3KooWc3", listen: [], observed: [], nat: "unknown", relay: true, pskFingerprint: "0000000000000000", protocol: meshProtocol, at: new Date(clock.now()).toISOString() }),
      // This test's nodes only: the bucket still holds the other tests' records.
      onAlive: (records) => void alive.push(records.map((record) => record.node).filter((node) => node.endsWith("3")).sort()),
    });
    members.push({ directory: watcher, looks: 0, arrivals: new Map(), nats: new Map(), observed: [], nat: "unknown" });
    watcher.start();
    await eventually(() => watcher.get("b3") !== undefined, 10_000, "C to hold B's record");
    const firstLooks = alive.length;
    clock.advance(refreshMs);
    await eventually(() => alive.length > firstLooks, 10_000, "C's second look");
    expect(alive.at(-1)).toEqual(["a3", "b3"]);
    // Past B's TTL (no keep-alive from it), with the hubs reachable: B is no longer fresh, A still is (kept alive).
    for (let elapsed = 0; elapsed <= ttlMs; elapsed += refreshMs) await look(clock, a);
    const looksBefore = alive.length;
    clock.advance(refreshMs);
    await eventually(() => alive.length > looksBefore, 10_000, "C's next look");
    expect(alive.at(-1)).toEqual(["a3"]);
    expect(watcher.get("b3")).toBeUndefined();
  }, 60_000);

  it("withdraws only the record it put: a newer one under its name (the node started again) stays", async () => {
    const clock = new ManualClock(Date.now());
    const old = await member("a8", "edge-a", clock);
    const kv = await new Kvm(await fabric.connect("hub-1")).open("mesh-nodes");
    await eventually(async () => (await kv.get("a8"))?.operation === "PUT", 10_000, "A's record in mesh-nodes");
    // The node's next process puts its record while the old one's withdraw is still to land.
    const restarted = JSON.stringify({ node: "a8", peerId: "12D3KooWa8again" });
    const newer = await kv.put("a8", restarted);
    expect(await old.directory.withdraw()).toBe(false);
    const standing = await kv.get("a8");
    expect(standing?.operation).toBe("PUT");
    expect(standing?.revision).toBe(newer);
    expect(standing?.string()).toBe(restarted);
  });

  it("withdraws its record on a clean stop: a peer drops the node at once, not at its TTL; with the hub away it gives up within its bound", async () => {
    const clock = new ManualClock(Date.now());
    const a = await member("a7", "edge-a", clock);
    const b = await member("b7", "edge-b", clock);
    await eventually(() => a.directory.get("b7") !== undefined, 10_000, "A to hold B's record");
    expect(await b.directory.withdraw()).toBe(true);
    // No clock movement: the delete itself, not an expiry, takes the record away.
    await eventually(() => a.directory.get("b7") === undefined, 10_000, "A to drop B once B withdrew");
    expect(a.directory.all().map((record) => record.node)).not.toContain("b7");
    const kv = await new Kvm(await fabric.connect("hub-1")).open("mesh-nodes");
    expect((await kv.get("b7"))?.operation).toBe("DEL");
    // Withdrawn means stopped: later looks put nothing.
    const putsAfter = b.directory.puts;
    clock.advance(keepaliveMs);
    await look(clock, a);
    expect(b.directory.puts).toBe(putsAfter);

    const hub = fabric.hubs[0].server;
    await hub.stop();
    try {
      const started = performance.now();
      expect(await a.directory.withdraw(500)).toBe(false);
      expect(performance.now() - started).toBeLessThan(5_000);
    } finally {
      await hub.start();
    }
    // The next test starts on a whole fabric: each leaf reaches the bucket through its link again.
    for (const leaf of ["edge-a", "edge-b"]) {
      const nats = await fabric.connect(leaf);
      await eventually(async () => {
        const kv = await new Kvm(jetstream(nats, { domain: hubDomain, checkAPI: false })).open("mesh-nodes");
        return (await kv.get("b7").catch(() => undefined)) !== undefined;
      }, 30_000, `${leaf} to reach mesh-nodes again`);
    }
  }, 90_000);

  it("tries a failed put again at the next look, and keeps peers' records past their TTL while the hubs are away", async () => {
    const clock = new ManualClock(Date.now());
    const a = await member("a4", "edge-a", clock);
    const b = await member("b4", "edge-b", clock);
    await eventually(() => a.directory.get("b4") !== undefined, 10_000, "A to hold B's record");
    const bAt = Date.parse(a.directory.get("b4")!.at);
    const hub = fabric.hubs[0].server;
    await hub.stop();
    try {
      // The keep-alive falls due with the hub away: the put fails, and is tried at every look after.
      for (let elapsed = 0; elapsed < 60_000; elapsed += refreshMs) await look(clock, a);
      expect(a.directory.puts).toBe(1);
      // Past B's TTL: A keeps B's record, as paths to the site's nodes must still open.
      while (clock.now() <= bAt + ttlMs) await look(clock, a);
      expect(a.directory.puts).toBe(1);
      expect(a.directory.get("b4")?.peerId).toBe("12D3KooWb4");
    } finally {
      await hub.start();
    }
    await eventually(async () => {
      await look(clock, a, b);
      return a.directory.puts === 2 && b.directory.puts === 2;
    }, 60_000, "both nodes to put their records again once the hub is back");
    await eventually(() => a.arrivals.get("b4") === 2, 10_000, "A to receive B's record again");
    expect(Date.parse(a.directory.get("b4")!.at)).toBeGreaterThan(clock.now() - 2 * refreshMs);
  }, 180_000);
  /** Nodes A and B holding each other's records, then the hub loses its store (its JetStream directory) and starts again. */
  async function pairThroughLostStore(a: string, b: string): Promise<{ clock: ManualClock; a: Member; b: Member }> {
    const clock = new ManualClock(Date.now());
    const pair = { clock, a: await member(a, "edge-a", clock), b: await member(b, "edge-b", clock) };
    await eventually(() => pair.a.directory.get(b) !== undefined, 10_000, "A to hold B's record");
    const hub = fabric.hubs[0].server;
    await hub.stop();
    rmSync(join(hub.options.dataDir, "js"), { recursive: true, force: true });
    await hub.start();
    return pair;
  }

  it("watches the bucket again from its first record when a put finds its stream made again (a hub that lost its store)", async () => {
    const { clock, a, b } = await pairThroughLostStore("a6", "b6");
    // The hub makes the bucket again at its start (roles/hub.ts); its revisions start over.
    await new Kvm(await fabric.connect("hub-1")).create("mesh-nodes", { history: 1, ttl: ttlMs });
    // B's changed record goes into the new stream (the looks also move A's clock: it may put there first).
    b.observed = [{ host: "203.0.113.7", port: 40_006 }];
    await eventually(async () => {
      await look(clock, a, b);
      return b.directory.get("a6") !== undefined && b.directory.puts >= 2 && a.directory.puts >= 2;
    }, 60_000, "both to put into the new stream");
    // A's put got a revision below the old stream's: A watches again from the first record, and finds B's.
    await eventually(() => a.directory.get("b6")?.observed[0]?.port === 40_006, 10_000, "A to see B's record written after the loss");
  }, 120_000);

  it("watches again from the first record also when its own put found no bucket and made it (the put before anyone's)", async () => {
    const { clock, a, b } = await pairThroughLostStore("a7", "b7");
    // No bucket yet: A's put is refused, A makes the bucket (a plain nats-server hub has none) and puts the new stream's first record.
    a.observed = [{ host: "203.0.113.7", port: 40_107 }];
    await eventually(async () => {
      await look(clock, a);
      return a.directory.puts >= 2;
    }, 60_000, "A to make the bucket again and put into it");
    // Then B's changed record, into the stream A made.
    b.observed = [{ host: "203.0.113.7", port: 40_007 }];
    await eventually(async () => {
      await look(clock, b);
      return b.directory.puts >= 2 && b.directory.get("a7")?.observed[0]?.port === 40_107;
    }, 60_000, "B to put into the new stream and see A's record there");
    // A's watch, an ordered consumer, waits for revisions after the old stream's last: only a watch from the first finds B's.
    await eventually(() => a.directory.get("b7")?.observed[0]?.port === 40_007, 10_000, "A to see B's record written after the loss");
  }, 120_000);
});
