/**
 * A client's first bytes sent with its stream's target header (lib/early-bytes.ts, stream-header.ts, issue 17's
 * first-byte row), over real TLS stream sessions with end frames (tls-streams.ts) to a real StreamServer: they
 * reach the target before the answer is back, go once to a second endpoint after a refusal (through the real
 * traffic proxy), go the old way to a peer whose record says protocol 1, and a cut after they went resets the
 * client and the target instead of trying elsewhere, and they do not ride a spare session whose peer was not heard
 * lately (one gone silent then costs the client nothing). A TCP relay stands for the network between the agents and
 * holds back the answer direction (the far agent → the opener) while a test looks at the target
 * (test/support/held-answer-tunnel.ts).
 */
import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import type { StreamDialer } from "../../bus/streams.ts";
import { EarlyBytes, EarlyBytesInDoubt } from "../../lib/early-bytes.ts";
import { joinStreams } from "../../lib/join-streams.ts";
import { ManualClock } from "../../lib/clock.ts";
import { SpareSessions, spareHeardWithinMs } from "./spares.ts";
import { silentLogger } from "../../lib/log.ts";
import { peerAt, startHeldAnswerTunnel, type HeldAnswerTunnel } from "../../test/support/held-answer-tunnel.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { listenerAddress, putService } from "../../test/support/traffic-catalog.ts";
import { createTrafficActor, type TrafficActor } from "../traffic/actor.ts";

let tunnel: HeldAnswerTunnel;
let target: Server;
let targetPort = 0;
const open = new Set<Socket>();
/** Each connection the target took: the bytes it read, and how it ended ("end" or the error's code). */
const arrivals: { bytes: Buffer; how?: string }[] = [];

beforeAll(async () => {
  tunnel = await startHeldAnswerTunnel();
  // The target: an echo on 127.0.0.2 that records what each connection read (127.0.0.3 on the same port refuses).
  targetPort = await freePort("127.0.0.2");
  target = createServer({ allowHalfOpen: true }, (socket) => {
    const arrival: { bytes: Buffer; how?: string } = { bytes: Buffer.alloc(0) };
    arrivals.push(arrival);
    open.add(socket);
    socket.on("data", (chunk: Buffer) => {
      arrival.bytes = Buffer.concat([arrival.bytes, chunk]);
      socket.write(chunk);
    });
    socket.on("end", () => ((arrival.how = "end"), socket.end()));
    socket.on("error", (error: NodeJS.ErrnoException) => (arrival.how = error.code ?? error.message));
  });
  await new Promise<void>((resolve) => target.listen(targetPort, "127.0.0.2", resolve));
}, 30_000);

afterEach(() => {
  tunnel.releaseAll();
  arrivals.length = 0;
});

afterAll(async () => {
  for (const socket of open) socket.destroy();
  await tunnel?.close();
  await new Promise((resolve) => target.close(resolve));
});

const opener = () => tunnel.opener();

/** A client connected to a local server, having written `request`: the proxy's side of it (what EarlyBytes reads). */
async function clientWith(request: string): Promise<{ client: Socket; accepted: Socket }> {
  const accepting = createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => accepting.listen(0, "127.0.0.1", resolve));
  const acceptedPromise = new Promise<Socket>((resolve) => accepting.once("connection", resolve));
  const client = netConnect({ host: "127.0.0.1", port: (accepting.address() as { port: number }).port, allowHalfOpen: true });
  client.write(request);
  const accepted = await acceptedPromise;
  accepting.close();
  for (const socket of [client, accepted]) open.add(socket.on("error", () => undefined));
  await eventually(() => accepted.readableLength >= request.length, 5_000, "the request at the proxy");
  return { client, accepted };
}

const echoOf = (socket: Socket, bytes: number) =>
  new Promise<string>((resolve) => {
    let read = "";
    socket.on("data", (chunk: Buffer) => (read += chunk.toString()).length >= bytes && resolve(read));
  });

