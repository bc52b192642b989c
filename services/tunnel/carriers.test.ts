/**
 * Every carrier of the tunnel (carrier.ts) through one compliance suite
 * (test/support/carrier-compliance.ts), over real things on loopback: TLS
 * streams with the nodes' mesh certificates, relay channels through a real
 * nats-server fabric (hub + one leaf per node), libp2p hosts.
 *
 * Hole-punched TLS: the carrier as the tunnel builds it (PunchedTlsCarrier:
 * spares, TLS over a punched net.Socket), its sockets punched by punch.ts's
 * listen-and-dial plan on loopback. Simultaneous open cannot be built here: on
 * loopback the first SYN meets a port with no socket in SYN-SENT yet and the
 * kernel answers it with RST at once (behind NATs that SYN is dropped or
 * matched); the NAT lab covers all three plans (punched-tls.test.ts).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { createServer, connect as netConnect, type Server } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { multiaddr } from "@multiformats/multiaddr";
import { joinStreams } from "../../lib/join-streams.ts";
import { silentLogger } from "../../lib/log.ts";
import { systemClock } from "../../lib/clock.ts";
import { initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { loadNodeSecurity, nodeIdentityPems } from "../../trust/security.ts";
import { requireTools } from "../../test/support/trust-servers.ts";
import { eventually } from "../../test/support/ports.ts";
import { startFabric, testPsk, type TestFabric } from "../../test/support/tunnel-fabric.ts";
import { carrierCompliance, TaggedPairs } from "../../test/support/carrier-compliance.ts";
import type { CarrierPeer } from "./carrier.ts";
import { PathConnections } from "./connections.ts";
import { startTunnelHost, type TunnelHost } from "./host.ts";
import { freeLocalPort } from "./nat.ts";
import type { NodeIdentity } from "./node-identity.ts";
import { parsePsk } from "./psk.ts";
import { acceptOnce, dialPunched } from "./punch.ts";
import { RelayEndpoint } from "./relay.ts";
import { SpareSessions } from "./spares.ts";
import { Libp2pCarrier } from "./stream-opener.ts";
import { DirectTlsCarrier, PunchedTlsCarrier, RelayedTlsCarrier, TlsStreams } from "./tls-carriers.ts";

const log = silentLogger();
const clock = systemClock;
const mib = 1024 * 1024;

/** What several carriers share, made once: the fabric and the nodes' certificates. */
let shared: Promise<{ fabric: TestFabric; identities: Record<string, NodeIdentity>; dir: string }> | undefined;
function world() {
  shared ??= (async () => {
    requireTools();
    const dir = mkdtempSync(join(tmpdir(), "leafmesh-carriers-"));
    await initKeys({ dir });
    const identities: Record<string, NodeIdentity> = {};
    for (const node of ["edge-a", "edge-b"]) {
      await issueNode({ dir, node });
      identities[node] = nodeIdentityPems(loadNodeSecurity(dir, node));
    }
    const fabric = await startFabric({ hubs: 1, leaves: ["leaf-a", "leaf-b"] });
    return { fabric, identities, dir };
  })();
  return shared;
}

