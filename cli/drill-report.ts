/**
 * The pure parts of `leafmesh drill` (drill.ts runs it): the nftables script
 * that cuts a node's upstream and nothing else, the report made of the checks'
 * samples and the link and catalog observations, and its text form. Pure, so
 * a test reads every gap computation without a network.
 *
 * ```ts
 * nftCutScript([{ address: "198.18.64.1", port: 7422 }], 60); // "table inet leafmesh_drill { … }"
 * summarizeChecks(samples, cutEndsAt);                           // per check: passed, failed, longest gap
 * ```
 */
import { isIPv6 } from "node:net";

/** The drill's own nftables table: made for a cut and deleted at the end; nothing else is touched. */
export const drillTable = "leafmesh_drill";

/**
 * @default 30 — seconds a cut outlives its planned end in the kernel when the drill cannot
 * restore it (killed with SIGKILL, the machine's power kept): the set's elements expire by
 * themselves, so a lost drill cannot cut a node off for good.
 */
export const cutGraceSeconds = 30;

export interface CutTarget {
  /** The upstream's IP address (resolved from its URL). */
  address: string;
  port: number;
}

/**
 * An nftables script (for `nft -f -`) that drops the node's traffic to and from its
 * upstreams' leafnode ports only: one table of its own, two sets of address and port
 * whose elements expire after `timeoutSeconds` (the kernel's own restore), filter chains
 * on output and input. No route, no other table, no other port is touched. It begins
 * by removing a table a killed drill may have left.
 */
export function nftCutScript(targets: CutTarget[], timeoutSeconds: number): string {
  if (targets.length === 0) throw new Error("nothing to cut: no upstream address");
  const seconds = Math.max(1, Math.ceil(timeoutSeconds));
  const v4 = targets.filter((target) => !isIPv6(target.address));
  const v6 = targets.filter((target) => isIPv6(target.address));
  const elements = (list: CutTarget[]) => list.map((target) => `${target.address} . ${target.port} timeout ${seconds}s`).join(", ");
  return [
    `table inet ${drillTable}`,
    `delete table inet ${drillTable}`,
    `table inet ${drillTable} {`,
    "  set cut4 { type ipv4_addr . inet_service; flags timeout; }",
    "  set cut6 { type ipv6_addr . inet_service; flags timeout; }",
    "  chain output {",
    "    type filter hook output priority -10; policy accept;",
    "    ip daddr . tcp dport @cut4 counter drop",
    "    ip6 daddr . tcp dport @cut6 counter drop",
    "  }",
    "  chain input {",
    "    type filter hook input priority -10; policy accept;",
    "    ip saddr . tcp sport @cut4 counter drop",
    "    ip6 saddr . tcp sport @cut6 counter drop",
    "  }",
    "}",
    ...(v4.length ? [`add element inet ${drillTable} cut4 { ${elements(v4)} }`] : []),
    ...(v6.length ? [`add element inet ${drillTable} cut6 { ${elements(v6)} }`] : []),
    "",
  ].join("\n");
}

export interface CheckSample {
  check: string;
  /** Milliseconds since the cut began (negative: the baseline before it). */
  atMs: number;
  ok: boolean;
  error?: string;
}

export interface CheckSummary {
  name: string;
  kind: "dns" | "tcp";
  target: string;
  passed: number;
  failed: number;
  /** The longest stretch from a failed sample to the next passed one (or to the last sample), in ms. */
  longestGapMs: number;
  /** It failed already before the cut: its failures are not the partition's doing. */
  failingBeforeCut: boolean;
  lastError?: string;
}

/** Per check: passes, failures and the longest gap, from the samples since the cut began (the baseline only says whether it worked before). */
export function summarizeChecks(checks: { name: string; kind: "dns" | "tcp"; target: string }[], samples: CheckSample[]): CheckSummary[] {
  return checks.map((check) => {
    const mine = samples.filter((sample) => sample.check === check.name).sort((a, b) => a.atMs - b.atMs);
    const before = mine.filter((sample) => sample.atMs < 0);
    const during = mine.filter((sample) => sample.atMs >= 0);
    let longestGapMs = 0;
    let gapStart: number | undefined;
    for (const sample of during) {
      if (!sample.ok && gapStart === undefined) gapStart = sample.atMs;
      if (sample.ok && gapStart !== undefined) {
        longestGapMs = Math.max(longestGapMs, sample.atMs - gapStart);
        gapStart = undefined;
      }
    }
    if (gapStart !== undefined) longestGapMs = Math.max(longestGapMs, during.at(-1)!.atMs - gapStart);
    const lastFailure = [...during].reverse().find((sample) => !sample.ok);
    return {
      ...check,
      passed: during.filter((sample) => sample.ok).length,
      failed: during.filter((sample) => !sample.ok).length,
      longestGapMs: Math.round(longestGapMs),
      failingBeforeCut: before.length > 0 && before.every((sample) => !sample.ok),
      ...(lastFailure?.error ? { lastError: lastFailure.error } : {}),
    };
  });
}

