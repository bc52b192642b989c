import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { silentLogger } from "../../lib/log.ts";
import { relayInboxPattern, relaySubject } from "../../bus/subjects.ts";
import { eventually } from "../../test/support/ports.ts";
import { RelayEndpoint, type RelayChannel } from "./relay.ts";
import { decodeFrame, encodeFrame, frameTypes } from "./relay-frames.ts";
import { startFabric, type TestFabric } from "../../test/support/tunnel-fabric.ts";

function collect(channel: RelayChannel): Promise<Buffer> {
  const chunks: Buffer[] = [];
  channel.on("data", (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve, reject) => {
    channel.once("end", () => resolve(Buffer.concat(chunks)));
    channel.once("error", reject);
  });
}

describe("relay channels through leaf → hub → leaf", () => {
  let fabric: TestFabric;
  let a: NatsConnection;
  let b: NatsConnection;
  let relayA: RelayEndpoint;
  let relayB: RelayEndpoint;
  const accepted: RelayChannel[] = [];

  beforeAll(async () => {
    fabric = await startFabric({ hubs: 1, leaves: ["edge-a", "edge-b"] });
    a = await fabric.connect("edge-a");
    b = await fabric.connect("edge-b");
    relayA = new RelayEndpoint({ nats: a, node: "edge-a", log: silentLogger(), onChannel: () => undefined });
    relayB = new RelayEndpoint({
      nats: b,
      node: "edge-b",
      log: silentLogger(),
      windowBytes: 64 * 1024,
      maxWindowBytes: 64 * 1024,
      onChannel: (channel) => {
        accepted.push(channel);
        channel.on("error", () => undefined); // resets are asserted through resetReason
        channel.pipe(channel); // echo
      },
    });
    // The leafs learn each other's interest through the hub: wait until a channel opens.
    await eventually(async () => (await relayA.open("edge-b").then((c) => (c.destroy(), true), () => false)), 20_000, "relay path up");
  }, 60_000);

  afterAll(async () => {
    relayA?.close();
    relayB?.close();
    await fabric?.stop();
  });

  it("carries 8 MiB in order through a 64 KiB window, checksum intact", async () => {
    const channel = await relayA.open("edge-b");
    const payload = randomBytes(8 * 1024 * 1024);
    const received = collect(channel);
    channel.end(payload);
    const echoed = await received;
    expect(createHash("sha256").update(echoed).digest("hex")).toBe(createHash("sha256").update(payload).digest("hex"));
    // Credit bounded what was in flight: nothing ever overflowed a window (that would have reset).
    expect(relayB.drops.get("sequence gap") ?? 0).toBe(0);
  }, 30_000);

  it("drops garbage and forged frames, counts them, and keeps serving", async () => {
    a.publish(relaySubject("edge-b", "edge-a", "nosuchchannel"), encodeFrame(frameTypes.data, 7, new Uint8Array([1])));
    a.publish(relaySubject("edge-b", "mallory", "x"), new Uint8Array([0xff, 0xff]));
    a.publish(relaySubject("edge-b", "mallory", "y"), encodeFrame(frameTypes.open, 0, new TextEncoder().encode("not json")));
    await eventually(() => (relayB.drops.get("unknown channel") ?? 0) >= 1 && (relayB.drops.get("malformed frame") ?? 0) >= 1, 5_000, "drops counted");
    const channel = await relayA.open("edge-b");
    const received = collect(channel);
    channel.end(Buffer.from("still here"));
    expect((await received).toString()).toBe("still here");
  }, 20_000);

  it("tells the accepting side what a channel carries, and resets one opened for an unknown purpose", async () => {
    const tls = await relayA.open("edge-b", "tls-stream");
    await eventually(() => accepted.at(-1)?.id === tls.id, 5_000, "the channel at edge-b");
    expect(accepted.at(-1)!.purpose).toBe("tls-stream");
    tls.destroy();
    const plain = await relayA.open("edge-b");
    await eventually(() => accepted.at(-1)?.id === plain.id, 5_000, "the channel at edge-b");
    expect(accepted.at(-1)!.purpose).toBe("libp2p");
    plain.destroy();
    // A peer that asks for something this node does not know: reset, saying what.
    const resets: string[] = [];
    const subscription = a.subscribe(relaySubject("edge-a", "edge-b", "oddpurpose"), {
      callback: (_, message) => {
        const frame = decodeFrame(message.data);
        if (frame.type === frameTypes.reset) resets.push(new TextDecoder().decode(frame.payload));
      },
    });
    await a.flush();
    a.publish(relaySubject("edge-b", "edge-a", "oddpurpose"), encodeFrame(frameTypes.open, 0, new TextEncoder().encode(JSON.stringify({ window: 65536, purpose: "teleport" }))));
    await eventually(() => resets.length > 0, 5_000, "the reset");
    expect(resets[0]).toContain('unknown purpose "teleport"');
    subscription.unsubscribe();
  }, 20_000);

  it("sends a TLS stream's bytes two whole TLS records per NATS message, a libp2p connection's four noise messages", async () => {
    // Two more endpoints on the same leafs, with 4 MiB windows (edge-b's 64 KiB, or the default 256 KiB before it grows, would cap frames).
    const sender = new RelayEndpoint({ nats: a, node: "edge-x", log: silentLogger(), onChannel: () => undefined });
    const received: RelayChannel[] = [];
    const receiver = new RelayEndpoint({ nats: b, node: "edge-y", log: silentLogger(), windowBytes: 4 * 1024 * 1024, onChannel: (channel) => received.push(channel.on("data", () => undefined).on("error", () => undefined)) });
    const sizes = new Map<string, number[]>();
    const watcher = b.subscribe(relayInboxPattern("edge-y"), {
      callback: (_, message) => {
        const frame = decodeFrame(message.data);
        const channel = message.subject.split(".").at(-1)!;
        if (frame.type === frameTypes.data) sizes.set(channel, [...(sizes.get(channel) ?? []), frame.payload.byteLength]);
      },
    });
    try {
      await b.flush();
      await eventually(async () => (await sender.open("edge-y").then((c) => (c.destroy(), true), () => false)), 20_000, "relay path to edge-y up");
      for (const [purpose, frameBytes] of [
        ["tls-stream", 2 * (5 + 16_384 + 1 + 16)],
        ["libp2p", 4 * (2 + 65_535)],
      ] as const) {
        const channel = await sender.open("edge-y", purpose);
        channel.on("error", () => undefined); // reset when the endpoints close below
        channel.end(randomBytes(1024 * 1024));
        await eventually(() => (sizes.get(channel.id) ?? []).reduce((sum, size) => sum + size, 0) === 1024 * 1024, 10_000, `${purpose}: 1 MiB at edge-y`);
        expect(Math.max(...sizes.get(channel.id)!), purpose).toBe(frameBytes);
      }
    } finally {
      watcher.unsubscribe();
      for (const channel of received) channel.destroy();
      sender.close();
      receiver.close();
    }
  }, 30_000);

  it("gives credit back a quarter of the window at a time, not one credit message per data message", async () => {
    // 4 MiB windows (what a LAN channel grows to), a reader that keeps up: the case where every frame read once
    // left the buffer empty and sent a credit of its own (a tunnel bench profile: 13 % of the receiver).
    const sender = new RelayEndpoint({ nats: a, node: "edge-p", log: silentLogger(), onChannel: () => undefined });
    const bodies: Promise<Buffer>[] = [];
    const receiver = new RelayEndpoint({ nats: b, node: "edge-q", log: silentLogger(), windowBytes: 4 * 1024 * 1024, onChannel: (channel) => {
        const body = collect(channel);
        body.catch(() => undefined); // the probe channel below is reset
        bodies.push(body);
      },
    });
    const counts = { data: 0, credit: 0 };
    const count = (connection: NatsConnection, node: string, type: number, key: keyof typeof counts) =>
      connection.subscribe(relayInboxPattern(node), { callback: (_, message) => void (decodeFrame(message.data).type === type && counts[key]++) });
    const watchers = [count(b, "edge-q", frameTypes.data, "data"), count(a, "edge-p", frameTypes.credit, "credit")];
    try {
      await Promise.all([a.flush(), b.flush()]);
      await eventually(async () => (await sender.open("edge-q").then((c) => (c.destroy(), true), () => false)), 20_000, "relay path to edge-q up");
      bodies.length = 0;
      counts.data = counts.credit = 0;
      const payload = randomBytes(16 * 1024 * 1024);
      const channel = await sender.open("edge-q", "tls-stream");
      channel.on("error", () => undefined);
      channel.end(payload);
      await eventually(() => bodies.length === 1, 5_000, "the channel at edge-q");
      channel.resume();
      const body = await bodies[0];
      expect(createHash("sha256").update(body).digest("hex")).toBe(createHash("sha256").update(payload).digest("hex"));
      await eventually(() => counts.data >= 16 * 1024 * 1024 / (2 * (5 + 16_384 + 1 + 16)), 5_000, "every data frame counted");
      // 16 MiB in ~33 KiB frames: ~500 data messages; a credit per MiB read is 16, plus what the end leaves.
      expect(counts.data).toBeGreaterThan(400);
      expect(counts.credit).toBeGreaterThan(0);
      expect(counts.credit).toBeLessThanOrEqual(16 + 4);
    } finally {
      for (const watcher of watchers) watcher.unsubscribe();
      sender.close();
      receiver.close();
    }
  }, 30_000);

  it("keeps the credit of all channels towards a node within its budget, and every channel moving", async () => {
    const budget = 256 * 1024;
    const minimum = 16 * 1024;
    const inbound: RelayChannel[] = [];
    const receiver = new RelayEndpoint({
      nats: b,
      node: "edge-c",
      log: silentLogger(),
      windowBytes: 128 * 1024,
      budgetBytes: budget,
      minWindowBytes: minimum,
      onChannel: (channel) => {
        channel.on("error", () => undefined);
        channel.pause(); // nobody reads yet: credit is all the senders have
        inbound.push(channel);
      },
    });
    const sender = new RelayEndpoint({ nats: a, node: "edge-d", log: silentLogger(), onChannel: () => undefined });
    try {
      await eventually(async () => (await sender.open("edge-c").then((c) => (c.destroy(), true), () => false)), 20_000, "relay path up");
      await eventually(() => receiver.outstandingCredit === 0, 5_000, "the probe's credit given back");
      inbound.length = 0;
      const payloads = Array.from({ length: 8 }, () => randomBytes(512 * 1024));
      const channels = await Promise.all(payloads.map(() => sender.open("edge-c")));
      for (const [index, channel] of channels.entries()) channel.end(payloads[index]);
      await eventually(() => inbound.length === 8, 5_000, "eight channels at edge-c");
      let highest = 0;
      const watch = setInterval(() => (highest = Math.max(highest, receiver.outstandingCredit)), 5);
      await new Promise((resolve) => setTimeout(resolve, 500));
      // Two full windows fill the budget; the other six hold their minimum.
      expect(receiver.outstandingCredit).toBeLessThanOrEqual(budget + 8 * minimum);
      const received = inbound.map((channel) => {
        const body = collect(channel);
        channel.resume(); // reading starts: credit flows again
        return body;
      });
      const bodies = await Promise.all(received);
      for (const channel of inbound) channel.end();
      clearInterval(watch);
      expect(highest).toBeLessThanOrEqual(budget + 8 * minimum);
      const sha = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");
      expect(bodies.map(sha).sort()).toEqual(payloads.map(sha).sort());
      await eventually(() => receiver.outstandingCredit === 0, 5_000, "all credit given back once the channels closed");
    } finally {
      sender.close();
      receiver.close();
    }
  }, 30_000);

  it("refuses hostile open frames without losing its NATS connection or keeping their credit", async () => {
    // Its own connection: a frame that broke the client's reader would cut only this endpoint off.
    const own = await fabric.connect("edge-b");
    const receiver = new RelayEndpoint({ nats: own, node: "edge-h", log: silentLogger(), onChannel: (channel) => void channel.on("error", () => undefined).resume() });
    const resets: string[] = [];
    const watcher = a.subscribe(relaySubject("edge-a", "edge-h", "*"), {
      callback: (_, message) => {
        const frame = decodeFrame(message.data);
        if (frame.type === frameTypes.reset) resets.push(new TextDecoder().decode(frame.payload));
      },
    });
    try {
      await a.flush();
      await eventually(async () => (await relayA.open("edge-h").then((c) => (c.destroy(), true), () => false)), 20_000, "relay path to edge-h up");
      await eventually(() => receiver.outstandingCredit === 0, 5_000, "the probe's credit given back");
      resets.length = 0;
      const hostile = ['{"window":65536,"purpose":{"toString":1}}', '{"window":65536,"purpose":"teleport"}', '{"window":-5}', "not json"];
      for (const [index, text] of hostile.entries()) {
        a.publish(relaySubject("edge-h", "edge-a", `hostile${index}`), encodeFrame(frameTypes.open, 0, new TextEncoder().encode(text)));
      }
      await eventually(() => resets.length === hostile.length, 5_000, "every hostile open reset");
      expect(receiver.channelCount).toBe(0);
      expect(receiver.outstandingCredit).toBe(0);
      // Still attached and serving.
      const channel = await relayA.open("edge-h");
      channel.destroy();
      expect(own.isClosed()).toBe(false);
    } finally {
      watcher.unsubscribe();
      receiver.close();
    }
  }, 30_000);

  it("survives a peer that accepts a channel and resets it at once (both frames in one read)", async () => {
    const uncaught: unknown[] = [];
    const record = (error: unknown) => uncaught.push(error);
    process.prependListener("uncaughtException", record);
    const refuser = new RelayEndpoint({ nats: b, node: "edge-r", log: silentLogger(), onChannel: (channel) => channel.destroy() });
    try {
      await b.flush();
      let opened = 0;
      await eventually(async () => {
        // open() resolves on the accept; the reset that came in the same read must not be an uncaught 'error'.
        const channel = await relayA.open("edge-r").catch(() => undefined);
        if (channel) opened++;
        await new Promise((resolve) => setImmediate(resolve));
        return opened >= 20;
      }, 20_000, "twenty channels accepted and reset");
      expect(uncaught).toEqual([]);
    } finally {
      process.off("uncaughtException", record);
      refuser.close();
    }
  }, 30_000);

  it("resets a channel on a second open frame instead of granting the peer a second window", async () => {
    const frames: { type: number; text: string }[] = [];
    const watcher = a.subscribe(relaySubject("edge-z", "edge-b", "twice"), {
      callback: (_, message) => {
        const frame = decodeFrame(message.data);
        frames.push({ type: frame.type, text: new TextDecoder().decode(frame.payload) });
      },
    });
    try {
      await a.flush();
      const before = relayB.outstandingCredit;
      const open = (sequence: number) => a.publish(relaySubject("edge-b", "edge-z", "twice"), encodeFrame(frameTypes.open, sequence, new TextEncoder().encode(JSON.stringify({ window: 65_536 }))));
      open(0);
      await eventually(() => frames.some((frame) => frame.type === frameTypes.accept), 5_000, "the accept");
      open(1);
      await eventually(() => frames.find((frame) => frame.type === frameTypes.reset), 5_000, "the reset");
      expect(frames.find((frame) => frame.type === frameTypes.reset)!.text).toBe("open frame on a channel already open");
      await eventually(() => relayB.outstandingCredit === before, 5_000, "the channel's credit given back");
    } finally {
      watcher.unsubscribe();
    }
  }, 20_000);

  it("resets a channel when a frame is lost, never truncating silently", async () => {
    const channel = await relayA.open("edge-b");
    const inbound = accepted.at(-1)!;
    const errored = once(channel, "error").then(([error]) => error as Error);
    // A frame with a sequence number from the future: frames in between were "lost".
    a.publish(relaySubject("edge-b", "edge-a", channel.id), encodeFrame(frameTypes.data, 1000, new Uint8Array([1])));
    await eventually(() => inbound.destroyed, 5_000, "inbound reset");
    expect(inbound.resetReason).toMatch(/sequence gap/);
    expect((await errored).message).toMatch(/reset/);
  }, 20_000);

  it("refuses a channel to a node that does not exist with a clear error", async () => {
    const quick = new RelayEndpoint({ nats: a, node: "edge-a2", log: silentLogger(), onChannel: () => undefined, openTimeoutMs: 1_000 });
    await expect(quick.open("nobody")).rejects.toThrow(/nobody did not accept/);
    quick.close();
  });
});