afterAll(async () => {
  if (!shared) return;
  const { fabric, dir } = await shared;
  await fabric.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Two relay endpoints for `a` and `b` on the fabric's two leaves, once `a` can open channels to `b`. */
async function relayPair(a: string, b: string, onChannel: (channel: import("./relay.ts").RelayChannel) => void): Promise<{ near: RelayEndpoint; far: RelayEndpoint; connections: NatsConnection[] }> {
  const { fabric } = await world();
  const connections = [await fabric.connect("leaf-a"), await fabric.connect("leaf-b")];
  const far = new RelayEndpoint({ nats: connections[1], node: b, log, clock, onChannel });
  const near = new RelayEndpoint({ nats: connections[0], node: a, log, clock, onChannel: (channel) => channel.destroy() });
  // The leafs learn each other's interest through the hub.
  await eventually(async () => (await near.open(b).then((channel) => (channel.destroy(), true), () => false)), 20_000, `relay ${a} → ${b}`);
  return { near, far, connections };
}

/** TLS streams at both ends, the far end's served streams handed to `pairs`. */
async function tlsPair(pairs: TaggedPairs): Promise<{ near: TlsStreams; far: TlsStreams }> {
  const { identities } = await world();
  const listen = { host: "127.0.0.1", port: 0 };
  const near = await TlsStreams.start({ identity: identities["edge-a"], listen, log, onStream: (stream) => stream.destroy() });
  const far = await TlsStreams.start({ identity: identities["edge-b"], listen, log, onStream: (stream) => pairs.arrive(stream) });
  return { near, far };
}

const edgeB: CarrierPeer = { node: "edge-b", peerId: "not-used-by-tls-carriers" };

{
  const pairs = new TaggedPairs();
  let relays: Awaited<ReturnType<typeof relayPair>>;
  carrierCompliance("relay channel", {
    async setup() {
      relays = await relayPair("relay-a", "relay-b", (channel) => pairs.arrive(channel));
      return { pair: async () => pairs.pair(await relays.near.open("relay-b")), maxAheadBytes: 6 * mib };
    },
    async teardown() {
      pairs.close();
      relays?.near.close();
      relays?.far.close();
    },
  });
}

{
  const pairs = new TaggedPairs();
  let tls: Awaited<ReturnType<typeof tlsPair>>;
  carrierCompliance("direct TLS", {
    async setup() {
      tls = await tlsPair(pairs);
      const carrier = new DirectTlsCarrier({ tls: tls.near, timeoutMs: 5_000, addressOf: async () => ({ host: "127.0.0.1", port: tls.far.port }) });
      return { pair: async () => pairs.pair((await carrier.open(edgeB))!), maxAheadBytes: 16 * mib };
    },
    async teardown() {
      pairs.close();
      await tls?.near.close();
      await tls?.far.close();
    },
  });
}

{
  const pairs = new TaggedPairs();
  let tls: Awaited<ReturnType<typeof tlsPair>>;
  const spares = new SpareSessions({ clock });
  // As the tunnel runs it: each stream takes the connection made ahead of it.
  carrierCompliance("direct TLS with spare connections", {
    async setup() {
      tls = await tlsPair(pairs);
      const carrier = new DirectTlsCarrier({ tls: tls.near, timeoutMs: 5_000, spares, addressOf: async () => ({ host: "127.0.0.1", port: tls.far.port }) });
      return { pair: async () => pairs.pair((await carrier.open(edgeB))!), maxAheadBytes: 16 * mib };
    },
    async teardown() {
      spares.close();
      pairs.close();
      await tls?.near.close();
      await tls?.far.close();
    },
  });
}

describe("direct TLS with spare connections", () => {
  it("makes the next stream's TLS connection ahead of it when asked (prepareNext), and the next stream takes it", async () => {
    const pairs = new TaggedPairs();
    const tls = await tlsPair(pairs);
    const spares = new SpareSessions({ clock });
    // Counts the TCP connections the carrier makes to the far end's TLS port.
    let connections = 0;
    const counter: Server = createServer((socket) => {
      connections++;
      joinStreams(socket, netConnect({ host: "127.0.0.1", port: tls.far.port }));
    });
    await new Promise<void>((resolve) => counter.listen(0, "127.0.0.1", resolve));
    const port = (counter.address() as { port: number }).port;
    try {
      const carrier = new DirectTlsCarrier({ tls: tls.near, timeoutMs: 5_000, spares, addressOf: async () => ({ host: "127.0.0.1", port }) });
      const first = await pairs.pair((await carrier.open(edgeB))!);
      // The first stream's own connection only: the next one's is made when the opener asks (stream-opener.ts), after the open.
      expect(connections).toBe(1);
      carrier.prepareNext(edgeB);
      await eventually(() => connections === 2, 10_000, "a spare connection made");
      const second = await pairs.pair((await carrier.open(edgeB))!);
      carrier.prepareNext(edgeB);
      second.near.end(Buffer.from("over the spare"));
      second.far.resume();
      expect(second.far.readable || second.far.readableEnded).toBe(true);
      // The second stream used the spare; only the spare for a third was made.
      await eventually(() => connections === 3, 10_000, "the next spare made");
      expect(connections).toBe(3);
      first.near.destroy();
      second.near.destroy();
    } finally {
      spares.close();
      pairs.close();
      counter.close();
      await tls.near.close();
      await tls.far.close();
    }
  }, 30_000);
});

{
  const pairs = new TaggedPairs();
  let tls: Awaited<ReturnType<typeof tlsPair>>;
  const spares = new SpareSessions({ clock });
  carrierCompliance("punched TLS (listen-and-dial punch on loopback)", {
    async setup() {
      tls = await tlsPair(pairs);
      const carrier = new PunchedTlsCarrier({
        tls: tls.near,
        spares,
        timeoutMs: 5_000,
        ready: () => true,
        punch: async () => {
          const port = await freeLocalPort();
          const accepting = acceptOnce({ localPort: port, fromHost: "127.0.0.1", timeoutMs: 5_000 });
          const [near, far] = await Promise.all([dialPunched({ remote: { host: "127.0.0.1", port }, timeoutMs: 5_000 }), accepting]);
          tls.far.accept(far, "edge-a", "hole-punched");
          return near;
        },
        onFailure: (_, error) => log.warn({ err: error }, "spare punch failed"),
      });
      // A stream takes the spare punched for it (none for the first): asked for, then open until one is ready.
      const pair = async () =>
        pairs.pair(
          await eventually(() => {
            carrier.prepareNext(edgeB);
            return carrier.open(edgeB);
          }, 20_000, "a punched spare"),
        );
      return { pair, maxAheadBytes: 16 * mib };
    },
    async teardown() {
      spares.close();
      pairs.close();
      await tls?.near.close();
      await tls?.far.close();
    },
  });
}

{
  const pairs = new TaggedPairs();
  let tls: Awaited<ReturnType<typeof tlsPair>>;
  let relays: Awaited<ReturnType<typeof relayPair>>;
  const spares = new SpareSessions({ clock });
  carrierCompliance("relayed TLS", {
    async setup() {
      tls = await tlsPair(pairs);
      // The relay endpoints are named as the certificates: a TLS session over a channel must come from the node its subject names.
      relays = await relayPair("edge-a", "edge-b", (channel) => {
        channel.on("error", () => undefined);
        if (channel.purpose === "tls-stream") tls.far.accept(channel, channel.peer, "relayed");
        else channel.destroy();
      });
      const carrier = new RelayedTlsCarrier({ tls: tls.near, relay: relays.near, spares, timeoutMs: 5_000, servesTls: () => true });
      return { pair: async () => pairs.pair((await carrier.open(edgeB))!), maxAheadBytes: 6 * mib };
    },
    async teardown() {
      spares.close();
      pairs.close();
      relays?.near.close();
      relays?.far.close();
      await tls?.near.close();
      await tls?.far.close();
    },
  });
}

/** Two libp2p hosts, the far one's inbound tunnel streams handed to `pairs`; with `relayed`, their connection runs over a relay channel. */
async function libp2pPair(pairs: TaggedPairs, relayed: boolean) {
  const psk = parsePsk(testPsk);
  const hosts: TunnelHost[] = [];
  const near = await startTunnelHost({ node: "lp-a", listen: ["/ip4/127.0.0.1/tcp/0"], psk, log, mdns: false });
  hosts.push(near);
  const far = await startTunnelHost({ node: "lp-b", listen: ["/ip4/127.0.0.1/tcp/0"], psk, log, mdns: false, onStream: (stream) => pairs.arrive(stream) });
  hosts.push(far);
  let relays: Awaited<ReturnType<typeof relayPair>> | undefined;
  let connections: PathConnections;
  if (relayed) {
    // The far end takes relay channels as libp2p connections (accepting needs no relay endpoint of its own).
    const farConnections = new PathConnections({ host: far, log, clock });
    relays = await relayPair("lp-a", "lp-b", (channel) => farConnections.acceptRelayed(channel));
    connections = new PathConnections({ host: near, relay: relays.near, log, clock });
    await connections.openRelayed("lp-b", far.libp2p.peerId.toString());
  } else {
    connections = new PathConnections({ host: near, log, clock });
    await near.libp2p.dial(multiaddr(`${far.libp2p.getMultiaddrs()[0].toString()}`));
  }
  const peer: CarrierPeer = { node: "lp-b", peerId: far.libp2p.peerId.toString() };
  const carrier = new Libp2pCarrier({ host: near, connections });
  return {
    pair: async (): Promise<{ near: Duplex; far: Duplex }> => pairs.pair((await carrier.open(peer))!),
    kinds: () => connections.ranked(peer.peerId).map((entry) => entry.kind),
    stop: async () => {
      relays?.near.close();
      relays?.far.close();
      for (const host of hosts) await host.stop();
    },
  };
}

for (const relayed of [false, true]) {
  const pairs = new TaggedPairs();
  let hosts: Awaited<ReturnType<typeof libp2pPair>> | undefined;
  carrierCompliance(relayed ? "libp2p stream over a relay channel" : "libp2p stream over TCP", {
    async setup() {
      hosts = await libp2pPair(pairs, relayed);
      if (hosts.kinds()[0] !== (relayed ? "relayed" : "direct")) throw new Error(`expected a ${relayed ? "relayed" : "direct"} connection, got ${hosts.kinds().join(", ")}`);
      return { pair: hosts.pair, maxAheadBytes: relayed ? 6 * mib : 16 * mib };
    },
    async teardown() {
      pairs.close();
      await hosts?.stop();
    },
  });
}
