import { describe, expect, it } from "vitest";
import { drillTable, nftCutScript, summarizeChecks, totalsOf, type CheckSample } from "./drill-report.ts";

describe("the drill's cut and report", () => {
  it("cuts only the upstreams' address and port, in a table of its own whose elements expire", () => {
    const script = nftCutScript([{ address: "198.18.64.1", port: 7422 }, { address: "fd00::1", port: 7422 }], 35);
    expect(script).toContain(`table inet ${drillTable} {`);
    expect(script).toContain(`add element inet ${drillTable} cut4 { 198.18.64.1 . 7422 timeout 35s }`);
    expect(script).toContain(`add element inet ${drillTable} cut6 { fd00::1 . 7422 timeout 35s }`);
    expect(script).toMatch(/ip daddr \. tcp dport @cut4 counter drop/);
    expect(script).toMatch(/ip saddr \. tcp sport @cut4 counter drop/);
    // Nothing but its own table: no route, no flush of the ruleset.
    expect(script).not.toMatch(/flush ruleset|route/);
    expect(() => nftCutScript([], 10)).toThrow(/nothing to cut/);
  });

  it("measures the longest gap from a failure to the next pass, or to the end", () => {
    const checks = [
      { name: "a", kind: "dns" as const, target: "a" },
      { name: "b", kind: "tcp" as const, target: "b" },
    ];
    const samples: CheckSample[] = [
      { check: "a", atMs: -10_000, ok: true },
      { check: "a", atMs: 0, ok: true },
      { check: "a", atMs: 1_000, ok: false, error: "timeout" },
      { check: "a", atMs: 2_000, ok: false, error: "timeout" },
      { check: "a", atMs: 3_000, ok: true },
      { check: "a", atMs: 4_000, ok: false, error: "refused" },
      { check: "a", atMs: 4_500, ok: true },
      { check: "b", atMs: -10_000, ok: false, error: "down" },
      { check: "b", atMs: 0, ok: false, error: "down" },
      { check: "b", atMs: 5_000, ok: false, error: "down" },
    ];
    const [a, b] = summarizeChecks(checks, samples);
    expect(a).toMatchObject({ passed: 3, failed: 3, longestGapMs: 2_000, failingBeforeCut: false, lastError: "refused" });
    expect(b).toMatchObject({ passed: 0, failed: 2, longestGapMs: 5_000, failingBeforeCut: true });
    expect(totalsOf([a, b])).toEqual({ passed: 3, failed: 5, longestGapMs: 5_000, longestGapCheck: "b" });
  });
});
