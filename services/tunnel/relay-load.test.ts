/**
 * Many relay channels opened, carried and closed at once (issue 15 item 8: "relay
 * frame dropped: unknown channel" warnings when many streams open at once). The
 * cause: an end that has closed a channel forgets it, while frames its peer sent
 * before it learnt of the close (a credit grant for bytes just read, a ping) are
 * still on the way. Those are late, not unknown: counted apart and not warned
 * about; only a frame of a channel this node never had is "unknown channel".
 * And a peer that opens channels without end is held to its limit (item 7).
 */
import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { createLogger } from "../../lib/log.ts";
import { relaySubject } from "../../bus/subjects.ts";
import { eventually } from "../../test/support/ports.ts";
import { startFabric, type TestFabric } from "../../test/support/tunnel-fabric.ts";
import { RelayEndpoint, type RelayChannel } from "./relay.ts";
import { encodeFrame, frameTypes } from "./relay-frames.ts";

let fabric: TestFabric;
let a: NatsConnection;
let relayA: RelayEndpoint;
let relayB: RelayEndpoint;
let relayC: RelayEndpoint;
const warnings: string[] = [];
const lateFrame = "late frame of an ended channel";

function roundTrip(channel: RelayChannel, payload: Buffer): Promise<number> {
  let received = 0;
  channel.on("data", (chunk: Buffer) => (received += chunk.byteLength));
  return new Promise((resolve, reject) => {
    channel.once("end", () => resolve(received));
    channel.once("error", reject);
    channel.end(payload);
  });
}

beforeAll(async () => {
  fabric = await startFabric({ hubs: 1, leaves: ["edge-a", "edge-b", "edge-c"] });
  a = await fabric.connect("edge-a");
  const b = await fabric.connect("edge-b");
  const log = (node: string) =>
    createLogger({ level: "info", destination: new Writable({ write: (chunk, _encoding, callback) => (/"level":40/.test(chunk.toString()) && warnings.push(`${node} ${chunk}`), callback()) }) });
  // Small windows: many credit frames, some of them still on the way when a channel closes.
  relayA = new RelayEndpoint({ nats: a, node: "edge-a", log: log("edge-a"), windowBytes: 16 * 1024, onChannel: () => undefined });
  relayB = new RelayEndpoint({ nats: b, node: "edge-b", log: log("edge-b"), windowBytes: 16 * 1024, onChannel: (channel) => channel.on("error", () => undefined).pipe(channel) });
  relayC = new RelayEndpoint({ nats: await fabric.connect("edge-c"), node: "edge-c", log: log("edge-c"), maxChannelsPerPeer: 3, onChannel: (channel) => channel.on("error", () => undefined).pipe(channel) });
  await eventually(async () => await relayA.open("edge-c").then((channel) => (channel.destroy(), true), () => false), 20_000, "relay path to edge-c up");
  await eventually(async () => await relayB.open("edge-c").then((channel) => (channel.destroy(), true), () => false), 20_000, "relay path from edge-b to edge-c up");
  await eventually(async () => await relayA.open("edge-b").then((channel) => (channel.destroy(), true), () => false), 20_000, "relay path up");
}, 60_000);

afterAll(async () => {
  relayA?.close();
  relayB?.close();
  relayC?.close();
  await fabric?.stop();
});

describe("relay channels closing by the hundred", () => {
  it("carries every one, counts the frames that arrive after a close as late, and warns of none", async () => {
    // Frames of the channels tried while the path came up (an open the hub did not route yet) are unknown indeed: not this test's.
    const unknownBefore = [relayA.drops.get("unknown channel") ?? 0, relayB.drops.get("unknown channel") ?? 0];
    warnings.length = 0;
    const payload = randomBytes(96 * 1024);
    const received = await Promise.all(Array.from({ length: 200 }, async () => roundTrip(await relayA.open("edge-b"), payload)));
    expect(received.every((bytes) => bytes === payload.byteLength)).toBe(true);
    await eventually(() => relayA.channelCount === 0 && relayB.channelCount === 0, 15_000, "every channel closed at both ends");
    // Credits and pings in flight at the closes arrive after them: counted as late.
    const late = () => (relayA.drops.get(lateFrame) ?? 0) + (relayB.drops.get(lateFrame) ?? 0);
    await eventually(() => late() > 0, 10_000, "late frames counted");
    expect([relayA.drops.get("unknown channel") ?? 0, relayB.drops.get("unknown channel") ?? 0]).toEqual(unknownBefore);
    expect(warnings).toEqual([]);
  }, 60_000);

  it("still calls a frame of a channel it never had unknown", async () => {
    const before = relayB.drops.get("unknown channel") ?? 0;
    a.publish(relaySubject("edge-b", "edge-a", "neverseen"), encodeFrame(frameTypes.credit, 3, new Uint8Array(4)));
    await eventually(() => (relayB.drops.get("unknown channel") ?? 0) === before + 1, 5_000, "the unknown channel counted");
  });

  it("holds a peer to its channels: the next open is reset with the reason, another peer opens meanwhile, a closed channel frees a place", async () => {
    await eventually(() => relayC.channelCount === 0, 10_000, "the set-up channels closed");
    const held = [await relayA.open("edge-c"), await relayA.open("edge-c"), await relayA.open("edge-c")];
    await expect(relayA.open("edge-c")).rejects.toThrow(/edge-c has 3 channels open from edge-a, its limit/);
    expect(relayC.drops.get("peer over its channel limit")).toBe(1);
    const other = await relayB.open("edge-c");
    held[0].destroy();
    const again = await eventually(() => relayA.open("edge-c").catch(() => undefined), 5_000, "a place for edge-a again");
    for (const channel of [...held, other, again]) channel.on("error", () => undefined).destroy();
  }, 30_000);
});
