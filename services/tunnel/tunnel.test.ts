/**
 * The tunnel actor on loopback with a real fabric (hub + one leaf per agent):
 * direct paths from node records, relayed paths, bad input and wrong keys.
 */
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Bus } from "../../bus/bus.ts";
import { relaySubject } from "../../bus/subjects.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import { createLogger, silentLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { createTunnelActor, type TunnelActor } from "./index.ts";
import { hubLoadSubject } from "../../bus/subjects.ts";
import { roundTrip, sha, startFabric, startTcpEcho, testPsk, type TestFabric } from "../../test/support/tunnel-fabric.ts";

const otherPsk = `/key/swarm/psk/1.0.0/\n/base16/\n${"a5".repeat(32)}\n`;

describe("tunnel actor on loopback", () => {
  let fabric: TestFabric;
  let echo: Awaited<ReturnType<typeof startTcpEcho>>;
  let echoPort: number;
  const actors: TunnelActor[] = [];
  const events: { subject: string; payload: unknown }[] = [];
  const logLines: string[] = [];

  async function agent(node: string, options: { psk?: string; ways?: { direct?: boolean; punch?: boolean; relay?: boolean }; log?: boolean } = {}) {
    const nats = await fabric.connect(node);
    const log = options.log
      ? createLogger({ level: "info", destination: new Writable({ write: (chunk, _encoding, callback) => (logLines.push(chunk.toString()), callback()) }) })
      : silentLogger();
    const bus = new Bus({ connection: nats, node, log });
    const tunnel = createTunnelActor({ bus, log, node, nats, listen: ["/ip4/127.0.0.1/tcp/0"], psk: options.psk ?? testPsk, mdns: false, ways: options.ways, recordRefreshMs: 500 });
    await tunnel.start();
    actors.push(tunnel);
    return tunnel;
  }

  beforeAll(async () => {
    // A stream cut by the tunnel resets its target connection: the echo hears ECONNRESET.
    echo = await startTcpEcho();
    echoPort = echo.port;
    fabric = await startFabric({ hubs: 1, leaves: ["edge-a", "edge-b", "edge-c", "edge-d", "edge-e"] });
    const watcher = await fabric.connect("edge-a");
    watcher.subscribe("mesh.*.tunnel.>", { callback: (_, message) => void events.push({ subject: message.subject, payload: message.json() }) });
  }, 60_000);

  afterAll(async () => {
    for (const actor of actors) await actor.stop();
    await fabric?.stop();
    void echo?.close();
  });

  it("connects directly to a node from its record and carries a stream both ways", async () => {
    const a = await agent("edge-a", { log: true });
    await agent("edge-b");
    await eventually(() => a.directory?.get("edge-b"), 15_000, "edge-b's record");
    const stream = await a.openStream("edge-b", { host: "127.0.0.1", port: echoPort, protocol: "TCP" });
    const payload = randomBytes(2 * 1024 * 1024);
    expect(sha(await roundTrip(stream, payload))).toBe(sha(payload));
    expect(a.pathTo("edge-b")).toBe("direct");
    // Dialled at its record's address with mDNS off: direct, never "found on the LAN by mDNS".
    expect(a.why("edge-b").reason.code).toBe("direct");
    await eventually(() => events.some((event) => event.subject === "mesh.edge-a.tunnel.path" && (event.payload as { kind: string; peer: string }).kind === "direct"), 5_000, "path event");
    // A hub that runs an older leafmesh (its relay-load record as hubs before 2026-12-07 write it): named in the
    // tunnel's status and log, to be upgraded first (hub-versions.test.ts has the rest).
    const hub = await fabric.connect("hub-1");
    const older = setInterval(() => hub.publish(hubLoadSubject("hub-old"), '{"channels":0,"bytesPerSecond":0}'), 100);
    try {
      await eventually(() => a.status().versions.find((skew) => skew.peer === "hub-old" && skew.role === "hub" && skew.upgrade === "peer"), 10_000, "the older hub in status");
    } finally {
      clearInterval(older);
    }
    expect(logLines.filter((line) => line.includes("hub 'hub-old' runs a leafmesh from before hubs said"))).toHaveLength(1);
  }, 60_000);

  it("relays when nothing else works, end to end encrypted, both ways", async () => {
    const c = await agent("edge-c", { ways: { direct: false, punch: false } });
    const d = await agent("edge-d", { ways: { direct: false, punch: false } });
    await eventually(() => c.directory?.get("edge-d") && d.directory?.get("edge-c"), 15_000, "records");
    // What a hub sees: subscribe to the relay subjects at the hub itself.
    const spy = await fabric.connect("hub-1");
    const seen: Buffer[] = [];
    spy.subscribe("relay.>", { callback: (_, message) => void seen.push(Buffer.from(message.data)) });
    await spy.flush();
    const marker = Buffer.from("PLAINTEXT-MARKER-leafmesh-");
    const payload = Buffer.concat([randomBytes(4 * 1024 * 1024), Buffer.alloc(64 * 1024, marker)]);
    const [there, back] = await Promise.all([
      c.openStream("edge-d", { host: "127.0.0.1", port: echoPort, protocol: "TCP" }).then((stream) => roundTrip(stream, payload)),
      d.openStream("edge-c", { host: "127.0.0.1", port: echoPort, protocol: "TCP" }).then((stream) => roundTrip(stream, payload)),
    ]);
    expect(sha(there)).toBe(sha(payload));
    expect(sha(back)).toBe(sha(payload));
    expect(c.pathTo("edge-d")).toBe("relayed");
    expect(seen.length).toBeGreaterThan(100);
    expect(seen.some((frame) => frame.includes(marker))).toBe(false);
    expect(c.connectionsTo("edge-d").every((entry) => entry.kind === "relayed")).toBe(true);
    await eventually(() => events.some((event) => event.subject === "mesh.edge-c.tunnel.relay" && (event.payload as { status: string }).status === "open"), 5_000, "relay event");
  }, 60_000);

  it("refuses a stream to a node that does not exist, with a clear error", async () => {
    const a = actors[0];
    await expect(a.openStream("no-such-node", { host: "127.0.0.1", port: echoPort, protocol: "TCP" })).rejects.toThrow(/unknown node 'no-such-node'/);
  });

  it("says the keys differ for a peer with another PSK, and keeps serving the others", async () => {
    const e = await agent("edge-e", { psk: otherPsk });
    const a = actors[0];
    await eventually(() => a.directory?.get("edge-e"), 15_000, "edge-e's record");
    await expect(a.openStream("edge-e", { host: "127.0.0.1", port: echoPort, protocol: "TCP" })).rejects.toThrow(/pre-shared keys differ/);
    expect(logLines.some((line) => line.includes("pre-shared keys differ") && line.includes("edge-e"))).toBe(true);
    const payload = randomBytes(1024);
    const stream = await a.openStream("edge-b", { host: "127.0.0.1", port: echoPort, protocol: "TCP" });
    expect(sha(await roundTrip(stream, payload))).toBe(sha(payload));
    expect(e.pathTo("edge-a")).toBeUndefined();
  }, 60_000);

  it("survives garbage and forged relay frames", async () => {
    const [c, d] = [actors[2], actors[3]];
    const nats = await fabric.connect("edge-a");
    for (let index = 0; index < 200; index++) {
      nats.publish(relaySubject("edge-d", "edge-c", `forged${index % 7}`), randomBytes(index % 40));
      nats.publish(relaySubject("edge-d", "mallory", "x"), randomBytes(64));
    }
    await nats.flush();
    await eventually(() => (d.relay?.drops.get("malformed frame") ?? 0) + (d.relay?.drops.get("unknown channel") ?? 0) > 0, 5_000, "drops counted");
    const payload = randomBytes(256 * 1024);
    const stream = await c.openStream("edge-d", { host: "127.0.0.1", port: echoPort, protocol: "TCP" });
    expect(sha(await roundTrip(stream, payload))).toBe(sha(payload));
  }, 60_000);

  it("carries UDP datagrams, one 2-byte-length frame each (the traffic actor's framing)", async () => {
    const { createSocket } = await import("node:dgram");
    const udpEcho = createSocket("udp4");
    udpEcho.on("message", (message, remote) => udpEcho.send(message, remote.port, remote.address));
    await new Promise<void>((resolve) => udpEcho.bind(0, "127.0.0.1", resolve));
    try {
      const stream = await actors[0].openStream("edge-b", { host: "127.0.0.1", port: udpEcho.address().port, protocol: "UDP" });
      const frame = (text: string) => {
        const payload = Buffer.from(text);
        const bytes = Buffer.alloc(2 + payload.length);
        bytes.writeUInt16BE(payload.length, 0);
        payload.copy(bytes, 2);
        return bytes;
      };
      let received = Buffer.alloc(0);
      stream.on("data", (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
      stream.write(Buffer.concat([frame("first datagram"), frame("second")]));
      await eventually(() => received.length >= 2 + 14 + 2 + 6, 5_000, "two echoed datagrams");
      expect(received.readUInt16BE(0)).toBe(14);
      expect(received.subarray(2, 16).toString()).toBe("first datagram");
      expect(received.subarray(18, 24).toString()).toBe("second");
      stream.destroy();
    } finally {
      udpEcho.close();
    }
  }, 30_000);

  it("resets the target's connection when the stream is reset at the opening side, never ends it", async () => {
    const outcomes: string[] = [];
    let received = 0;
    const target = createServer((socket) => {
      socket.on("data", (chunk: Buffer) => (received += chunk.byteLength));
      socket.once("end", () => outcomes.push("end"));
      socket.once("error", (error: NodeJS.ErrnoException) => outcomes.push(error.code ?? error.message));
    });
    await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
    try {
      const stream = await actors[0].openStream("edge-b", { host: "127.0.0.1", port: (target.address() as { port: number }).port, protocol: "TCP" });
      stream.on("error", () => undefined);
      stream.write(randomBytes(64 * 1024));
      await eventually(() => received === 64 * 1024, 10_000, "the bytes at the target");
      stream.destroy(new Error("the client went away"));
      await eventually(() => outcomes.length > 0, 10_000, "the target's connection to finish");
      expect(outcomes).toEqual(["ECONNRESET"]);
    } finally {
      target.close();
    }
  }, 30_000);

  it("tells the caller when the target refuses on the remote side", async () => {
    const a = actors[0];
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as { port: number }).port;
    closed.close();
    const refused = await a.openStream("edge-b", { host: "127.0.0.1", port, protocol: "TCP" }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(LeafmeshError);
    expect((refused as LeafmeshError).message).toMatch(/edge-b cannot connect to 127.0.0.1/);
    // A code to branch on: the target refused (its fault), not the mesh (TUNNEL_FAILED), and the remote connect's own code.
    expect(refused).toMatchObject({ code: "TUNNEL_TARGET_REFUSED", targetCode: "ECONNREFUSED" });
  }, 30_000);
});

describe("the mesh key", () => {
  it("keeps a peer with another key out at the handshake", async () => {
    const { startTunnelHost, failedHandshake } = await import("./host.ts");
    const { multiaddr } = await import("@multiformats/multiaddr");
    const { parsePsk } = await import("./psk.ts");
    const a = await startTunnelHost({ node: "key-a", listen: ["/ip4/127.0.0.1/tcp/0"], psk: parsePsk(testPsk), log: silentLogger(), mdns: false });
    const b = await startTunnelHost({ node: "key-b", listen: ["/ip4/127.0.0.1/tcp/0"], psk: parsePsk(otherPsk), log: silentLogger(), mdns: false });
    const c = await startTunnelHost({ node: "key-c", listen: ["/ip4/127.0.0.1/tcp/0"], psk: parsePsk(testPsk), log: silentLogger(), mdns: false });
    try {
      const failure = await a.libp2p.dial(b.libp2p.getMultiaddrs()[0]).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(Error);
      // Told by its class, not its text: what the tunnel branches on to say "the keys differ".
      expect(failedHandshake(failure)).toBe(true);
      expect(failedHandshake(new AggregateError([new Error("refused"), failure]))).toBe(true);
      // A peer that is not there fails elsewhere.
      const closed = await a.libp2p.dial(multiaddr(`/ip4/127.0.0.1/tcp/1/p2p/${b.libp2p.peerId.toString()}`)).catch((error: unknown) => error);
      expect(closed).toBeInstanceOf(Error);
      expect(failedHandshake(closed)).toBe(false);
      const connection = await a.libp2p.dial(c.libp2p.getMultiaddrs()[0]);
      expect(connection.remotePeer.toString()).toBe(c.libp2p.peerId.toString());
      expect(a.pskFingerprint).toBe(c.pskFingerprint);
      expect(a.pskFingerprint).not.toBe(b.pskFingerprint);
    } finally {
      await Promise.all([a.stop(), b.stop(), c.stop()]);
    }
  });

  it("rejects a key that is not in the swarm.key format, saying what it expects", async () => {
    const { parsePsk } = await import("./psk.ts");
    expect(() => parsePsk("secret")).toThrow(/swarm.key format/);
  });
});
