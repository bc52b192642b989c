/**
 * A hole-punched socket between two IPv6 nodes (a stateful firewall in front of each: the
 * IPv6 equivalent of a NAT for punching) becomes a libp2p connection with its /ip6 address,
 * counted as hole-punched; an IPv4 one (also as a dual-stack listener sees it, ::ffff:…)
 * keeps its /ip4 one. Probed before: connections.ts built "/ip4/<IPv6 address>" for every
 * punched socket, the upgrade threw, and an IPv6 pair that could punch was relayed.
 * Real libp2p hosts and a real TCP connection over the loopback of each family.
 */
import { randomBytes } from "node:crypto";
import { connect, createServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { PathConnections, punchedAddress } from "./connections.ts";
import { startTunnelHost, type TunnelHost } from "./host.ts";
import { parsePsk } from "./psk.ts";

const psk = parsePsk(`/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString("hex")}\n`);
let near: TunnelHost;
let far: TunnelHost;

beforeAll(async () => {
  near = await startTunnelHost({ node: "punch6-a", listen: ["/ip4/127.0.0.1/tcp/0"], psk, log: silentLogger(), mdns: false });
  far = await startTunnelHost({ node: "punch6-b", listen: ["/ip4/127.0.0.1/tcp/0"], psk, log: silentLogger(), mdns: false });
});
afterAll(async () => {
  await Promise.all([near?.stop(), far?.stop()]);
});

/** A TCP connection between the two ends over `host`, as a punch leaves it: one socket each. */
async function socketPair(host: string): Promise<[Socket, Socket]> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const accepted = new Promise<Socket>((resolve) => server.once("connection", resolve));
  const dialled = connect({ host, port: (server.address() as { port: number }).port });
  await new Promise((resolve) => dialled.once("connect", resolve));
  const inbound = await accepted;
  server.close();
  return [dialled, inbound];
}

describe("hole-punched sockets of either address family", () => {
  it("upgrades an IPv6 punched socket to a hole-punched connection at its /ip6 address", async () => {
    const clock = new ManualClock();
    const nearConnections = new PathConnections({ host: near, log: silentLogger(), clock });
    const farConnections = new PathConnections({ host: far, log: silentLogger(), clock });
    const [outbound, inbound] = await socketPair("::1");
    const [made] = await Promise.all([
      nearConnections.upgradePunched(outbound, "outbound", { node: "punch6-b", peerId: far.libp2p.peerId.toString() }),
      farConnections.upgradePunched(inbound, "inbound"),
    ]);
    expect(made?.remoteAddr.decapsulateCode(421).toString()).toBe(`/ip6/::1/tcp/${outbound.remotePort}`);
    expect(nearConnections.kindOf(made!)).toBe("hole-punched");
    expect(nearConnections.ranked(far.libp2p.peerId.toString()).map((entry) => entry.kind)).toEqual(["hole-punched"]);
    await made?.close();
  });

  it("names each family's address as it is, and refuses a socket that has none with the reason", () => {
    expect(punchedAddress("198.18.64.12", 4101).toString()).toBe("/ip4/198.18.64.12/tcp/4101");
    expect(punchedAddress("::ffff:198.18.64.12", 4101).toString()).toBe("/ip4/198.18.64.12/tcp/4101");
    expect(punchedAddress("fd00:18::b", 4101).toString()).toBe("/ip6/fd00:18::b/tcp/4101");
    expect(() => punchedAddress(undefined, undefined)).toThrow(/punched socket has no remote address/);
  });
});
