/**
 * Two meshes on one LAN. mDNS used libp2p's one service (`_p2p._udp.local`) for every mesh, so an agent found
 * every agent of every other mesh on its LAN, dialled each one at every query and failed the handshake (a
 * different key), and logged an error for each: in CI, an agent of one test file logged one for an agent of
 * another. Now each mesh queries and answers on a service named after its key (psk.ts): agents of the same mesh
 * find each other, agents of another mesh are never found.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { startTunnelHost, type TunnelHost } from "./host.ts";
import { lanServiceTag, parsePsk } from "./psk.ts";

const newPsk = () => parsePsk(`/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString("hex")}\n`);

describe("LAN discovery with two meshes on one LAN", () => {
  it("finds the agents of its own mesh and never those of another", { timeout: 60_000 }, async () => {
    const ours = newPsk();
    const theirs = newPsk();
    const seen = new Map<string, string[]>();
    const hosts: TunnelHost[] = [];
    const start = async (node: string, psk: Uint8Array) => {
      const found: string[] = [];
      seen.set(node, found);
      const host = await startTunnelHost({ node, listen: ["/ip4/127.0.0.1/tcp/0"], psk, log: silentLogger(), mdnsIntervalMs: 200, onLanPeer: (peerId) => found.push(peerId) });
      hosts.push(host);
      return host;
    };
    try {
      const a = await start("lan-a", ours);
      const b = await start("lan-b", theirs);
      const c = await start("lan-c", ours);
      const peerOf = (host: TunnelHost) => host.libp2p.peerId.toString();
      // Several answers from its own mesh: by then any other mesh's agent answering the same queries would have been found.
      await eventually(() => seen.get("lan-a")!.filter((peer) => peer === peerOf(c)).length >= 5 && seen.get("lan-c")!.filter((peer) => peer === peerOf(a)).length >= 5, 30_000, "lan-a and lan-c to find each other by mDNS, five times each");
      expect(seen.get("lan-a")).not.toContain(peerOf(b));
      expect(seen.get("lan-c")).not.toContain(peerOf(b));
      expect(seen.get("lan-b")).not.toContain(peerOf(a));
      expect(seen.get("lan-b")).not.toContain(peerOf(c));
    } finally {
      await Promise.all(hosts.map((host) => host.stop()));
    }
  });

  it("names the service after the key: the same key the same service, another key another, nothing of the key in it", () => {
    const key = newPsk();
    expect(lanServiceTag(key)).toBe(lanServiceTag(key.slice()));
    expect(lanServiceTag(key)).not.toBe(lanServiceTag(newPsk()));
    expect(lanServiceTag(key)).toMatch(/^_lm-[0-9a-f]{10}\._udp\.local$/);
    // A DNS-SD service name is at most 15 characters (RFC 6335 5.1), its underscore aside.
    expect(lanServiceTag(key).split(".")[0].slice(1).length).toBeLessThanOrEqual(15);
    expect(lanServiceTag(key)).not.toContain(Buffer.from(key).toString("hex").slice(0, 10));
  });
});
