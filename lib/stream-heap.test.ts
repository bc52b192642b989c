import { execFileSync } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";

/**
 * A child process with a heap of ~200k live objects drops 512 MiB of 16 KiB
 * Buffers, as a socket or TLS session hands them to a splice, and counts its
 * full (mark-compact) collections, with and without accountStreamBuffersInHeapLimits.
 */
const child = `
const { constants, PerformanceObserver } = await import("node:perf_hooks");
const { accountStreamBuffersInHeapLimits } = await import(${JSON.stringify(resolve(import.meta.dirname, "stream-heap.ts"))});
globalThis.live = Array.from({ length: 200_000 }, (_, index) => ({ index, name: "object " + index }));
if (process.argv[1] === "on") accountStreamBuffersInHeapLimits();
let major = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) if (entry.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) major++;
}).observe({ entryTypes: ["gc"] });
for (let index = 0; index < 32_768; index++) {
  Buffer.allocUnsafeSlow(16_384)[0] = index;
  if (index % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
}
await new Promise((resolve) => setTimeout(resolve, 100));
process.stdout.write(String(major));
`;

const fullCollections = (mode: "on" | "off") => Number(execFileSync(process.execPath, ["--input-type=module", "-e", child, mode], { encoding: "utf8", timeout: 60_000 }));

describe("accountStreamBuffersInHeapLimits", () => {
  it("keeps buffers moved through a process from forcing full collections of its heap", () => {
    const without = fullCollections("off");
    const withFlag = fullCollections("on");
    // Measured on Node 24 (V8 13.6): 6 full collections without, 0–1 with.
    expect(without).toBeGreaterThanOrEqual(3);
    expect(withFlag).toBeLessThan(without);
    expect(withFlag).toBeLessThanOrEqual(2);
  });
});
