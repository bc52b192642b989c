import { describe, expect, it } from "vitest";
import { createActor } from "xstate";
import { ManualClock } from "../../lib/clock.ts";
import { pathKindOf, pathMachine, type PathStateKind } from "./path-machine.ts";

function start(input: { backoffMinMs?: number; backoffMaxMs?: number; upgradeIntervalMs?: number } = {}) {
  const clock = new ManualClock();
  const announced: PathStateKind[] = [];
  const calls = { attempt: 0, upgrade: 0, released: [] as string[] };
  const machine = pathMachine.provide({
    actions: {
      attempt: () => void calls.attempt++,
      attemptUpgrade: () => void calls.upgrade++,
      announce: (_, params) => void announced.push(params.kind),
      released: (_, params) => void calls.released.push(params.kind),
    },
  });
  const actor = createActor(machine, { input: { peer: "edge-b", ...input }, clock }).start();
  return { actor, clock, announced, calls, kind: () => pathKindOf(actor.getSnapshot().value) };
}

describe("path machine", () => {
  it("starts discovering and attempts at once", () => {
    const path = start();
    expect(path.kind()).toBe("discovering");
    expect(path.calls.attempt).toBe(1);
    expect(path.announced).toEqual(["discovering"]);
  });

  it("goes to the kind that connected, with its RTT", () => {
    for (const kind of ["direct", "hole-punched", "relayed"] as const) {
      const path = start();
      path.actor.send({ type: "CONNECTED", kind, rttMs: 3.5 });
      expect(path.kind()).toBe(kind);
      expect(path.actor.getSnapshot().context.rttMs).toBe(3.5);
      expect(path.announced).toEqual(["discovering", kind]);
    }
  });

  it("backs off when unreachable, doubling up to the maximum, and resets once connected", () => {
    const path = start({ backoffMinMs: 1_000, backoffMaxMs: 4_000 });
    const waits: number[] = [];
    for (let round = 0; round < 4; round++) {
      path.actor.send({ type: "FAILED", reason: "nothing answered" });
      expect(path.kind()).toBe("unreachable");
      const attempts = path.calls.attempt;
      let waited = 0;
      while (path.calls.attempt === attempts && waited < 100_000) {
        path.clock.advance(100);
        waited += 100;
      }
      waits.push(waited);
    }
    expect(waits).toEqual([1_000, 2_000, 4_000, 4_000]);
    path.actor.send({ type: "CONNECTED", kind: "relayed" });
    expect(path.actor.getSnapshot().context.backoffMs).toBe(1_000);
  });

  it("keeps trying to upgrade while relayed, and takes a better path", () => {
    const path = start({ upgradeIntervalMs: 10_000 });
    path.actor.send({ type: "CONNECTED", kind: "relayed" });
    path.clock.advance(9_999);
    expect(path.calls.upgrade).toBe(0);
    path.clock.advance(1);
    expect(path.calls.upgrade).toBe(1);
    path.actor.send({ type: "UPGRADE_FAILED", reason: "punch timed out" });
    path.clock.advance(10_000);
    expect(path.calls.upgrade).toBe(2);
    path.actor.send({ type: "CONNECTED", kind: "hole-punched", rttMs: 1 });
    expect(path.kind()).toBe("hole-punched");
    expect(path.calls.released).toEqual(["relayed"]);
    path.clock.advance(60_000);
    expect(path.calls.upgrade).toBe(2); // no more upgrade attempts once punched
  });

  it("falls back when the current path breaks, ignoring the loss of another kind", () => {
    const path = start();
    path.actor.send({ type: "CONNECTED", kind: "direct" });
    path.actor.send({ type: "LOST", kind: "relayed", reason: "old relay closed" });
    expect(path.kind()).toBe("direct");
    path.actor.send({ type: "LOST", kind: "direct", reason: "connection reset" });
    expect(path.kind()).toBe("discovering");
    expect(path.calls.attempt).toBe(2);
    expect(path.actor.getSnapshot().context.reason).toBe("connection reset");
    path.actor.send({ type: "CONNECTED", kind: "relayed" });
    expect(path.announced).toEqual(["discovering", "direct", "discovering", "relayed"]);
  });
});
