import { describe, expect, it } from "vitest";
import { ManualClock } from "../lib/clock.ts";
import { OutlierDetector } from "./outlier.ts";
import { createPicker, topologyTiers, withSessionAffinity, type EndpointTarget, type NodeTopology, type Picker } from "./policy.ts";

const endpoints = (count: number, nodeName?: string): EndpointTarget[] =>
  Array.from({ length: count }, (_, i) => ({ key: `198.18.2.${i + 1}:80`, host: `198.18.2.${i + 1}`, port: 80, nodeName }));
const clientIp = (i: number) => `198.18.${1 + (i >> 8)}.${i & 255}`;
const noLoad = () => 0;

function distribution(picker: Picker, targets: EndpointTarget[], picks: number, client: (i: number) => string = clientIp) {
  const counts = new Map<string, number>();
  for (let i = 0; i < picks; i++) {
    const chosen = picker.pick(targets, { clientIp: client(i), load: noLoad })!;
    counts.set(chosen.key, (counts.get(chosen.key) ?? 0) + 1);
  }
  return counts;
}

/** A seeded generator (mulberry32), so "random" is exact in tests. */
function seeded(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("round robin", () => {
  it("gives each endpoint exactly its share, in order", () => {
    const targets = endpoints(3);
    const picker = createPicker({ policy: "round-robin" });
    const order = Array.from({ length: 6 }, () => picker.pick(targets, { clientIp: "x", load: noLoad })!.key);
    expect(order).toEqual([...targets, ...targets].map((t) => t.key));
    const counts = distribution(picker, targets, 3000);
    expect([...counts.values()]).toEqual([1000, 1000, 1000]);
  });

  it("skips excluded endpoints and returns nothing when all are excluded", () => {
    const targets = endpoints(3);
    const picker = createPicker({ policy: "round-robin" });
    const exclude = new Set([targets[1].key]);
    for (let i = 0; i < 1000; i++) expect(picker.pick(targets, { clientIp: "x", load: noLoad, exclude })!.key).not.toBe(targets[1].key);
    expect(picker.pick(targets, { clientIp: "x", load: noLoad, exclude: new Set(targets.map((t) => t.key)) })).toBeUndefined();
    expect(picker.pick([], { clientIp: "x", load: noLoad })).toBeUndefined();
  });
});

describe("random", () => {
  it("spreads evenly within 5% over 30,000 picks", () => {
    const targets = endpoints(3);
    const counts = distribution(createPicker({ policy: "random", random: seeded(42) }), targets, 30_000);
    for (const count of counts.values()) expect(Math.abs(count - 10_000)).toBeLessThan(500);
  });
});

describe("least connections", () => {
  it("always picks the least loaded endpoint, sharing ties", () => {
    const targets = endpoints(4);
    const picker = createPicker({ policy: "least-connections" });
    const active = new Map<string, number>();
    const load = (key: string) => active.get(key) ?? 0;
    for (let i = 0; i < 2000; i++) {
      const chosen = picker.pick(targets, { clientIp: "x", load })!;
      const minimum = Math.min(...targets.map((t) => load(t.key)));
      expect(load(chosen.key)).toBe(minimum);
      active.set(chosen.key, load(chosen.key) + 1);
      // Connections on endpoint 0 close at once: it keeps taking the new ones.
      if (chosen.key === targets[0].key && i % 2 === 0) active.set(chosen.key, load(chosen.key) - 1);
    }
    expect(load(targets[0].key)).toBeLessThan(load(targets[1].key));
  });
});

describe("consistent hash with bounded loads", () => {
  it("sends a client to the same endpoint every time while loads are even", () => {
    const targets = endpoints(5);
    const picker = createPicker({ policy: "consistent-hash" });
    for (let i = 0; i < 1000; i++) {
      const first = picker.pick(targets, { clientIp: clientIp(i), load: noLoad })!.key;
      expect(picker.pick(targets, { clientIp: clientIp(i), load: noLoad })!.key).toBe(first);
    }
  });

  it("spreads many clients roughly evenly and moves few clients when an endpoint is added", () => {
    const picker = createPicker({ policy: "consistent-hash" });
    const five = endpoints(5);
    const counts = distribution(picker, five, 10_000);
    for (const count of counts.values()) expect(count).toBeGreaterThan(1200); // 2,000 each when even
    const six = endpoints(6);
    const grown = createPicker({ policy: "consistent-hash" });
    let moved = 0;
    for (let i = 0; i < 10_000; i++) {
      const before = picker.pick(five, { clientIp: clientIp(i), load: noLoad })!.key;
      const after = grown.pick(six, { clientIp: clientIp(i), load: noLoad })!.key;
      if (before !== after) {
        moved++;
        expect(after).toBe(six[5].key); // a client only ever moves to the new endpoint
      }
    }
    expect(moved).toBeGreaterThan(800);
    expect(moved).toBeLessThan(2800); // ~1/6 of 10,000
  });

  it("never lets an endpoint exceed c × the mean load, even when all clients hash alike", () => {
    const targets = endpoints(4);
    const picker = createPicker({ policy: "consistent-hash", hashLoadFactor: 1.25 });
    const active = new Map<string, number>();
    const load = (key: string) => active.get(key) ?? 0;
    for (let i = 0; i < 4000; i++) {
      const chosen = picker.pick(targets, { clientIp: "198.18.9.9", load })!;
      active.set(chosen.key, load(chosen.key) + 1);
      const total = [...active.values()].reduce((a, b) => a + b, 0);
      expect(load(chosen.key)).toBeLessThanOrEqual(Math.ceil((1.25 * total) / 4));
    }
  });
});

describe("session affinity ClientIP", () => {
  it("keeps a client on its endpoint within the timeout and re-picks after it", () => {
    const clock = new ManualClock(0);
    const picker = withSessionAffinity(createPicker({ policy: "round-robin" }), { timeoutMs: 10_000, clock });
    const targets = endpoints(3);
    const first = picker.pick(targets, { clientIp: "198.18.1.1", load: noLoad })!.key;
    for (let i = 0; i < 1000; i++) {
      expect(picker.pick(targets, { clientIp: "198.18.1.1", load: noLoad })!.key).toBe(first);
      clock.advance(9_000); // each use renews the timeout
    }
    const others = new Set<string>();
    for (let i = 2; i < 50; i++) others.add(picker.pick(targets, { clientIp: `198.18.1.${i}`, load: noLoad })!.key);
    expect(others.size).toBe(3); // other clients still spread
    clock.advance(10_001);
    // After the timeout the inner round robin chooses again: within three tries the client moves.
    const after = new Set<string>();
    for (let i = 0; i < 3; i++) {
      after.add(picker.pick(targets, { clientIp: "198.18.1.1", load: noLoad })!.key);
      clock.advance(10_001);
    }
    expect(after.size).toBeGreaterThan(1);
  });

  it("leaves an excluded or removed endpoint and stays bounded in memory", () => {
    const clock = new ManualClock(0);
    const picker = withSessionAffinity(createPicker({ policy: "round-robin" }), { timeoutMs: 60_000, clock, maxClients: 100 });
    const targets = endpoints(3);
    const first = picker.pick(targets, { clientIp: "c", load: noLoad })!.key;
    expect(picker.pick(targets, { clientIp: "c", load: noLoad, exclude: new Set([first]) })!.key).not.toBe(first);
    const moved = picker.pick(targets, { clientIp: "c", load: noLoad })!.key;
    expect(picker.pick(targets.filter((t) => t.key !== moved), { clientIp: "c", load: noLoad })!.key).not.toBe(moved);
    for (let i = 0; i < 10_000; i++) picker.pick(targets, { clientIp: clientIp(i), load: noLoad });
    expect(picker.remembered).toBe(100);
  });
});

describe("topology", () => {
  it("puts own-node endpoints first, and everything in one tier when none or all are local", () => {
    const local = endpoints(2, "edge-a");
    const remote = endpoints(3, "edge-b").map((t) => ({ ...t, key: `r${t.key}` }));
    expect(topologyTiers([...remote, ...local], "edge-a")).toEqual([local, remote]);
    expect(topologyTiers(remote, "edge-a")).toEqual([remote]);
    expect(topologyTiers(local, "edge-a")).toEqual([local]);
  });
});

describe("outlier ejection", () => {
  it("ejects after consecutive failures, for longer each time, and takes the endpoint back", () => {
    const clock = new ManualClock(0);
    const outliers = new OutlierDetector({ clock, consecutiveFailures: 3, baseEjectionMs: 1000, maxEjectionMs: 2500 });
    expect(outliers.failure("a")).toBe(false);
    outliers.success("a"); // a success resets the count
    expect(outliers.failure("a")).toBe(false);
    expect(outliers.failure("a")).toBe(false);
    expect(outliers.isEjected("a")).toBe(false);
    expect(outliers.failure("a")).toBe(true);
    expect(outliers.isEjected("a")).toBe(true);
    clock.advance(999);
    expect(outliers.isEjected("a")).toBe(true);
    clock.advance(1);
    expect(outliers.isEjected("a")).toBe(false);
    expect(outliers.failure("a")).toBe(true); // back and failing: out again at once, for 2 s
    clock.advance(1999);
    expect(outliers.ejected()).toEqual(["a"]);
    clock.advance(1);
    expect(outliers.failure("a")).toBe(true); // third time: capped at 2.5 s
    clock.advance(2499);
    expect(outliers.isEjected("a")).toBe(true);
    clock.advance(1);
    expect(outliers.isEjected("a")).toBe(false);
    outliers.success("a");
    for (let i = 0; i < 2; i++) expect(outliers.failure("a")).toBe(false); // history forgotten after a success
    expect(outliers.ejections).toBe(3);
  });
});

describe("topology tiers with the tunnel's view", () => {
  const endpoint = (key: string, nodeName?: string) => ({ key, host: key, port: 80, nodeName }) as unknown as EndpointTarget;
  const topology: NodeTopology = {
    site: "shop-1",
    of: (node) => ({ site: { "edge-b": "shop-1", "edge-c": "shop-2", "edge-d": "shop-1" }[node], reachable: node !== "edge-d" }),
  };

  it("prefers this node, then its site, then other reachable nodes, and unreachable nodes only last", () => {
    const endpoints = [endpoint("d", "edge-d"), endpoint("c", "edge-c"), endpoint("b", "edge-b"), endpoint("a", "edge-a")];
    expect(topologyTiers(endpoints, "edge-a", topology).map((tier) => tier.map((target) => target.key))).toEqual([["a"], ["b"], ["c"], ["d"]]);
    expect(topologyTiers(endpoints.slice(0, 2), "edge-a", topology).map((tier) => tier.map((target) => target.key))).toEqual([["c"], ["d"]]);
  });

  it("keeps the old two tiers without a topology", () => {
    const endpoints = [endpoint("c", "edge-c"), endpoint("a", "edge-a")];
    expect(topologyTiers(endpoints, "edge-a").map((tier) => tier.map((target) => target.key))).toEqual([["a"], ["c"]]);
  });
});
