/**
 * Relay choice's two events of a move (roles/relay-choice.ts), on a manual clock with probes handed in: the first
 * before the leaf server restarts, the second through the new link, and only once that link has been up for a
 * second (published at once, the hubs' interest had not yet reached it on a busy machine, and it was lost).
 */
import { describe, expect, it } from "vitest";
import type { Bus } from "../bus/bus.ts";
import { ManualClock } from "../lib/clock.ts";
import { silentLogger } from "../lib/log.ts";
import { RelayChoice } from "./relay-choice.ts";

describe("relay choice's upstream events", () => {
  it("announces a move again through the new link once it has been up a second, with the scores from there", async () => {
    const clock = new ManualClock(1_000_000);
    const far = "nats-leaf://198.18.0.1:7422";
    const near = "nats-leaf://198.18.0.2:7422";
    const events: { event: string; payload: Record<string, unknown>; at: number }[] = [];
    const bus = {
      publish: (_actor: string, event: string, payload: Record<string, unknown>) => events.push({ event, payload, at: clock.now() }),
      connection: { subscribe: () => ({ unsubscribe: () => undefined }) },
    } as unknown as Bus;
    let current = far;
    const choice = new RelayChoice({
      node: "edge-a",
      upstreams: [far, near],
      bus,
      log: silentLogger(),
      clock,
      currentUpstream: () => current,
      moveLeaf: async (order) => {
        current = order[0];
      },
      settings: { probeIntervalMs: 200, badRounds: 3, holdMs: 0 },
      probe: async (host) => ({ ok: true, rttMs: host === "198.18.0.1" ? 150 : 1 }),
    });
    for (let round = 0; round < 3; round++) {
      await choice.round();
      clock.advance(200);
    }
    expect(current).toBe(near);
    expect(events.map((event) => event.payload.movedInMs)).toEqual([undefined]);
    const movedAt = clock.now();
    // Rounds every 200 ms through the new link: the second event waits for its first second.
    for (let round = 0; round < 7; round++) {
      await choice.round();
      clock.advance(200);
    }
    const announced = events.filter((event) => event.payload.movedInMs !== undefined);
    expect(announced).toHaveLength(1);
    expect(announced[0].payload).toMatchObject({ from: far, to: near });
    expect(announced[0].at - movedAt).toBeGreaterThanOrEqual(800);
  });
});