export interface DrillReport {
  node: string;
  role: string;
  upstreams: { url: string; address: string; port: number }[];
  cut: {
    startedAt: string;
    plannedSeconds: number;
    /** How long the cut was in force, ms. */
    heldMs: number;
    /** The signal that ended the drill early, if one did. */
    interrupted?: string;
    restored: boolean;
    /** Packets the cut dropped (nftables counters), out and in. */
    droppedPackets?: number;
  };
  leaf: {
    /** When the node saw its upstream link go down, ms after the cut began (a silent cut is noticed by the leaf's pings). */
    downAfterMs?: number;
    /** When it was up again, ms after the restore. */
    upAfterRestoreMs?: number;
  };
  checks: CheckSummary[];
  totals: { passed: number; failed: number; longestGapMs: number; longestGapCheck?: string };
  catalog: {
    objectsBefore: number;
    objectsAfter: number;
    caughtUp: boolean;
    /** ms after the restore at which the catalog had caught up (see `how`). */
    caughtUpMs?: number;
    how: string;
  };
}

export function totalsOf(checks: CheckSummary[]): DrillReport["totals"] {
  const worst = [...checks].sort((a, b) => b.longestGapMs - a.longestGapMs)[0];
  return {
    passed: checks.reduce((sum, check) => sum + check.passed, 0),
    failed: checks.reduce((sum, check) => sum + check.failed, 0),
    longestGapMs: worst?.longestGapMs ?? 0,
    ...(worst && worst.longestGapMs > 0 ? { longestGapCheck: worst.name } : {}),
  };
}

const seconds = (ms: number | undefined) => (ms === undefined ? "-" : `${(ms / 1000).toFixed(1)} s`);

export function formatDrillReport(report: DrillReport): string {
  const lines = [
    `drill on ${report.role} ${report.node}: upstream cut for ${seconds(report.cut.heldMs)} of ${report.cut.plannedSeconds} s${report.cut.interrupted ? ` (interrupted by ${report.cut.interrupted})` : ""}, ${report.cut.restored ? "restored" : "NOT RESTORED (the kernel lifts it by itself within the grace period)"}`,
    `  cut: ${report.upstreams.map((upstream) => `${upstream.address}:${upstream.port} (${upstream.url})`).join(", ")}${report.cut.droppedPackets !== undefined ? `; ${report.cut.droppedPackets} packets dropped` : ""}`,
    `  leaf link: ${report.leaf.downAfterMs !== undefined ? `down ${seconds(report.leaf.downAfterMs)} into the cut` : "never seen down (a silent cut shorter than the leaf's ping timeout)"}; ${report.leaf.upAfterRestoreMs !== undefined ? `up ${seconds(report.leaf.upAfterRestoreMs)} after the restore` : "not seen up again"}`,
    "",
    "CHECKS (every second from the cut until the catalog caught up)",
  ];
  if (report.checks.length === 0) lines.push("  (no service to check)");
  for (const check of report.checks) {
    lines.push(
      `  ${check.failed === 0 ? "ok  " : "FAIL"}  ${check.kind.toUpperCase().padEnd(3)}  ${check.target.padEnd(40)}  ${check.passed} passed, ${check.failed} failed, longest gap ${seconds(check.longestGapMs)}${check.failingBeforeCut ? " (failing before the cut too)" : ""}${check.lastError ? ` — ${check.lastError}` : ""}`,
    );
  }
  lines.push(
    "",
    `TOTAL  ${report.totals.passed} passed, ${report.totals.failed} failed, longest gap ${seconds(report.totals.longestGapMs)}${report.totals.longestGapCheck ? ` (${report.totals.longestGapCheck})` : ""}`,
    `CATALOG  ${report.catalog.objectsBefore} objects before, ${report.catalog.objectsAfter} after; ${report.catalog.caughtUp ? `caught up ${seconds(report.catalog.caughtUpMs)} after the restore` : "NOT caught up"} (${report.catalog.how})`,
  );
  return `${lines.join("\n")}\n`;
}
