/**
 * Nodes whose addresses change while the mesh runs (docs/nat.md, "When addresses change"), in the NAT lab
 * (root, network namespaces, iptables, nats-server; run under `flock /tmp/leafmesh-lab.lock`): agents with
 * the mesh's keys (TLS streams on direct and punched paths), a hub, two hosts on one LAN behind a full cone
 * (ah1, ah2) and one behind a port-restricted router behind a carrier-grade NAT (bh1).
 *
 * 1. ah2's LAN address replaced (ip addr del/add) while ah1 downloads from it: the download ends in an
 *    error, never a clean end, within the bound of docs/nat.md (before: TCP keepalive's 15 s); ah1's record of ah2 names the new address; ah1 reaches ah2 on a direct path
 *    again, seen on the LAN (mDNS).
 * 2. The carrier re-dials (bh1's CGNAT gets another public address, conntrack flushed): bh1's record
 *    names its new public address (before: the first measurement's, for good), streams work meanwhile,
 *    and the pair is punched again.
 * 3. ah2 roams to another segment (its interface gone, a new one in another subnet with another gateway):
 *    the download ends in an error within the same bound, and ah1 reaches ah2 directly at its new address.
 *
 * Mostly waiting (~60 s, 8 of them the lab's start): the lead may place it beside the other labs.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PathWhy } from "../bus/path-why.ts";
import { startTunnelLab, type TunnelLab } from "../lab/tunnel-lab.ts";
import { eventually } from "./support/ports.ts";

const prefix = "lmrn-";

describe.sequential("addresses that change while the mesh runs", () => {
  let lab: TunnelLab;

  beforeAll(async () => {
    lab = await startTunnelLab({ prefix, secured: true, sites: [{ name: "a", nat: "full-cone", hosts: 2 }, { name: "b", nat: "port-restricted", cgnat: "port-restricted" }] });
  }, 120_000);

  afterAll(async () => {
    await lab?.teardown();
  }, 30_000);

  const pathKind = async (a: string, b: string) => (await lab.call(a, { op: "path", node: b })).kind as string;
  const recordOf = async (a: string, b: string) => (await lab.call(a, { op: "record", node: b })).record as { listen: string[]; observed: { host: string }[] } | null;
  const why = async (a: string, b: string) => (await lab.call(a, { op: "why", node: b })).why as PathWhy;
  /** A 1 KiB round trip from a to b that came back whole on a path of `kind`. */
  const roundTripOn = (a: string, b: string, kind: string | undefined, timeoutMs: number) =>
    eventually(async () => {
      const reply = await lab.call(a, { op: "roundtrip", node: b, bytes: 1024 }, 10_000);
      return reply.ok && (kind === undefined || reply.kind === kind) ? reply : undefined;
    }, timeoutMs, `${a} → ${b}${kind ? ` on a ${kind} path` : ""}`);
  /** Starts a download on `from` from `node`'s source, a second under way: `ending` resolves with how it ended. */
  const download = async (from: string, node: string) => {
    const ending = lab.call(from, { op: "download", node }, 60_000) as unknown as Promise<{ ended: string; error?: string; bytes: number; ms: number }>;
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    return { ending };
  };

  it("settles: ah1 ↔ ah2 direct, ah1 ↔ bh1 hole-punched", async () => {
    await eventually(async () => (await lab.call("bh1", { op: "status" })).nat === "port-restricted", 40_000, "bh1's NAT measured");
    await roundTripOn("ah1", "ah2", "direct", 30_000);
    await roundTripOn("ah1", "bh1", undefined, 30_000);
    await eventually(async () => (await pathKind("ah1", "bh1")) === "hole-punched", 30_000, "ah1 ↔ bh1 hole-punched");
  }, 120_000);

  it("a LAN address replaced during a download: the download fails, the record and a direct path follow", async () => {
    const { namespace } = lab.nat.sites[0].hosts[1];
    const { ending: downloading } = await download("ah1", "ah2");
    await lab.nat.lab.exec(namespace, ["ip", "addr", "del", "198.18.65.11/24", "dev", "eth0"]);
    await lab.nat.lab.exec(namespace, ["ip", "addr", "add", "198.18.65.21/24", "dev", "eth0"]);
    await lab.nat.lab.exec(namespace, ["ip", "route", "add", "default", "via", "198.18.65.1"]);
    const changed = performance.now();
    const ended = await downloading;
    expect(ended.ended, JSON.stringify(ended)).toBe("error");
    // docs/nat.md: the address watch's look (2 s) and the old connections' 5 s to answer; before, TCP keepalive's 15 s.
    expect(performance.now() - changed).toBeLessThan(12_000);
    await roundTripOn("ah1", "ah2", "direct", 20_000);
    await eventually(async () => (await recordOf("ah1", "ah2"))?.listen.some((address) => address.startsWith("/ip4/198.18.65.21/")), 30_000, "ah1's record of ah2 with its new address");
    const explained = await eventually(async () => {
      const answer = await why("ah1", "ah2");
      return answer.reason.code === "lan-direct" && answer.connections.every((connection) => connection.includes("198.18.65.21")) ? answer : undefined;
    }, 20_000, "ah1 sees ah2 on the LAN at its new address only");
    expect(explained.path).toBe("direct");
  }, 120_000);

  it("a carrier's re-dial: the record names the new public address, streams flow meanwhile, the pair is punched again", async () => {
    const site = lab.nat.sites[1];
    await lab.nat.lab.exec(site.cgnat!, ["ip", "addr", "del", `${site.routerWanAddress}/24`, "dev", "wan"]);
    await lab.nat.lab.exec(site.cgnat!, ["ip", "addr", "add", "198.18.64.150/24", "dev", "wan"]);
    await lab.nat.lab.run(site.cgnat!, ["conntrack", "-F"]);
    await lab.nat.lab.run(site.router, ["conntrack", "-F"]);
    await roundTripOn("ah1", "bh1", undefined, 30_000);
    await eventually(async () => (await recordOf("ah1", "bh1"))?.observed[0]?.host === "198.18.64.150", 30_000, "ah1's record of bh1 with its new public address");
    await eventually(async () => (await pathKind("ah1", "bh1")) === "hole-punched", 30_000, "ah1 ↔ bh1 hole-punched again");
    expect((await why("ah1", "bh1")).nat.peer.mapped?.host).toBe("198.18.64.150");
  }, 120_000);

  it("roaming to another segment: the download fails, a direct path to the new address follows", async () => {
    const { lab: netns, sites } = lab.nat;
    const { namespace } = sites[0].hosts[1];
    const segment = await netns.bridge("a2l");
    await netns.link({ namespace: sites[0].router, bridge: segment, address: "198.18.80.1/24", name: "lan2" });
    const { ending: downloading } = await download("ah1", "ah2");
    await netns.exec(namespace, ["ip", "link", "del", "eth0"]);
    await netns.link({ namespace, bridge: segment, address: "198.18.80.10/24", name: "eth1" });
    await netns.route(namespace, "default", { via: "198.18.80.1" });
    const changed = performance.now();
    const ended = await downloading;
    expect(ended.ended, JSON.stringify(ended)).toBe("error");
    expect(performance.now() - changed).toBeLessThan(12_000);
    await roundTripOn("ah1", "ah2", "direct", 20_000);
    await eventually(async () => (await recordOf("ah1", "ah2"))?.listen.some((address) => address.startsWith("/ip4/198.18.80.10/")), 30_000, "ah1's record of ah2 with its new address");
  }, 120_000);
});
