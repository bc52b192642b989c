/**
 * A client's first bytes on a libp2p stream (the carrier of every path kind where no TLS carrier serves: security
 * off, or the TLS carrier backed off). A spare TLS session carries them only if its peer was heard within
 * spareHeardWithinMs (spares.ts): a peer dead without a FIN or RST leaves it open, and bytes sent on it end the open
 * "in doubt". A libp2p stream needs no such rule: it is handed out only once the far agent answered its protocol
 * negotiation (libp2p's connection.newStream runs multistream-select, whose select() writes the header and the
 * protocol and reads both back: @libp2p/multistream-select 7, select.ts; yamux does not pre-negotiate), so its peer
 * was heard a round trip before the bytes go, and to a dead one the open fails before any went (host.ts openStream's
 * 10 s timeout): not in doubt. This file holds libp2p to that: two real tunnel hosts whose connection runs through a
 * TCP relay that can hold the answer direction (edge-b → edge-a); while held, no byte leaves the client.
 * Were a libp2p stream ever handed out before an answer (a lazy, pre-negotiated protocol), the second test fails,
 * and libp2p streams need spares.ts's rule (when the connection's peer was last heard).
 */
import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import { Readable, type Duplex } from "node:stream";
import { multiaddr } from "@multiformats/multiaddr";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../lib/clock.ts";
import { EarlyBytes } from "../../lib/early-bytes.ts";
import { silentLogger } from "../../lib/log.ts";
import { testPsk } from "../../test/support/tunnel-fabric.ts";
import { CarrierBackoff, type CarrierPeer } from "./carrier.ts";
import type { PathConnections } from "./connections.ts";
import { startTunnelHost, type TunnelHost } from "./host.ts";
import { parsePsk } from "./psk.ts";
import { Libp2pCarrier, StreamOpener } from "./stream-opener.ts";
import { StreamServer } from "./stream-server.ts";

const sockets = new Set<Socket>();
let hostA: TunnelHost;
let hostB: TunnelHost;
let relay: Server;
let target: Server;
let opener: StreamOpener;
let peer: CarrierPeer;
/** What the target read, per connection. */
const arrivals: string[] = [];
/** The answer direction through the relay (edge-b → edge-a): held (what comes waits) or released (it goes, then the rest). */
const answers = { held: false, waiting: [] as Buffer[], release: () => undefined as void };

beforeAll(async () => {
  target = createServer((socket) => {
    const index = arrivals.push("") - 1;
    socket.on("error", () => undefined).on("data", (chunk: Buffer) => {
      arrivals[index] += chunk.toString();
      socket.write(chunk);
    });
  });
  await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
  const server = new StreamServer({ node: "edge-b", log: silentLogger() });
  const options = { listen: ["/ip4/127.0.0.1/tcp/0"], psk: parsePsk(testPsk), log: silentLogger(), mdns: false };
  hostB = await startTunnelHost({ ...options, node: "edge-b", onStream: (stream) => void server.serve(stream, "edge-a") });
  hostA = await startTunnelHost({ ...options, node: "edge-a" });
  const portB = Number(hostB.libp2p.getMultiaddrs()[0].toString().split("/")[4]);
  relay = createServer((near) => {
    const far = netConnect({ host: "127.0.0.1", port: portB });
    for (const socket of [near, far]) sockets.add(socket.on("error", () => undefined));
    near.pipe(far);
    // Either side gone takes the other with it (a relay's sockets outlive nothing they carry): a reset or an error
    // as a reset, a clean close as a close. A side already closed is left as it is (destroying it again does nothing).
    near.once("close", (hadError) => (hadError ? far.resetAndDestroy() : far.destroy()));
    far.once("close", (hadError) => (hadError ? near.resetAndDestroy() : near.destroy()));
    far.on("data", (chunk: Buffer) => (answers.held ? answers.waiting.push(chunk) : near.write(chunk)));
    answers.release = () => {
      answers.held = false;
      for (const chunk of answers.waiting.splice(0)) near.write(chunk);
    };
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
  const connection = await hostA.libp2p.dial(multiaddr(`/ip4/127.0.0.1/tcp/${(relay.address() as { port: number }).port}/p2p/${hostB.libp2p.peerId}`));
  // The one connection, through the relay; no TLS carrier: every stream is a libp2p one.
  const connections = { ranked: () => (connection.status === "open" ? [{ connection }] : []) } as unknown as PathConnections;
  opener = new StreamOpener({ connections, libp2p: new Libp2pCarrier({ host: hostA, connections }), tlsCarriers: {}, backoff: new CarrierBackoff({ clock: new ManualClock(), log: silentLogger() }), log: silentLogger(), headerTimeoutMs: 5_000 });
  peer = { node: "edge-b", peerId: hostB.libp2p.peerId.toString(), protocol: 2 };
}, 30_000);

afterAll(async () => {
  answers.release();
  for (const socket of sockets) socket.destroy();
  await hostA?.stop();
  await hostB?.stop();
  relay?.close();
  target?.close();
});

/** A client's first bytes, as the proxy holds them unread. */
function clientBytes(text: string): { source: Readable; early: EarlyBytes } {
  const source = new Readable({ read: () => undefined });
  source.push(text);
  return { source, early: new EarlyBytes(source) };
}

const targetOf = () => ({ host: "127.0.0.1", port: (target.address() as { port: number }).port, protocol: "TCP" as const });
const echoOf = (stream: Duplex) => new Promise<string>((resolve) => stream.once("data", (chunk: Buffer) => resolve(chunk.toString())));

describe("a client's first bytes on a libp2p stream", () => {
  it("go with the target header", async () => {
    const { early } = clientBytes("hello");
    const stream = await opener.open(peer, "direct", targetOf(), undefined, early);
    expect(early.sentBytes).toBe(5);
    expect(await echoOf(stream)).toBe("hello");
    stream.destroy();
  });

  it("leave the client only after the far agent answered on the connection (the stream's protocol negotiation)", async () => {
    answers.held = true;
    const { source, early } = clientBytes("again");
    const opening = opener.open(peer, "direct", targetOf(), undefined, early);
    let opened = false;
    void opening.then(() => (opened = true), () => undefined);
    // Nothing from edge-b gets through: the stream is not handed out, so no byte went (a dead peer is the same, for ever).
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(opened).toBe(false);
    expect(early.sentBytes).toBe(0);
    expect(source.readableLength).toBe(5);
    expect(arrivals).toEqual(["hello"]);
    answers.release();
    const stream = await opening;
    expect(early.sentBytes).toBe(5); // with the header, once the stream was there
    expect(await echoOf(stream)).toBe("again");
    expect(arrivals).toEqual(["hello", "again"]);
    stream.destroy();
  }, 15_000);
});
