/**
 * An agent upgraded before its hub: hubs write no node record, so the agent learnt nothing of them. Now each hub
 * says its level in the relay-load record it publishes every 5 s (`fabric-load.<hub>`, roles/hub-load.ts), and the
 * tunnel listens: an older hub is named once in the log and in status, with "upgrade it first", and while it is heard
 * the node keeps its record alive every 20 s (a hub from before 2026-12-05 17:00 keeps records 30 s, where newer
 * nodes put theirs every 45-60 s). Real nats-server hub and leaf, the real hub-load publisher for the newer hub.
 *
 * test/fixtures/hub-load-before-levels.json is an older hub's record: what roles/hub-load.ts of 8875959
 * (2026-12-05), 90e48a6 and 32d9b99 (2026-12-07, protocol 1) publish with no relay load (`JSON.stringify` of
 * `{ channels, bytesPerSecond }`); the same shape, without `protocol`, as every hub before this change.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { Bus } from "../../bus/bus.ts";
import { nodeRecordTtlMs, openNodeRecordsBucket, type NodeRecord } from "../../bus/node-record.ts";
import { hubRecordLevel, meshProtocol } from "../../bus/protocol.ts";
import { hubLoadSubject } from "../../bus/subjects.ts";
import { formatVersions } from "../../cli/status.ts";
import { ManualClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { startHubLoad } from "../../roles/hub-load.ts";
import { capturedLog } from "../../test/support/log-lines.ts";
import { eventually } from "../../test/support/ports.ts";
import { startFabric, type TestFabric } from "../../test/support/tunnel-fabric.ts";
import { NodeDirectory } from "./node-directory.ts";
import { keepaliveBeside, keepaliveBesideOlderMs, PeerVersions } from "./peer-versions.ts";

const olderHubRecord = readFileSync(resolve(import.meta.dirname, "../../test/fixtures/hub-load-before-levels.json"));

let fabric: TestFabric;
let hub: NatsConnection;
let load: ReturnType<typeof startHubLoad>;

beforeAll(async () => {
  fabric = await startFabric({ hubs: 1, leaves: ["edge-a"] });
  hub = await fabric.connect("hub-1");
  // The hub makes the node records bucket, as roles/hub.ts does.
  await openNodeRecordsBucket(hub, { ttlMs: nodeRecordTtlMs, replicas: 1 });
  // The newer hub: its real relay-load publisher, every 100 ms.
  load = startHubLoad({ bus: new Bus({ connection: hub, node: "hub-1", log: silentLogger() }), monitor: fabric.hubs[0].server.options.monitor, log: silentLogger(), intervalMs: 100 });
}, 60_000);

afterAll(async () => {
  load?.stop();
  await fabric?.stop();
});

describe("hub levels heard by a node", () => {
  it("reads a hub record's level: none is a hub from before levels, anything not a level is no record", () => {
    expect(hubRecordLevel(olderHubRecord)).toBe(0);
    expect(hubRecordLevel(Buffer.from(JSON.stringify({ channels: 1, bytesPerSecond: 2, protocol: 2 })))).toBe(2);
    for (const bad of ["not json", "[]", "null", '{"protocol":"2"}', '{"protocol":-1}', '{"protocol":1.5}', '{"protocol":70000}']) expect(hubRecordLevel(Buffer.from(bad)), bad).toBeUndefined();
  });

  it("names an older hub once, to be upgraded first, keeps its record alive every 20 s beside it, and forgets it once silent", async () => {
    const clock = new ManualClock(Date.now());
    const { log, lines } = capturedLog("info");
    const versions = new PeerVersions({ log, clock });
    const leaf = await fabric.connect("edge-a");
    versions.watchHubs(leaf);
    await leaf.flush();
    // The older hub, on the same fabric: its records as it publishes them, every 5 s (here: a few in a row).
    const olderHub = setInterval(() => hub.publish(hubLoadSubject("hub-old"), olderHubRecord), 50);
    try {
      await eventually(() => versions.hubs().some((heard) => heard.node === "hub-old") && versions.hubs().some((heard) => heard.node === "hub-1"), 10_000, "the node to hear both hubs");
      await eventually(() => lines.filter((line) => line.hub === "hub-old").length > 0, 5_000, "the older hub named in the log");
      await new Promise((settle) => setTimeout(settle, 300)); // more records of both: said once all the same
      const said = lines.filter((line) => line.hub !== undefined);
      expect(said.map((line) => [line.level, line.hub, line.upgrade])).toEqual([[40, "hub-old", "peer"]]);
      expect(String(said[0].msg)).toMatch(/^hub 'hub-old' runs a leafmesh from before hubs said their protocol level .*keeps node records 30 s.*Upgrade hub 'hub-old' first: hubs, then sites, then agents$/);
      // The newer hub (the real publisher) says this node's level: no skew.
      expect(versions.hubs().find((heard) => heard.node === "hub-1")?.protocol).toBe(meshProtocol);

      const view = formatVersions(versions.skews([])).join("\n");
      expect(view).toMatch(/hub-old \(hub\)\s+0-2 \(not said\)\s+hub-old, first/);
      expect(view).not.toContain("hub-1");
      expect(keepaliveBeside(60_000, versions.hubs())).toBe(keepaliveBesideOlderMs);
    } finally {
      clearInterval(olderHub);
    }
    // The older hub stopped (upgraded under another name, or gone): 30 s later it no longer counts.
    await leaf.flush();
    await new Promise((settle) => setTimeout(settle, 200));
    clock.advance(31_000);
    await eventually(() => versions.hubs().some((heard) => heard.node === "hub-1"), 5_000, "the newer hub heard again");
    expect(versions.skews([])).toEqual([]);
    expect(keepaliveBeside(60_000, versions.hubs())).toBe(60_000);
    versions.stop();
  });

  it("puts the node's record every 15-20 s while an older hub is heard, not every 45-60 s", async () => {
    const clock = new ManualClock(Date.now());
    const versions = new PeerVersions({ log: silentLogger(), clock });
    const leaf = await fabric.connect("edge-a");
    versions.watchHubs(leaf);
    await leaf.flush();
    hub.publish(hubLoadSubject("hub-old"), olderHubRecord);
    await eventually(() => versions.hubs().some((heard) => heard.node === "hub-old"), 10_000, "the node to hear the older hub");
    let looks = 0;
    const record = (): NodeRecord => ({
      node: "a-hub", peerId: "12D3KooWahub", listen: ["/ip4/198.18.0.1/tcp/4101"], observed: [], nat: "port-restricted",
      relay: true, pskFingerprint: "0000000000000000", protocol: meshProtocol, at: new Date(clock.now()).toISOString(),
    });
    const directory = new NodeDirectory({ nats: leaf, node: "a-hub", log: silentLogger(), clock, record, refreshMs: 5_000, keepaliveMs: 60_000, random: () => 0, onAlive: () => void looks++, hubs: () => versions.hubs() });
    try {
      directory.start();
      await eventually(() => looks === 1, 15_000, "the first look");
      expect(directory.puts).toBe(1);
      // random 0: at 3/4 of 20 s, the look at 15 s puts (at 60 s it would wait for 45 s).
      for (let look = 1; look <= 3; look++) {
        clock.advance(5_000);
        await eventually(() => looks === look + 1, 15_000, `look ${look + 1}`);
      }
      expect(directory.puts).toBe(2);
    } finally {
      directory.stop();
      versions.stop();
    }
  });
});