describe("a client's first bytes with the stream's target header", () => {
  it("reach the target before the answer is back, once, ahead of the rest of the stream", async () => {
    const { client, accepted } = await clientWith("GET / HTTP/1.1\r\n\r\n");
    tunnel.held = true;
    const early = new EarlyBytes(accepted);
    let answered = false;
    const opening = opener().open(peerAt(2), "relayed", { host: "127.0.0.2", port: targetPort, protocol: "TCP" }, undefined, early);
    void opening.then(() => (answered = true));
    // The far agent connected the target and wrote the bytes there, while its answer is held on the way back.
    await eventually(() => arrivals[0]?.bytes.toString() === "GET / HTTP/1.1\r\n\r\n", 5_000, "the early bytes at the target");
    expect(answered).toBe(false);
    tunnel.gates.at(-1)!.release();
    const stream = await opening;
    expect(early.state).toBe("committed");
    const echoed = echoOf(client, 23);
    joinStreams(accepted, stream as Duplex);
    client.write("more!");
    expect(await echoed).toBe("GET / HTTP/1.1\r\n\r\nmore!");
    expect(arrivals[0].bytes.toString()).toBe("GET / HTTP/1.1\r\n\r\nmore!"); // no frame headers, nothing twice
    client.end();
  });

  it("go the old way to a peer whose node record says protocol 1: the target reads them only after the answer", async () => {
    const { client, accepted } = await clientWith("hello");
    tunnel.held = true;
    const early = new EarlyBytes(accepted);
    const opening = opener().open(peerAt(1), "relayed", { host: "127.0.0.2", port: targetPort, protocol: "TCP" }, undefined, early);
    await eventually(() => arrivals.length === 1, 5_000, "the target's connection");
    expect(early.state).toBe("waiting");
    expect(arrivals[0].bytes.length).toBe(0);
    tunnel.gates.at(-1)!.release();
    const stream = await opening;
    expect(early.sentBytes).toBe(0);
    const echoed = echoOf(client, 5);
    joinStreams(accepted, stream as Duplex);
    expect(await echoed).toBe("hello");
    expect(arrivals[0].bytes.toString()).toBe("hello");
    client.end();
  });
});

describe("on a spare session made ahead of the stream", () => {
  it("go with the header on a spare whose peer was heard lately (made within spareHeardWithinMs)", async () => {
    const clock = new ManualClock();
    const spares = new SpareSessions({ clock });
    try {
      const streams = await tunnel.spareOpener(spares);
      const target = { host: "127.0.0.2", port: targetPort, protocol: "TCP" } as const;
      (await streams.open(peerAt(2), "relayed", target)).destroy();
      await eventually(() => spares.ready().length === 1, 5_000, "the spare session");
      clock.advance(spareHeardWithinMs - 1);
      const { client, accepted } = await clientWith("GET /fresh");
      const early = new EarlyBytes(accepted);
      const stream = await streams.open(peerAt(2), "relayed", target, undefined, early);
      expect(early.state).toBe("committed");
      expect(early.sentBytes).toBe("GET /fresh".length);
      stream.destroy();
      client.destroy();
    } finally {
      spares.close();
    }
  });

  it("wait for the answer when the spare's peer was not heard lately: a peer gone silent costs the open its carrier, not the client", async () => {
    const clock = new ManualClock();
    const spares = new SpareSessions({ clock });
    try {
      const streams = await tunnel.spareOpener(spares, { headerTimeoutMs: 1_000 });
      const target = { host: "127.0.0.2", port: targetPort, protocol: "TCP" } as const;
      // A first stream; 20 ms after its open the next one's session is made ahead (stream-opener.ts).
      (await streams.open(peerAt(2), "relayed", target)).destroy();
      await eventually(() => spares.ready().length === 1, 5_000, "the spare session");
      // The far agent dies without a FIN or RST (kill -9 behind a relay, a cable cut), and the spare waits on.
      tunnel.gates.at(-1)!.silence();
      clock.advance(spareHeardWithinMs + 1);
      const { client, accepted } = await clientWith("POST /order");
      const early = new EarlyBytes(accepted);
      const error = await streams.open(peerAt(2), "relayed", target, undefined, early).catch((failed: unknown) => failed);
      expect(error).toBeInstanceOf(Error);
      expect(error).not.toBeInstanceOf(EarlyBytesInDoubt);
      expect(early.inDoubt).toBe(false);
      expect(early.sentBytes).toBe(0);
      expect(accepted.readableLength).toBe("POST /order".length); // still the client's, for another endpoint
      // Another endpoint (here the same target over a fresh session) gets them, and the target reads them once.
      const next = new EarlyBytes(accepted);
      const stream = await tunnel.opener().open(peerAt(2), "relayed", target, undefined, next);
      expect(next.state).toBe("committed");
      await eventually(() => arrivals.some((arrival) => arrival.bytes.toString() === "POST /order"), 5_000, "the bytes at the target");
      expect(arrivals.filter((arrival) => arrival.bytes.length > 0).map((arrival) => arrival.bytes.toString())).toEqual(["POST /order"]);
      stream.destroy();
      client.destroy();
    } finally {
      spares.close();
    }
  });
});

