/**
 * LAN neighbours that fail the encrypted handshake (real libp2p hosts with two different keys): left alone
 * for a while instead of dialled at every mDNS answer, remembered within a bound, logged as a burst; a
 * neighbour of the same mesh is dialled at each answer as before.
 */
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { multiaddr } from "@multiformats/multiaddr";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { capturedLog } from "../../test/support/log-lines.ts";
import { eventually } from "../../test/support/ports.ts";
import { startTunnelHost, type TunnelHost } from "./host.ts";
import { LanDials } from "./lan-dials.ts";
import { parsePsk } from "./psk.ts";

const newPsk = () => parsePsk(`/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString("hex")}\n`);


describe("LanDials", () => {
  it("leaves a neighbour that fails the handshake alone for retryMs, logs failures as one burst, and keeps dialling its own mesh's", { timeout: 30_000 }, async () => {
    const ours = newPsk();
    const hosts: TunnelHost[] = [];
    const start = async (node: string, psk: Uint8Array) => {
      const host = await startTunnelHost({ node, listen: ["/ip4/127.0.0.1/tcp/0"], psk, log: silentLogger(), mdns: false });
      hosts.push(host);
      return host;
    };
    try {
      const a = await start("dial-a", ours);
      const friend = await start("dial-b", ours);
      const strangers = [await start("dial-x", newPsk()), await start("dial-y", newPsk())];
      for (const other of [friend, ...strangers]) await a.libp2p.peerStore.merge(other.libp2p.peerId, { multiaddrs: other.libp2p.getMultiaddrs() });

      const clock = new ManualClock(Date.now());
      const { log, lines } = capturedLog("debug");
      const dialled: string[] = [];
      const dials = new LanDials({
        dial: (peer, signal) => {
          dialled.push(peer.toString());
          return a.libp2p.dial(peer, { signal });
        },
        log,
        clock,
        retryMs: 60_000,
        maxRemembered: 1,
      });
      const stranger = strangers[0].libp2p.peerId;
      dials.found(stranger);
      await eventually(() => dials.refused === 1, 10_000, "the stranger's handshake to fail");
      // Its next answers: not dialled.
      for (let answer = 0; answer < 5; answer++) dials.found(stranger);
      expect(dialled.filter((peer) => peer === stranger.toString())).toHaveLength(1);
      // A neighbour of this mesh is dialled at each answer, and connects.
      dials.found(friend.libp2p.peerId);
      dials.found(friend.libp2p.peerId);
      expect(dialled.filter((peer) => peer === friend.libp2p.peerId.toString())).toHaveLength(2);
      await eventually(() => a.libp2p.getConnections(friend.libp2p.peerId).length > 0, 10_000, "the friend to connect");
      expect(dials.refused).toBe(1);

      // A second stranger: remembered instead of the first (at most one), one warning for both.
      dials.found(strangers[1].libp2p.peerId);
      await eventually(() => lines.filter((line) => String(line.msg).includes("failed the encrypted handshake")).length === 1 && dialled.length === 4, 10_000, "the second stranger's dial");
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(dials.refused).toBe(1);
      expect(lines.filter((line) => line.level === 40 && String(line.msg).includes("failed the encrypted handshake"))).toHaveLength(1);
      // The first was forgotten: dialled again at its next answer. The second is still left alone.
      dials.found(stranger);
      dials.found(strangers[1].libp2p.peerId);
      expect(dialled.filter((peer) => peer === stranger.toString())).toHaveLength(2);
      expect(dialled.filter((peer) => peer === strangers[1].libp2p.peerId.toString())).toHaveLength(1);
      await eventually(() => dials.failed === 3, 10_000, "the first stranger's second dial to fail");
      expect(dials.refused).toBe(1);
      dials.stop();
      await new Promise((resolve) => setImmediate(resolve));
      // The burst ends with its count: three failed handshakes, one warning and one count.
      expect(lines.filter((line) => line.level === 40 && String(line.msg).includes("failed the encrypted handshake") && !String(line.msg).endsWith("burst over"))).toHaveLength(1);
      expect(lines.some((line) => String(line.msg).endsWith("burst over") && line.refused === 3)).toBe(true);

      // Past retryMs a neighbour left alone is tried again.
      const later = new LanDials({ dial: (peer, signal) => (dialled.push(peer.toString()), a.libp2p.dial(peer, { signal })), log: silentLogger(), clock, retryMs: 60_000 });
      const second = strangers[1].libp2p.peerId.toString();
      const dialsOf = () => dialled.filter((peer) => peer === second).length;
      const before = dialsOf();
      later.found(strangers[1].libp2p.peerId);
      await eventually(() => later.refused === 1, 10_000, "the second stranger's handshake to fail");
      clock.advance(59_999);
      later.found(strangers[1].libp2p.peerId);
      expect(dialsOf()).toBe(before + 1);
      clock.advance(1);
      later.found(strangers[1].libp2p.peerId);
      expect(dialsOf()).toBe(before + 2);
      expect(later.refused).toBe(0);
      later.stop();
    } finally {
      await Promise.all(hosts.map((host) => host.stop()));
    }
  });

  it("says an address that reached another peer of this mesh, or this node itself, or hung up, as such: never that the keys differ", { timeout: 30_000 }, async () => {
    const ours = newPsk();
    const hosts: TunnelHost[] = [];
    const start = async (node: string) => {
      const host = await startTunnelHost({ node, listen: ["/ip4/127.0.0.1/tcp/0"], psk: ours, log: silentLogger(), mdns: false });
      hosts.push(host);
      return host;
    };
    // Something that takes the connection and hangs up at once (no agent there).
    const hangUp = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => hangUp.listen(0, "127.0.0.1", resolve));
    try {
      const [a, b, c, d] = [await start("wrong-a"), await start("wrong-b"), await start("wrong-c"), await start("wrong-d")];
      const bare = (host: TunnelHost) => multiaddr(host.libp2p.getMultiaddrs()[0].toString().split("/p2p/")[0]);
      // b announced at c's address; c announced at a's own; d announced where nothing of the mesh answers.
      await a.libp2p.peerStore.save(b.libp2p.peerId, { multiaddrs: [bare(c)] });
      await a.libp2p.peerStore.save(c.libp2p.peerId, { multiaddrs: [bare(a)] });
      await a.libp2p.peerStore.save(d.libp2p.peerId, { multiaddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${(hangUp.address() as { port: number }).port}`)] });
      const { log, lines } = capturedLog("debug");
      const dials = new LanDials({ dial: (peer, signal) => a.libp2p.dial(peer, { signal }), log, clock: new ManualClock(Date.now()), self: a.libp2p.peerId.toString() });
      for (const peer of [b, c, d]) dials.found(peer.libp2p.peerId);
      await eventually(() => dials.failed === 3, 10_000, "the three dials to fail");
      dials.stop();
      const said = lines.map((line) => `${String(line.msg)} ${String(line.answeredAs ?? "")} ${String(line.peer ?? "")}`);
      expect(said.filter((line) => line.includes("pre-shared key"))).toEqual([]);
      expect(lines.some((line) => String(line.msg).includes("reached another peer of this mesh") && line.peer === b.libp2p.peerId.toString() && line.answeredAs === c.libp2p.peerId.toString())).toBe(true);
      expect(lines.some((line) => line.answeredAs === `this node itself (${a.libp2p.peerId.toString()})`)).toBe(true);
      expect(lines.some((line) => String(line.msg).includes("hung up during the encrypted handshake") && line.peer === d.libp2p.peerId.toString())).toBe(true);
      // Each is left alone for a while like a stranger, not dialled at every answer.
      expect(dials.refused).toBe(3);
    } finally {
      await Promise.all(hosts.map((host) => host.stop()));
      await new Promise((resolve) => hangUp.close(resolve));
    }
  });
});
