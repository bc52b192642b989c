import { getHeapStatistics } from "node:v8";
import { describe, expect, it } from "vitest";
import { ManualClock } from "./clock.ts";
import { capturedLog } from "../test/support/log-lines.ts";
import { fullCollection, ReleaseAfterChurn } from "./release-memory.ts";


describe("ReleaseAfterChurn", () => {
  it("collects once a large change has been quiet for quietMs, never while it goes on, never for small ones", async () => {
    const clock = new ManualClock();
    let collected = 0;
    const { log, lines } = capturedLog("info");
    const release = new ReleaseAfterChurn({ log, clock, threshold: 1_000, quietMs: 2_000, collect: () => collected++ });
    // Small changes add up but stay below the threshold: nothing, however long it waits.
    release.note(400);
    release.note(500);
    clock.advance(60_000);
    expect(collected).toBe(0);
    // Past it, in batches a second apart: each batch pushes the collection back.
    for (let batch = 0; batch < 10; batch++) {
      release.note(1_000);
      clock.advance(1_000);
    }
    expect(collected).toBe(0);
    clock.advance(1_000);
    expect(collected).toBe(1);
    expect(release.collections).toBe(1);
    await new Promise((resolve) => setImmediate(resolve));
    const line = lines.find((entry) => String(entry.msg).startsWith("gave back the memory"));
    expect(line).toMatchObject({ objects: 10_900 });
    expect(line?.heapMiB).toHaveLength(2);
    // The count starts again: one more small change is not a large one.
    release.note(10);
    clock.advance(60_000);
    expect(collected).toBe(1);
    release.note(5_000);
    release.stop();
    clock.advance(60_000);
    expect(collected).toBe(1);
  });

  it("collects during a change that goes on past maxWaitMs, then waits for the next large one", () => {
    const clock = new ManualClock();
    let collected = 0;
    const { log } = capturedLog("info");
    const release = new ReleaseAfterChurn({ log, clock, threshold: 100, quietMs: 2_000, maxWaitMs: 10_000, collect: () => collected++ });
    // A change every second, for a minute: never quiet for 2 s.
    const at: number[] = [];
    for (let second = 0; second < 60; second++) {
      release.note(100);
      const before = collected;
      clock.advance(1_000);
      if (collected > before) at.push(clock.now());
    }
    // Due 10 s after each crossing: the batch at 0, then the batch that follows each collection at once.
    expect(at).toEqual([10_000, 20_000, 30_000, 40_000, 50_000, 60_000]);
  });

  it("says so and goes on when the collection throws", () => {
    const clock = new ManualClock();
    const { log, lines } = capturedLog("info");
    const release = new ReleaseAfterChurn({ log, clock, threshold: 1, quietMs: 10, collect: () => { throw new Error("no gc here"); } });
    release.note(5);
    expect(() => clock.advance(10)).not.toThrow();
    expect(release.collections).toBe(0);
    return new Promise<void>((resolve) => setImmediate(() => {
      expect(lines.some((entry) => entry.level === 40 && String(entry.msg).includes("full garbage collection after a large catalog change failed"))).toBe(true);
      resolve();
    }));
  });
});

describe("fullCollection", () => {
  it("is V8's full collection: garbage the old generation holds is gone after it, and no global gc appears", () => {
    const collect = fullCollection();
    expect(typeof collect).toBe("function");
    expect("gc" in globalThis).toBe(false);
    // Survives two scavenges, so sits in the old generation; then dropped.
    let garbage: unknown[] | undefined = Array.from({ length: 200_000 }, (_, i) => ({ i, text: `object ${i}` }));
    for (let round = 0; round < 4; round++) Array.from({ length: 100_000 }, (_, i) => [i]);
    const holding = getHeapStatistics().used_heap_size;
    expect(garbage.length).toBe(200_000);
    garbage = undefined;
    collect();
    expect(getHeapStatistics().used_heap_size).toBeLessThan(holding - 8 * 1024 * 1024);
  });
});
