import { describe, expect, it } from "vitest";
import { DeadlineEntry, Deadlines } from "./deadlines.ts";

class Entry extends DeadlineEntry {
  readonly name: string;
  readonly expiredAt: Map<string, number>;
  readonly start: number;
  constructor(name: string, expiredAt: Map<string, number>, start: number) {
    super();
    this.name = name;
    this.expiredAt = expiredAt;
    this.start = start;
  }
  expired(): void {
    this.expiredAt.set(this.name, performance.now() - this.start);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("request deadlines without a timer per request", () => {
  it("expires each entry at its own time, never one removed, and goes on after the first was removed", async () => {
    const deadlines = new Deadlines();
    const expiredAt = new Map<string, number>();
    const start = performance.now();
    const entry = (name: string) => new Entry(name, expiredAt, start);
    const [a, b, c, long, removed] = ["a", "b", "c", "long", "removed"].map(entry);
    deadlines.add(a, 60);
    deadlines.add(removed, 60);
    deadlines.add(long, 200);
    await sleep(30);
    deadlines.add(b, 60);
    deadlines.add(c, 60);
    // The first of its list gone: the list's timer still fires at a's time, finds b not due, and is set again for it.
    deadlines.remove(a);
    deadlines.remove(removed);
    expect(deadlines.size).toBe(3);
    await sleep(300);
    expect([...expiredAt.keys()].sort()).toEqual(["b", "c", "long"]);
    expect(expiredAt.get("b")).toBeGreaterThanOrEqual(89);
    expect(expiredAt.get("long")).toBeGreaterThanOrEqual(199);
    // Each within a timer's lateness of its time (a loaded machine: generous).
    expect(expiredAt.get("b")!).toBeLessThan(200);
    expect(deadlines.size).toBe(0);
  });
});
