/**
 * Streams on direct paths over TLS connections of their own (tls-streams.ts):
 * tunnel actors with mesh certificates on a real fabric, on loopback.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Bus } from "../../bus/bus.ts";
import { createLogger, silentLogger } from "../../lib/log.ts";
import { initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { loadNodeSecurity, nodeIdentityPems } from "../../trust/security.ts";
import { requireTools } from "../../test/support/trust-servers.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { createTunnelActor, type NodeIdentity, type TunnelActor } from "./index.ts";
import { roundTrip, sha, startFabric, testPsk, type TestFabric, startTcpEcho } from "../../test/support/tunnel-fabric.ts";
import { connectTlsStream } from "./tls-streams.ts";

const base = mkdtempSync(join(tmpdir(), "leafmesh-tls-streams-"));
const identities: Record<string, NodeIdentity> = {};
let fabric: TestFabric;
let echo: Server;
let echoPort: number;
const actors: TunnelActor[] = [];
const logLines: string[] = [];

const identityOf = (dir: string, node: string): NodeIdentity => nodeIdentityPems(loadNodeSecurity(dir, node));

async function agent(node: string, tlsStreams?: { host: string; port: number }, ways?: { direct?: boolean; punch?: boolean; relay?: boolean }): Promise<TunnelActor> {
  const nats = await fabric.connect(node);
  const log = createLogger({ level: "info", destination: new Writable({ write: (chunk, _encoding, callback) => (logLines.push(chunk.toString()), callback()) }) });
  const bus = new Bus({ connection: nats, node, log: silentLogger() });
  const tunnel = createTunnelActor({ bus, log, node, nats, listen: ["/ip4/127.0.0.1/tcp/0"], psk: testPsk, mdns: false, recordRefreshMs: 500, identity: identities[node], tlsStreams, ways });
  await tunnel.start();
  actors.push(tunnel);
  return tunnel;
}

beforeAll(async () => {
  requireTools();
  const keys = join(base, "keys");
  const stranger = join(base, "stranger");
  await initKeys({ dir: keys });
  await initKeys({ dir: stranger });
  for (const node of ["edge-a", "edge-b", "edge-c", "edge-d", "edge-e", "edge-f"]) {
    await issueNode({ dir: keys, node });
    identities[node] = identityOf(keys, node);
  }
  await issueNode({ dir: stranger, node: "edge-a" });
  identities.stranger = identityOf(stranger, "edge-a");
  // A stream cut by the tunnel resets its target connection: the echo hears ECONNRESET.
  ({ server: echo, port: echoPort } = await startTcpEcho());
  fabric = await startFabric({ hubs: 1, leaves: ["edge-a", "edge-b", "edge-c", "edge-d", "edge-e", "edge-f", "edge-x"] });
}, 90_000);

afterAll(async () => {
  for (const actor of actors) await actor.stop();
  await fabric?.stop();
  echo?.close();
  rmSync(base, { recursive: true, force: true });
});

describe("TLS streams on direct paths", () => {
  let a: TunnelActor;
  let b: TunnelActor;

  it("carries a stream on a direct path over its own TLS connection, both ways, half-close included", async () => {
    a = await agent("edge-a", { host: "127.0.0.1", port: 0 });
    b = await agent("edge-b", { host: "127.0.0.1", port: 0 });
    await eventually(() => a.directory?.get("edge-b") && b.directory?.get("edge-a"), 15_000, "records");
    const payload = randomBytes(4 * 1024 * 1024);
    const [there, back] = await Promise.all([
      a.openStream("edge-b", { host: "127.0.0.1", port: echoPort, protocol: "TCP" }).then((stream) => roundTrip(stream, payload)),
      b.openStream("edge-a", { host: "127.0.0.1", port: echoPort, protocol: "TCP" }).then((stream) => roundTrip(stream, payload)),
    ]);
    expect(sha(there)).toBe(sha(payload));
    expect(sha(back)).toBe(sha(payload));
    expect(a.pathTo("edge-b")).toBe("direct");
    // Each end opened one and served the other's.
    expect(a.status().tlsStreams).toMatchObject({ opened: 1, served: 1 });
    expect(b.status().tlsStreams).toMatchObject({ opened: 1, served: 1 });
  }, 60_000);

  it("passes the target's refusal through, as on libp2p", async () => {
    const closed = await freePort();
    await expect(a.openStream("edge-b", { host: "127.0.0.1", port: closed, protocol: "TCP" })).rejects.toThrow(`edge-b cannot connect to 127.0.0.1:${closed}`);
  });

  it("accepts only the node it meant, and serves only certificates of the mesh's CA", async () => {
    const port = tlsPortOfActor(b);
    const served = b.status().tlsStreams.served;
    await expect(connectTlsStream({ identity: identities["edge-a"], node: "edge-c", host: "127.0.0.1", port, timeoutMs: 3_000 })).rejects.toThrow("presented the certificate of 'edge-b', not of node 'edge-c'");
    // A certificate of another mesh (another CA) never completes the handshake.
    await expect(connectTlsStream({ identity: identities.stranger, node: "edge-b", host: "127.0.0.1", port, timeoutMs: 3_000 })).rejects.toThrow();
    // Nor does a client without any certificate.
    await new Promise<void>((resolve) => {
      const socket = tlsConnect({ host: "127.0.0.1", port, rejectUnauthorized: false });
      socket.on("error", () => resolve());
      socket.on("close", () => resolve());
    });
    await eventually(() => Object.keys(b.status().tlsStreams.refused).length >= 1, 5_000, "the refusals counted");
    expect(logLines.join("")).toContain("TLS tunnel connection refused");
    expect(b.status().tlsStreams.served).toBe(served);
  });

  it("falls back to libp2p when a peer's TLS port answers with something else, and says so once", async () => {
    // edge-d serves TLS on 127.0.0.2; on 127.0.0.1 (where a dials it) that port is a plain TCP server that hangs up.
    const port = await freePort();
    const impostor = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => impostor.listen(port, "127.0.0.1", resolve));
    try {
      await agent("edge-d", { host: "127.0.0.2", port });
      await eventually(() => a.directory?.get("edge-d"), 15_000, "edge-d's record");
      const opened = a.status().tlsStreams.opened;
      for (let round = 0; round < 2; round++) {
        const payload = randomBytes(256 * 1024);
        expect(sha(await roundTrip(await a.openStream("edge-d", { host: "127.0.0.1", port: echoPort, protocol: "TCP" }), payload))).toBe(sha(payload));
      }
      expect(a.status().tlsStreams.opened).toBe(opened);
      expect(logLines.filter((line) => line.includes("TLS stream to a direct peer failed")).length).toBe(1);
    } finally {
      impostor.close();
    }
  }, 60_000);

  it("stopping a node ends the TLS streams it serves in an error at the far end, never a clean end (stop does not wait for them)", async () => {
    const stream = await a.openStream("edge-b", { host: "127.0.0.1", port: echoPort, protocol: "TCP" });
    let echoed = "";
    const ended = new Promise<string>((resolve) => {
      stream.on("data", (chunk: Buffer) => void (echoed += chunk.toString()));
      stream.on("error", (error: NodeJS.ErrnoException) => resolve(`error ${error.code ?? error.message}`));
      stream.on("end", () => resolve("a clean end"));
      // Node may emit a TLS session's 'close' ahead of its 'error' (tls-streams.ts, resetWithCarrier): `errored` tells.
      stream.on("close", () => {
        const error = stream.errored as NodeJS.ErrnoException | null;
        resolve(error ? `error ${error.code ?? error.message}` : "closed without an error");
      });
    });
    stream.write("still open");
    await eventually(() => b.status().tlsStreams.served >= 3, 5_000, "the stream served over TLS");
    // Everything sent has come back: a FIN now reads as a clean end here (unread data would have made the kernel reset).
    await eventually(() => echoed === "still open", 5_000, "the echo");
    await b.stop();
    expect(await ended).toBe("error ECONNRESET");
  }, 30_000);

  it("keeps every stream on libp2p towards a peer that does not serve TLS streams", async () => {
    await agent("edge-c");
    await eventually(() => a.directory?.get("edge-c"), 15_000, "edge-c's record");
    const opened = a.status().tlsStreams.opened;
    const payload = randomBytes(256 * 1024);
    expect(sha(await roundTrip(await a.openStream("edge-c", { host: "127.0.0.1", port: echoPort, protocol: "TCP" }), payload))).toBe(sha(payload));
    expect(a.status().tlsStreams.opened).toBe(opened);
  }, 60_000);
});

function tlsPortOfActor(actor: TunnelActor): number {
  const port = actor.tlsStreamPort;
  if (!port) throw new Error("no TLS stream port");
  return port;
}

describe("TLS streams over the relay", () => {
  it("gives each relayed stream a relay channel of its own under TLS end to end: the hub sees ciphertext only", async () => {
    const e = await agent("edge-e", { host: "127.0.0.1", port: 0 }, { direct: false, punch: false });
    const f = await agent("edge-f", { host: "127.0.0.1", port: 0 }, { direct: false, punch: false });
    await eventually(() => e.directory?.get("edge-f") && f.directory?.get("edge-e"), 15_000, "records");
    const spy = await fabric.connect("hub-1");
    const seen: Buffer[] = [];
    spy.subscribe("relay.>", { callback: (_, message) => void seen.push(Buffer.from(message.data)) });
    await spy.flush();
    const marker = Buffer.from("PLAINTEXT-MARKER-leafmesh-");
    // The first stream may go over the relayed libp2p connection while identify tells e that f serves TLS.
    await eventually(async () => {
      await roundTrip(await e.openStream("edge-f", { host: "127.0.0.1", port: echoPort, protocol: "TCP" }), Buffer.from("warm-up"));
      return e.status().tlsStreams.opened > 0;
    }, 15_000, "a relayed TLS stream");
    expect(e.pathTo("edge-f")).toBe("relayed");
    const opened = e.status().tlsStreams.opened;
    const payload = Buffer.concat([randomBytes(4 * 1024 * 1024), Buffer.alloc(64 * 1024, marker)]);
    const [there, back] = await Promise.all([
      e.openStream("edge-f", { host: "127.0.0.1", port: echoPort, protocol: "TCP" }).then((stream) => roundTrip(stream, payload)),
      f.openStream("edge-e", { host: "127.0.0.1", port: echoPort, protocol: "TCP" }).then((stream) => roundTrip(stream, payload)),
    ]);
    expect(sha(there)).toBe(sha(payload));
    expect(sha(back)).toBe(sha(payload));
    expect(e.status().tlsStreams.opened).toBe(opened + 1);
    expect(f.status().tlsStreams.served).toBeGreaterThanOrEqual(opened + 1);
    // A stream leaves a spare session behind (a channel with TLS done): the next stream takes it.
    await eventually(() => e.status().relayChannels >= 2, 5_000, "the spare's channel");
    const channelsBefore = e.status().relayChannels;
    const next = await e.openStream("edge-f", { host: "127.0.0.1", port: echoPort, protocol: "TCP" });
    expect(sha(await roundTrip(next, payload))).toBe(sha(payload));
    expect(e.status().tlsStreams.opened).toBe(opened + 2);
    await eventually(() => e.status().relayChannels <= channelsBefore, 5_000, "the used session's channel closed, a new spare in its place");
    const carried = Buffer.concat(seen);
    expect(carried.byteLength).toBeGreaterThan(payload.byteLength);
    expect(carried.includes(marker)).toBe(false);
  }, 60_000);

  it("refuses a TLS relay channel whose certificate is not the node its subject names", async () => {
    // edge-x publishes on its own relay subjects but presents edge-a's certificate (stolen).
    const { RelayEndpoint } = await import("./relay.ts");
    const { tlsClientOver } = await import("./tls-streams.ts");
    const relay = new RelayEndpoint({ nats: await fabric.connect("edge-x"), node: "edge-x", log: silentLogger(), onChannel: () => undefined });
    try {
      const channel = await relay.open("edge-f", "tls-stream");
      channel.on("error", () => undefined);
      // TLS 1.3: the client may finish its handshake before the server has looked at its certificate.
      const socket = await tlsClientOver(channel, { identity: identities["edge-a"], node: "edge-f", timeoutMs: 5_000, where: "the relay", point: "relayed TLS" }).catch(() => undefined);
      if (socket) await new Promise<void>((resolve) => (socket.on("error", () => resolve()), socket.on("close", () => resolve()), socket.resume()));
      await eventually(() => logLines.some((line) => line.includes("TLS stream over the relay refused") && line.includes("presented the certificate of 'edge-a'")), 5_000, "the refusal in edge-f's log");
    } finally {
      relay.close();
    }
  }, 30_000);
});
