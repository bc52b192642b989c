/**
 * Relay windows sized from the measured round trip (relay-window.ts), on a real
 * leaf → hub → leaf fabric whose receiving client sits behind a long link (a
 * proxy that delays every chunk 25 ms each way: this kernel has no netem).
 */
import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats } from "../../bus/connect.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { startDegradingProxy, type DegradingProxy } from "../../test/support/degrading-proxy.ts";
import { startFabric, type TestFabric } from "../../test/support/tunnel-fabric.ts";
import { RelayEndpoint, type RelayChannel } from "./relay.ts";
import { ReceiveWindow } from "./relay-window.ts";

const sha = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

describe("a relay channel's window on a long path", () => {
  let fabric: TestFabric;
  let proxy: DegradingProxy;
  let a: NatsConnection;
  let far: NatsConnection;
  let sender: RelayEndpoint;
  let receiver: RelayEndpoint;
  /** How each accepted channel is read: at once, or slowly (set per test). */
  let read: (channel: RelayChannel) => Promise<Buffer>;
  const bodies: { channel: RelayChannel; body: Promise<Buffer> }[] = [];

  beforeAll(async () => {
    fabric = await startFabric({ hubs: 1, leaves: ["edge-a", "edge-b"] });
    a = await fabric.connect("edge-a");
    proxy = await startDegradingProxy(Number(new URL(fabric.leaves.get("edge-b")!.clientUrl).port));
    far = await connectNats({ servers: [`nats://127.0.0.1:${proxy.port}`], name: "test far receiver" });
    sender = new RelayEndpoint({ nats: a, node: "edge-s", log: silentLogger(), onChannel: () => undefined });
    receiver = new RelayEndpoint({
      nats: far,
      node: "edge-r",
      log: silentLogger(),
      windowBytes: 256 * 1024,
      maxWindowBytes: 8 * 1024 * 1024,
      onChannel: (channel) => {
        const body = read(channel);
        body.catch(() => undefined); // the probe channel is reset
        bodies.push({ channel, body });
      },
    });
    read = (channel) => collect(channel);
    await eventually(async () => (await sender.open("edge-r").then((c) => (c.destroy(), true), () => false)), 20_000, "relay path to edge-r up");
    proxy.set({ delayMs: 25, lossRate: 0 });
  }, 60_000);

  afterAll(async () => {
    sender?.close();
    receiver?.close();
    await far?.close();
    await proxy?.close();
    await fabric?.stop();
  });

  async function transfer(bytes: number): Promise<RelayChannel> {
    bodies.length = 0;
    const payload = randomBytes(bytes);
    const channel = await sender.open("edge-r", "tls-stream");
    channel.on("error", () => undefined);
    channel.end(payload);
    await eventually(() => bodies.length === 1, 5_000, "the channel at edge-r");
    expect(sha(await bodies[0].body)).toBe(sha(payload));
    return bodies[0].channel;
  }

  it("grows past its first window while the window, not the reader, holds the sender back, and measures the round trip", async () => {
    read = (channel) => collect(channel);
    const channel = await transfer(12 * 1024 * 1024);
    const window = channel.receiveWindow;
    if (process.env.LEAFMESH_TRANSCRIPT) process.stdout.write(`window ${window.bytes} bytes, min RTT ${window.minRttMs} ms\n`);
    // 50 ms each round trip at least (25 ms each way through the proxy).
    expect(window.minRttMs).toBeGreaterThanOrEqual(45);
    // 256 KiB a round trip is what a fixed window would have allowed; it grew.
    expect(window.bytes).toBeGreaterThan(256 * 1024);
    expect(window.bytes).toBeLessThanOrEqual(8 * 1024 * 1024);
  }, 60_000);

  it("grows no further than a quarter second of the reader's pace when the reader is what holds the sender back", async () => {
    // 32 KiB taken every 20 ms: ~1.6 MB/s, where the window alone would allow ~5 (and grow towards 8 MiB).
    // A quarter second of 1.6 MB/s is ~400 KB: one doubling of 256 KiB at most.
    read = (channel) => collect(channel, { bytes: 32 * 1024, everyMs: 20 });
    const channel = await transfer(2 * 1024 * 1024);
    expect(channel.receiveWindow.bytes).toBeLessThanOrEqual(512 * 1024);
  }, 60_000);
});

