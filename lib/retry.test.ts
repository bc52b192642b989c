/** retryUntilReady: a start-up step asked again until it works, its deadline passes, or the start is stopped. */
import { describe, expect, it } from "vitest";
import { silentLogger } from "./log.ts";
import { retryUntilReady } from "./retry.ts";

describe("retryUntilReady", () => {
  it("a stop asked while it waits (a Ctrl-C while a role starts) ends the wait with INTERRUPTED, naming what it waited for", async () => {
    const stop = new AbortController();
    let attempts = 0;
    const step = async () => {
      attempts++;
      if (attempts === 2) stop.abort();
      throw new Error("JetStream not ready");
    };
    // Before: the stop was not heard, and the wait went on until its deadline ("gave up waiting ... after N attempts").
    const failure = (await retryUntilReady(step, { what: "the node's JetStream (catalog mirror)", log: silentLogger(), timeoutMs: 5_000, intervalMs: 50, signal: stop.signal }).catch((error: unknown) => error)) as Error & { code?: string };
    expect(failure.code).toBe("INTERRUPTED");
    expect(failure.message).toBe("stopped while waiting for the node's JetStream (catalog mirror)");
    expect(attempts).toBe(2);
  });

  it("without a stop: asks until the step works", async () => {
    let attempts = 0;
    const value = await retryUntilReady(async () => (++attempts < 3 ? Promise.reject(new Error("not yet")) : "open"), { what: "a bucket", log: silentLogger(), intervalMs: 10, signal: new AbortController().signal });
    expect([value, attempts]).toEqual(["open", 3]);
  });
});
