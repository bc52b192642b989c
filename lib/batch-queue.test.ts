/**
 * lib/batch-queue.ts: batches form from what arrives while one runs, and a batch that fails is
 * handed over whole while the queue goes on by itself.
 */
import { describe, expect, it } from "vitest";
import { batchQueue } from "./batch-queue.ts";

/** A promise the test settles. */
function gate() {
  let open!: () => void;
  let fail!: (error: Error) => void;
  const promise = new Promise<void>((resolve, reject) => {
    open = resolve;
    fail = reject;
  });
  return { promise, open, fail };
}

describe("batchQueue", () => {
  it("runs one batch at a time; what arrives while one runs is the next batch", async () => {
    const batches: number[][] = [];
    const first = gate();
    const queue = batchQueue<number>(async (batch) => {
      batches.push(batch);
      if (batches.length === 1) await first.promise;
    }, () => undefined);
    queue.push(1);
    queue.push(2);
    queue.push(3);
    expect(queue.waiting).toBe(2);
    first.open();
    await queue.idle();
    expect(batches).toEqual([[1], [2, 3]]);
    queue.push(4);
    await queue.idle();
    expect(batches).toEqual([[1], [2, 3], [4]]);
  });

  it("hands a failed batch whole to onFailed, and goes on by itself with what waited behind it", async () => {
    const ran: number[][] = [];
    const failed: { batch: number[]; error: string }[] = [];
    const first = gate();
    const queue = batchQueue<number>(
      async (batch) => {
        ran.push(batch);
        if (ran.length === 1) await first.promise;
        if (batch.includes(2)) throw new Error("decode failed");
      },
      (batch, error) => failed.push({ batch, error: (error as Error).message }),
    );
    queue.push(1);
    queue.push(2);
    queue.push(3);
    first.fail(new Error("push failed"));
    await queue.idle();
    // [1] failed by rejection, [2, 3] by a throw; nothing was pushed after them, and both ran.
    expect(ran).toEqual([[1], [2, 3]]);
    expect(failed).toEqual([
      { batch: [1], error: "push failed" },
      { batch: [2, 3], error: "decode failed" },
    ]);
    expect(queue.waiting).toBe(0);
  });

  it("goes on when onFailed itself throws", async () => {
    const ran: number[][] = [];
    const first = gate();
    const queue = batchQueue<number>(
      async (batch) => {
        ran.push(batch);
        if (ran.length === 1) {
          await first.promise;
          throw new Error("first batch failed");
        }
      },
      () => {
        throw new Error("onFailed failed");
      },
    );
    queue.push(1);
    queue.push(2);
    first.open();
    await queue.idle();
    expect(ran).toEqual([[1], [2]]);
  });
});