/** Everything the channel carries; `slowly`: paused, and `bytes` read every `everyMs`. */
function collect(channel: RelayChannel, slowly?: { bytes: number; everyMs: number }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    channel.once("error", reject);
    if (!slowly) {
      channel.on("data", (chunk: Buffer) => chunks.push(chunk));
      channel.once("end", () => resolve(Buffer.concat(chunks)));
      return;
    }
    const timer = setInterval(() => {
      let chunk: Buffer | null;
      let taken = 0;
      // In 16 KiB pieces (read() with no size would take all that waits).
      while (taken < slowly.bytes && (chunk = channel.read(16 * 1024) as Buffer | null) !== null) {
        chunks.push(chunk);
        taken += chunk.byteLength;
      }
    }, slowly.everyMs);
    channel.once("end", () => {
      clearInterval(timer);
      resolve(Buffer.concat(chunks));
    });
    channel.once("close", () => clearInterval(timer));
  });
}

describe("ReceiveWindow", () => {
  it("grows to twice rate × the smallest round trip or a quarter second of the rate, doubling at most, and not for a reader behind or a queue-inflated round trip beyond that", () => {
    const window = new ReceiveWindow({ bytes: 1_000, maxBytes: 100_000 });
    window.sample(10);
    expect(window.growth(0, 0, true)).toBe(0); // the first look starts the count
    // 2,000 bytes read in 20 ms (two round trips of a 1,000-byte window): 100 B/ms × 10 ms × 2 = 2,000.
    expect(window.growth(20, 2_000, true)).toBe(1_000);
    window.bytes += 1_000;
    // A reader behind: nothing, whatever the rate.
    expect(window.growth(40, 4_000, false)).toBe(0);
    // 5,000 more in 100 ms (the round trip went to 40 ms: queues): 50 B/ms × 10 ms × 2 = 1,000, but a
    // quarter second of 50 B/ms is 12,500: the window may hold that much queue, doubling at a time.
    expect(window.growth(120, 7_000, true)).toBe(2_000);
    window.bytes = 20_000; // grown meanwhile
    // 10,000 more in 200 ms: 50 B/ms, a quarter second of it 12,500 < the 20,000 held: queues only, no growth.
    expect(window.growth(320, 17_000, true)).toBe(0);
    // Under two round trips after the last look: nothing yet.
    expect(window.growth(325, 30_000, true)).toBe(0);
    // Never past the most.
    const small = new ReceiveWindow({ bytes: 1_000, maxBytes: 1_500 });
    small.sample(10);
    small.growth(0, 0, true);
    expect(small.growth(20, 100_000, true)).toBe(500);
  });

  it("times a grant from when it went out to the first byte the peer could not send without it; the opener's open → accept too", () => {
    const window = new ReceiveWindow({ bytes: 1_000, maxBytes: 2_000 });
    window.grantSent(100, 1_000); // the peer held 1,000 of credit before this grant
    window.dataArrived(120, 800); // sent on the old credit: no sample
    expect(window.minRttMs).toBeUndefined();
    window.dataArrived(160, 1_200); // beyond 1,000: needed the grant
    expect(window.minRttMs).toBe(60);
    window.dataArrived(170, 1_300); // one sample per grant
    expect(window.minRttMs).toBe(60);
    window.grantSent(200, 1_250);
    window.grantSent(210, 1_500);
    window.dataArrived(240, 1_600); // past both: timed from the later one
    expect(window.minRttMs).toBe(30);
    window.sample(12);
    expect(window.minRttMs).toBe(12);
  });
});
