/**
 * The NAT matrix in the lab (root, network namespaces, iptables, nats-server):
 * one agent per site behind each of the NAT types of docs/nat.md, every pair:
 * - each agent detects its own NAT type;
 * - a pair the NAT table says can be punched ends hole-punched, and keeps
 *   carrying streams after the hub is cut off (no hub on the path);
 * - every other pair ends relayed; every pair carries a stream both ways;
 * - two agents on one LAN find each other by mDNS and connect directly, also
 *   on a LAN whose hub is unreachable;
 * - a direct path that breaks falls back to the relay, and returns when it heals.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatType } from "../../bus/node-record.ts";
import { eventually } from "../../test/support/ports.ts";
import { startTunnelLab, type TunnelLab } from "../../lab/tunnel-lab.ts";
import type { LabNat } from "../../lab/nat.ts";

const natSites: { name: string; nat: LabNat }[] = [
  { name: "s1", nat: "full-cone" },
  { name: "s2", nat: "restricted-cone" },
  { name: "s3", nat: "port-restricted" },
  { name: "s4", nat: "symmetric" },
  { name: "s5", nat: "symmetric" },
];

/** docs/nat.md: a pair where one side is symmetric and the other symmetric or port-restricted cannot be punched. */
function punchable(a: NatType, b: NatType): boolean {
  const hard = (x: NatType, y: NatType) => x === "symmetric" && (y === "symmetric" || y === "port-restricted");
  return !hard(a, b) && !hard(b, a);
}

const pairs: { a: string; b: string; expected: "hole-punched" | "relayed" }[] = [];
for (let i = 0; i < natSites.length; i++) {
  for (let j = i + 1; j < natSites.length; j++) {
    pairs.push({ a: `${natSites[i].name}h1`, b: `${natSites[j].name}h1`, expected: punchable(natSites[i].nat, natSites[j].nat) ? "hole-punched" : "relayed" });
  }
}

describe("NAT lab", () => {
  let lab: TunnelLab;

  beforeAll(async () => {
    lab = await startTunnelLab({
      sites: [
        { ...natSites[0], hosts: 2 },
        ...natSites.slice(1),
        { name: "s6", nat: "port-restricted", hosts: 2, hubBlocked: true },
      ],
      // A cut direct path is found by the connection monitor's next ping and its 10 s timeout: pinged every 2 s,
      // not libp2p's 10 s, the fallback test no longer waits up to 10 s for that ping to be sent.
      agents: { connectionPingIntervalMs: 2_000 },
    });
  }, 90_000);

  afterAll(async () => {
    await lab?.teardown();
  }, 30_000);

  async function roundTripBothWays(a: string, b: string, bytes = 262_144) {
    const [there, back] = await Promise.all([lab.call(a, { op: "roundtrip", node: b, bytes }), lab.call(b, { op: "roundtrip", node: a, bytes })]);
    expect(there, `${a} → ${b}: ${there.error ?? ""}`).toMatchObject({ ok: true, length: bytes });
    expect(back, `${b} → ${a}: ${back.error ?? ""}`).toMatchObject({ ok: true, length: bytes });
  }

  async function pathKind(a: string, b: string): Promise<string> {
    return (await lab.call(a, { op: "path", node: b })).kind as string;
  }

  it("each agent detects its NAT type", async () => {
    for (const site of natSites) {
      const status = await eventually(async () => {
        const reply = await lab.call(`${site.name}h1`, { op: "status" });
        return reply.nat !== "unknown" && (reply.records as string[]).length >= natSites.length - 1 ? reply : undefined;
      }, 40_000, `${site.name}h1 NAT detection and records`);
      expect(status.nat, site.name).toBe(site.nat);
    }
  }, 90_000);

  it("punches every punchable pair, relays the rest, and every pair carries streams both ways", async () => {
    await Promise.all(pairs.map((pair) => roundTripBothWays(pair.a, pair.b)));
    const kinds = await Promise.all(
      pairs.map(async (pair) => {
        // A pair that started relayed upgrades within the upgrade interval (3 s in the lab).
        const kind = await eventually(async () => {
          const current = await pathKind(pair.a, pair.b);
          return current === pair.expected ? current : undefined;
        }, 30_000, `${pair.a} ↔ ${pair.b} ${pair.expected}`).catch(async () => pathKind(pair.a, pair.b));
        return `${pair.a}-${pair.b}:${kind}`;
      }),
    );
    expect(kinds).toEqual(pairs.map((pair) => `${pair.a}-${pair.b}:${pair.expected}`));
  }, 120_000);

  it("finds a LAN neighbour by mDNS and connects directly, also with the hub unreachable", async () => {
    for (const [a, b] of [["s1h1", "s1h2"], ["s6h1", "s6h2"]]) {
      // Without the hub there are no node records: only mDNS can tell s6h1 where s6h2 is.
      await eventually(async () => (await lab.call(a, { op: "roundtrip", node: b, bytes: 1024 })).ok === true, 30_000, `${a} reaches ${b}`);
      await roundTripBothWays(a, b);
      expect(await pathKind(a, b)).toBe("direct");
    }
    const blocked = await lab.call("s6h1", { op: "status" });
    expect(blocked.records).toEqual([]); // it never reached the directory
  }, 90_000);

  it("falls back to the relay when a direct path breaks, and back to direct when it heals", async () => {
    const [s1h1, s1h2] = lab.nat.sites[0].hosts;
    const block = (op: "-A" | "-D") => [
      lab.nat.lab.exec(s1h2.namespace, ["iptables", op, "INPUT", "-s", s1h1.address, "-j", "DROP"]),
      lab.nat.lab.exec(s1h2.namespace, ["iptables", op, "OUTPUT", "-d", s1h1.address, "-j", "DROP"]),
    ];
    expect(await pathKind("s1h1", "s1h2")).toBe("direct");
    await Promise.all(block("-A"));
    // The connection monitor's pings stop being answered; the path machine falls back.
    await eventually(async () => (await pathKind("s1h1", "s1h2")) === "relayed", 80_000, "s1h1 → s1h2 relayed after the LAN cut");
    await roundTripBothWays("s1h1", "s1h2");
    await Promise.all(block("-D"));
    // While relayed, the path keeps trying to upgrade (every 3 s in the lab).
    await eventually(async () => (await pathKind("s1h1", "s1h2")) === "direct", 60_000, "s1h1 → s1h2 direct again");
    await roundTripBothWays("s1h1", "s1h2");
  }, 180_000);

  it("keeps hole-punched pairs working with the hub cut off", async () => {
    await lab.nat.cutHub();
    const punched = pairs.filter((pair) => pair.expected === "hole-punched");
    await Promise.all(punched.map((pair) => roundTripBothWays(pair.a, pair.b)));
    for (const pair of punched) expect(await pathKind(pair.a, pair.b)).toBe("hole-punched");
    await roundTripBothWays("s1h1", "s1h2");
  }, 60_000);
});