describe("through the traffic proxy", () => {
  let traffic: TrafficActor | undefined;
  afterEach(async () => traffic?.stop());

  /** The proxy with two endpoints on edge-b: 127.0.0.3 (refuses) and 127.0.0.2 (the target). Each open's attempt and its early bytes' state. */
  async function proxy(): Promise<{ listener: { host: string; port: number }; attempts: { host: string; early?: EarlyBytes; error?: unknown }[] }> {
    const attempts: { host: string; early?: EarlyBytes; error?: unknown }[] = [];
    const streams = opener();
    const dialer: StreamDialer = {
      async openStream(node, to, options) {
        const attempt = { host: to.host, early: options?.early } as (typeof attempts)[number];
        attempts.push(attempt);
        tunnel.held = true;
        const opening = streams.open(peerAt(2), "relayed", to, options?.signal, options?.early);
        opening.catch((error: unknown) => (attempt.error = error));
        // The answer waits until the client's bytes went with the header, so that every attempt carries them.
        await eventually(() => (options?.early?.sentBytes ?? 0) > 0 || attempt.error, 5_000, "the early bytes to go");
        if (to.host === "127.0.0.3") tunnel.gates.at(-1)?.release();
        return opening;
      },
    };
    const feed = new IndexFeed();
    const ports = [{ name: "main", protocol: "TCP" as const, port: 80, targetPort }];
    putService(feed, { name: "early", clusterIP: "198.19.0.40", ports, endpoints: [{ ip: "127.0.0.3", node: "edge-b" }, { ip: "127.0.0.2", node: "edge-b" }] });
    traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", connectTimeoutMs: 1_000, dialer });
    await traffic.start();
    return { listener: listenerAddress(traffic.listeners().find((binding) => binding.key === "lab/early:main/TCP"))!, attempts };
  }

  it("sends them once more to the next endpoint after a refusal, and the target reads them once", async () => {
    const { listener, attempts } = await proxy();
    // Round robin: one of two clients tries the refusing endpoint first.
    for (const request of ["first request", "second request"]) {
      const client = netConnect({ ...listener, allowHalfOpen: true }).on("error", () => undefined);
      open.add(client);
      client.write(request);
      const echoed = echoOf(client, request.length);
      const before = attempts.length;
      await eventually(() => attempts.length > before && attempts.at(-1)!.host === "127.0.0.2" && (attempts.at(-1)!.early?.sentBytes ?? 0) > 0, 5_000, "an open to the target");
      tunnel.gates.at(-1)!.release();
      expect(await echoed).toBe(request);
      client.end();
    }
    const refused = attempts.filter((attempt) => attempt.host === "127.0.0.3");
    expect(refused.length).toBeGreaterThan(0);
    for (const attempt of refused) {
      expect(attempt.early!.state).toBe("given back"); // the far agent refused with the bytes in hand
      expect(attempt.early!.sentBytes).toBeGreaterThan(0);
    }
    expect(arrivals.map((arrival) => arrival.bytes.toString()).sort()).toEqual(["first request", "second request"]);
  });

  it("resets the client and the target when the stream is cut after they went, and tries no other endpoint", async () => {
    const { listener, attempts } = await proxy();
    const client = netConnect({ ...listener, allowHalfOpen: true });
    open.add(client);
    const how = new Promise<string>((resolve) => {
      client.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
      client.on("end", () => resolve("end"));
    });
    client.write("POST /order");
    // After a refusal by 127.0.0.3 or not, the bytes reach the target; its answer is held.
    const arrival = await eventually(() => arrivals.find((each) => each.bytes.toString() === "POST /order"), 5_000, "the early bytes at the target");
    const tried = attempts.length;
    tunnel.gates.at(-1)!.cut(); // between header and answer, the bytes already at the target
    expect(await how).toBe("ECONNRESET");
    await eventually(() => arrival.how, 5_000, "the target's connection to end");
    expect(arrival.how).toBe("ECONNRESET");
    expect(attempts.length).toBe(tried); // nothing sent elsewhere
    expect(attempts.at(-1)!.error).toBeInstanceOf(EarlyBytesInDoubt);
    expect(attempts.at(-1)!.early!.inDoubt).toBe(true);
    expect(arrivals.filter((each) => each.bytes.length > 0)).toHaveLength(1);
  });
});
