/**
 * `status --why` names the right reason for every pair of the NAT matrix: the
 * pure explanation (path-reasons.ts) from both NAT types, the path in use and
 * the attempts, checked against DESIGN.md's table (nat.ts's punchPlan). The lab
 * test (test/why-lab.test.ts) shows the same on real routers.
 */
import { describe, expect, it } from "vitest";
import type { NatType } from "../../bus/node-record.ts";
import type { NatView } from "../../bus/path-why.ts";
import { ManualClock } from "../../lib/clock.ts";
import { canPunch } from "./nat.ts";
import { attemptsPerPeer, explainPath, PathReasons } from "./path-reasons.ts";

const measured: NatType[] = ["none", "full-cone", "restricted-cone", "port-restricted", "symmetric"];
const view = (node: string, type: NatType): NatView => ({ node, type, source: type === "unknown" ? "none" : "measured" });
const at = "2026-12-04T06:00:00.000Z";

describe("explainPath over the NAT matrix", () => {
  for (const local of measured) {
    for (const peer of measured) {
      const punchable = canPunch(local, peer);
      it(`${local} ↔ ${peer}: ${punchable ? "punched, or punch-failed while relayed" : "nat-pair-unpunchable while relayed"}`, () => {
        const base = { node: "a", peer: "b", connections: [], local: view("a", local), peerNat: view("b", peer), ways: {}, lan: false, at };
        const relayed = explainPath({ ...base, path: "relayed", attempts: [{ at, way: "direct", outcome: "failed", ms: 3000, detail: "no listen address answered (1 tried): ETIMEDOUT" }] });
        expect(relayed.reason.code).toBe(punchable ? "punch-failed" : "nat-pair-unpunchable");
        expect(relayed.punchPlan === "relay").toBe(!punchable);
        // The sentence names both NATs and the direct dial's failure.
        expect(relayed.reason.text).toContain("ETIMEDOUT");
        if (!punchable) expect(relayed.reason.text).toMatch(/symmetric/);
        expect(relayed.wouldChange.length).toBeGreaterThan(0);
        if (punchable) {
          const punched = explainPath({ ...base, path: "hole-punched", attempts: [{ at, way: "punch", plan: "simultaneous", outcome: "connected", ms: 42, detail: "punched" }] });
          expect(punched.reason.code).toBe("punched");
          expect(punched.reason.text).toContain("in 42 ms");
        }
      });
    }
  }

  it("a LAN neighbour is lan-direct, an unmeasured NAT is nat-unknown, punches turned off are punch-off", () => {
    const base = { node: "a", peer: "b", connections: [], attempts: [], ways: {}, at };
    expect(explainPath({ ...base, path: "direct", local: view("a", "symmetric"), peerNat: view("b", "symmetric"), lan: true }).reason.code).toBe("lan-direct");
    expect(explainPath({ ...base, path: "relayed", local: view("a", "unknown"), peerNat: view("b", "full-cone"), lan: false }).reason.code).toBe("nat-unknown");
    expect(explainPath({ ...base, path: "relayed", local: view("a", "full-cone"), peerNat: view("b", "full-cone"), lan: false, ways: { punch: false } }).reason.code).toBe("punch-off");
    const unreachable = explainPath({ ...base, path: "unreachable", local: view("a", "full-cone"), peerNat: view("b", "port-restricted"), lan: false, attempts: [{ at, way: "relay", outcome: "failed", ms: 5, detail: "no responders" }] });
    expect(unreachable.reason.code).toBe("unreachable");
    expect(unreachable.reason.text).toContain("relay: no responders");
  });

  it("keeps a bounded number of attempts per peer, newest last", () => {
    const reasons = new PathReasons({ clock: new ManualClock() });
    for (let index = 0; index < attemptsPerPeer + 5; index++) reasons.attempt("b", { way: "direct", outcome: "failed", ms: index, detail: `try ${index}` });
    const kept = reasons.attemptsOf("b");
    expect(kept).toHaveLength(attemptsPerPeer);
    expect(kept.at(-1)?.detail).toBe(`try ${attemptsPerPeer + 4}`);
  });

  it("counts an upgrade that fails the same way every interval once, and keeps the try that made the path", () => {
    const reasons = new PathReasons({ clock: new ManualClock() });
    reasons.attempt("b", { way: "relay", outcome: "connected", ms: 12, detail: "a relay channel" });
    for (let index = 0; index < 40; index++) {
      reasons.attempt("b", { way: "direct", outcome: "failed", ms: 3, detail: "ENETUNREACH" });
      reasons.attempt("b", { way: "punch", outcome: "skipped", ms: 0, detail: "not possible" });
    }
    const kept = reasons.attemptsOf("b");
    expect(kept.map((attempt) => `${attempt.way}:${attempt.repeats ?? 1}`)).toEqual(["relay:1", "direct:40", "punch:40"]);
    for (let index = 0; index < attemptsPerPeer * 2; index++) reasons.attempt("b", { way: "direct", outcome: "failed", ms: 3, detail: `other ${index}` });
    expect(reasons.attemptsOf("b")[0].way).toBe("relay");
    expect(reasons.attemptsOf("b")).toHaveLength(attemptsPerPeer);
  });
});
