/**
 * Paths that explain themselves (issue 18 item 1), in the NAT lab (root, network
 * namespaces, iptables, nats-server): agents behind a full cone, two
 * port-restricted NATs (one whose router drops unsolicited SYNs, one whose
 * router answers them with an RST, as OpenWrt does), a symmetric NAT, and two
 * hosts on one LAN. For every pair, `leafmesh status --why PEER` run inside
 * the node's namespace names the right reason from both sides: lan-direct for
 * the LAN pair, punched for each pair DESIGN.md's table can punch,
 * nat-pair-unpunchable for symmetric against port-restricted; with each
 * node's NAT evidence (the RST router's probe refused, the dropping router's
 * timed out, the cone's answered), the attempts, and the same reasons on
 * `mesh.<node>.tunnel.why`. `leafmesh netcheck` shows a node's NAT, the hub's
 * RTT and its LAN neighbour seen by mDNS.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Netcheck, PathWhy } from "../bus/path-why.ts";
import { startTunnelLab, type TunnelLab } from "../lab/tunnel-lab.ts";
import type { SiteSpec } from "../lab/nat.ts";
import { inNamespace, runCommand } from "../lab/netns.ts";
import { eventually } from "./support/ports.ts";
import { cliPath, nodeBinary } from "./support/processes.ts";

const prefix = "lmwy-";
const sites: SiteSpec[] = [
  { name: "f1", nat: "full-cone", router: "rst" },
  { name: "p1", nat: "port-restricted", hosts: 2 },
  { name: "p2", nat: "port-restricted", router: "rst" },
  { name: "s1", nat: "symmetric" },
];

const pairs: { a: string; b: string; path: string; code: string }[] = [
  { a: "f1h1", b: "p1h1", path: "hole-punched", code: "punched" },
  { a: "f1h1", b: "p2h1", path: "hole-punched", code: "punched" },
  { a: "f1h1", b: "s1h1", path: "hole-punched", code: "punched" },
  { a: "p1h1", b: "p1h2", path: "direct", code: "lan-direct" },
  { a: "p1h1", b: "p2h1", path: "hole-punched", code: "punched" },
  { a: "p1h1", b: "s1h1", path: "relayed", code: "nat-pair-unpunchable" },
  { a: "p2h1", b: "s1h1", path: "relayed", code: "nat-pair-unpunchable" },
];

const namespaceOf = (agent: string) => `${prefix}${agent}`;

async function cliIn(agent: string, args: string[]): Promise<string> {
  const result = await runCommand(inNamespace(namespaceOf(agent), [nodeBinary, cliPath, ...args, "--nats", "nats://127.0.0.1:4222"]), { timeoutMs: 40_000 });
  if (result.code !== 0) throw new Error(`leafmesh ${args.join(" ")} in ${agent} exited ${result.code}: ${result.stderr}`);
  return result.stdout;
}

const whyOf = async (agent: string, peer: string) => JSON.parse(await cliIn(agent, ["status", "--why", peer, "--json"])) as PathWhy;

describe.sequential("status --why and netcheck in the NAT lab", () => {
  let lab: TunnelLab;
  let sub: ChildProcess | undefined;
  const whyEvents: { subject: string; payload: { peer: string; kind: string; code: string; reason: string } }[] = [];

  /**
   * Waits, asking the agent's tunnel itself (the lab's `why`: what rpc tunnel.why answers the CLI), until `check`
   * holds for its explanation of the path to `peer`. Polled with `leafmesh status --why`, every try was a Node
   * process of its own; the test's assertions read the CLI's answer once the wait is over.
   */
  const untilWhy = (agent: string, peer: string, check: (why: PathWhy) => boolean, timeoutMs: number, what: string) =>
    eventually(async () => check((await lab.call(agent, { op: "why", node: peer })).why as PathWhy), timeoutMs, what);
  /** `whyOf` once the agent holds a record of the peer's with its NAT in it: a record from before the peer's detection says "unknown" until the next one (every 5 s). */
  const peerNatKnown = (agent: string, peer: string) => untilWhy(agent, peer, (why) => why.nat.peer?.type !== "unknown", 20_000, `${agent} to hold ${peer}'s record with its NAT`);
  /**
   * The CLI's answer once it holds the peer's NAT too: the lab's view can say it a moment before the CLI's does (a full
   * run read "unknown" from the CLI right after the lab's view had the NAT), so the CLI is asked until it says it as well.
   */
  const whyWithPeerNat = async (agent: string, peer: string) => {
    await peerNatKnown(agent, peer);
    return eventually(async () => {
      const why = await whyOf(agent, peer);
      return why.nat.peer?.type !== "unknown" ? why : undefined;
    }, 20_000, `${agent}'s status --why to hold ${peer}'s NAT`);
  };

  beforeAll(async () => {
    lab = await startTunnelLab({ prefix, sites });
    // The events as an operator sees them: `leafmesh sub` at the hub.
    const argv = inNamespace(lab.nat.hub.namespace, [nodeBinary, cliPath, "sub", "mesh.*.tunnel.why", "--nats", "nats://127.0.0.1:4222"]);
    sub = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    const listening = new Promise<void>((resolve) => sub!.stderr!.once("data", () => resolve()));
    createInterface({ input: sub.stdout! }).on("line", (line) => {
      const [, subject, ...json] = line.split(" ");
      whyEvents.push({ subject, payload: JSON.parse(json.join(" ")) as (typeof whyEvents)[number]["payload"] });
    });
    await listening;
  }, 150_000);

  afterAll(async () => {
    sub?.kill("SIGTERM");
    await lab?.teardown();
  }, 30_000);

  it("every agent measures its NAT with the evidence of its router's answer", async () => {
    for (const agent of lab.agents) {
      await eventually(async () => {
        const reply = await lab.call(agent, { op: "status" });
        return reply.nat !== "unknown" && (reply.records as string[]).length >= lab.agents.length - 1 ? reply : undefined;
      }, 60_000, `${agent} NAT detection and records`);
    }
    // Records carry the evidence to peers: the LAN neighbour sees each node's probes.
    const why = await whyWithPeerNat("p1h2", "f1h1");
    expect(why.nat.peer).toMatchObject({ type: "full-cone", source: "record" });
    expect(why.nat.peer.evidence?.filtering?.otherAddress).toBe("answered");
    const rst = await whyWithPeerNat("p1h2", "p2h1");
    // The RST router refused the probe from another address itself: no proof of a cone.
    expect(rst.nat.peer).toMatchObject({ type: "port-restricted" });
    expect(rst.nat.peer.evidence?.filtering).toEqual({ otherAddress: "ECONNREFUSED", otherPort: "ECONNREFUSED" });
    expect(rst.nat.local.evidence?.filtering).toEqual({ otherAddress: "timeout", otherPort: "timeout" });
    const symmetric = await whyWithPeerNat("p1h2", "s1h1");
    const [first, second] = symmetric.nat.peer.evidence!.mapping;
    expect(first.port).not.toBe(second.port);
  }, 150_000);

  it("names the right reason for every pair, from both sides, and says it on mesh.<node>.tunnel.why", async () => {
    const failures: string[] = [];
    // Each side plans its path from the other's NAT in its record: wait until both hold one that has it.
    await Promise.all(pairs.flatMap((pair) => [peerNatKnown(pair.a, pair.b), peerNatKnown(pair.b, pair.a)]));
    await Promise.all(
      pairs.map(async (pair) => {
        const [there, back] = await Promise.all([lab.call(pair.a, { op: "roundtrip", node: pair.b, bytes: 4096 }), lab.call(pair.b, { op: "roundtrip", node: pair.a, bytes: 4096 })]);
        if (!there.ok || !back.ok) failures.push(`${pair.a} ↔ ${pair.b}: ${there.error ?? ""} ${back.error ?? ""}`);
      }),
    );
    expect(failures).toEqual([]);
    // Every direction at once: each waits for its path, then `leafmesh status --why` says it.
    const whys = await Promise.all(
      pairs.flatMap((pair) =>
        [
          [pair.a, pair.b],
          [pair.b, pair.a],
        ].map(async ([from, to]) => {
          await untilWhy(from, to, (current) => current.path === pair.path && current.reason.code === pair.code, 45_000, `${from} → ${to}: ${pair.path} (${pair.code})`).catch(() => undefined);
          return { pair, from, to, why: await whyOf(from, to) };
        }),
      ),
    );
    const seen: string[] = [];
    for (const { pair, from, to, why } of whys) {
      seen.push(`${from}→${to}:${why.path}:${why.reason.code}`);
      if (pair.code === "nat-pair-unpunchable") {
        // Both NATs named, and why no punch exists between them.
        expect(why.reason.text).toMatch(/symmetric NAT/);
        expect(why.reason.text).toMatch(/port-restricted/);
        expect(why.punchPlan).toBe("relay");
        expect(why.connections.some((connection) => connection.startsWith("relayed"))).toBe(true);
        // The relay attempt that made the path, with its time.
        expect(why.attempts.some((attempt) => (attempt.way === "relay" || attempt.way === "existing" || attempt.way === "inbound") && attempt.outcome === "connected"), `${from} → ${to}: ${JSON.stringify(why.attempts)}`).toBe(true);
      }
      if (pair.code === "punched") expect(why.punchPlan).not.toBe("relay");
    }
    expect(seen).toEqual(pairs.flatMap((pair) => [`${pair.a}→${pair.b}:${pair.path}:${pair.code}`, `${pair.b}→${pair.a}:${pair.path}:${pair.code}`]));
    // Each punched pair: one side's punch (asked or answered) is among the attempts, with its plan and time.
    for (const pair of pairs.filter((entry) => entry.code === "punched")) {
      // Both sides' explanations as the CLI gave them above (a's first).
      const both = whys.filter((entry) => entry.pair === pair).flatMap((entry) => entry.why.attempts);
      expect(both.some((attempt) => (attempt.way === "punch" || attempt.way === "inbound") && attempt.outcome === "connected" && attempt.plan !== undefined), `${pair.a} ↔ ${pair.b}: ${JSON.stringify(both)}`).toBe(true);
    }
    // The same reasons went out as events when the paths changed (the LAN pair's path settled by mDNS before `sub` listened).
    for (const pair of pairs.filter((entry) => entry.code !== "lan-direct")) {
      await eventually(
        () => whyEvents.some((event) => event.subject === `mesh.${pair.a}.tunnel.why` && event.payload.peer === pair.b && event.payload.code === pair.code),
        10_000,
        `mesh.${pair.a}.tunnel.why for ${pair.b} with ${pair.code}`,
      );
    }
  }, 240_000);

  it("prints the explanation as a screen", async () => {
    const text = await cliIn("p1h1", ["status", "--why", "s1h1"]);
    expect(text).toContain("p1h1 → s1h1: relayed");
    expect(text).toContain("WHY  [nat-pair-unpunchable]");
    expect(text).toMatch(/punch plan for the pair: relay/);
    expect(text).toContain("WOULD CHANGE IT");
    // From the cloud: the hub asks p1h1 through the fabric.
    const fromHub = await runCommand(inNamespace(lab.nat.hub.namespace, [nodeBinary, cliPath, "status", "--why", "s1h1", "--from", "p1h1", "--json", "--nats", "nats://127.0.0.1:4222"]), { timeoutMs: 30_000 });
    expect(fromHub.code, fromHub.stderr).toBe(0);
    expect(JSON.parse(fromHub.stdout)).toMatchObject({ node: "p1h1", peer: "s1h1", path: "relayed", reason: { code: "nat-pair-unpunchable" } });
    // A name it does not know (a typo) is said to be one, with the names it knows, not explained as a path to nobody.
    const unknown = await runCommand(inNamespace(namespaceOf("p1h1"), [nodeBinary, cliPath, "status", "--why", "s1hl", "--nats", "nats://127.0.0.1:4222"]), { timeoutMs: 30_000 });
    expect(unknown.code, unknown.stderr).toBe(1);
    expect(unknown.stderr).toMatch(/'s1hl' is not a node p1h1 knows: no node record, path or attempt \(nodes it knows: [^)]*\bs1h1\b/);
    const badName = await runCommand(inNamespace(namespaceOf("p1h1"), [nodeBinary, cliPath, "status", "--why", "S1H1", "--nats", "nats://127.0.0.1:4222"]), { timeoutMs: 30_000 });
    expect(badName.code).toBe(2);
    expect(badName.stderr).toContain("--why: node name 'S1H1' is not valid");
    if (process.env.LEAFMESH_TRANSCRIPT) process.stdout.write(`\n$ leafmesh status --why s1h1\n${text}\n$ leafmesh status --why p2h1 (on p1h1)\n${await cliIn("p1h1", ["status", "--why", "p2h1"])}`);
  }, 60_000);

  it("netcheck: the NAT measured again with evidence, the hub's RTT, and the LAN neighbour seen by mDNS", async () => {
    const check = await eventually(async () => {
      const current = JSON.parse(await cliIn("p1h1", ["netcheck", "--json"])) as Netcheck;
      return current.lan.some((peer) => peer.node === "p1h2") ? current : undefined;
    }, 30_000, "p1h1's netcheck lists p1h2 on the LAN");
    expect(check.nat).toMatchObject({ type: "port-restricted", source: "measured" });
    expect(check.nat.evidence?.filtering).toEqual({ otherAddress: "timeout", otherPort: "timeout" });
    expect(check.upstreams).toHaveLength(1);
    expect(check.upstreams[0].rttMs).toBeGreaterThan(0);
    expect(check.lan.find((peer) => peer.node === "p1h2")?.connected).toBe(true);
    const alone = JSON.parse(await cliIn("s1h1", ["netcheck", "--json"])) as Netcheck;
    expect(alone.nat.type).toBe("symmetric");
    expect(alone.lan).toEqual([]);
    const text = await cliIn("p1h1", ["netcheck"]);
    expect(text).toMatch(/p1h1: port-restricted as 198\.18\.64\.\d+:\d+ \(measured/);
    expect(text).toContain("p1h2");
    if (process.env.LEAFMESH_TRANSCRIPT) process.stdout.write(`\n$ leafmesh netcheck (on p1h1)\n${text}\n$ leafmesh netcheck (on s1h1)\n${await cliIn("s1h1", ["netcheck"])}`);
  }, 90_000);
});
