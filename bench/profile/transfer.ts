/**
 * CPU profiles of long-lived lab processes around one transfer: each end starts
 * its profiler in-process (bench/profile/in-process.ts, through an op of the
 * lab node), the transfer runs, each end writes its profile, and every profile
 * gets its text summary and flame graph (bench/profile/cpu-profile.ts) under
 * bench/results/profiles/<name>/, named `<role>-<process>`, beside
 * `transfer.txt` (what was moved, how fast under the profiler, the date and the
 * machine's load).
 *
 * ```ts
 * await profileTransfer({
 *   name: "tunnel-direct",
 *   call: (agent, request) => checked(lab, agent, request),
 *   ends: [{ role: "sender", process: "lah1" }, { role: "receiver", process: "lah2" }],
 *   transfer: async () => "512 MiB at 400 MB/s",
 * });
 * ```
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { resultsDir } from "../table.ts";
import { writeCpuSummary } from "./cpu-profile.ts";
import type { ProfileWindow } from "./in-process.ts";

export interface ProfiledEnd {
  /** What the process does in the transfer ("sender", "receiver"): the first part of its files' names. */
  role: string;
  /** The lab's name for the process, as `call` takes it. */
  process: string;
}

/**
 * @default intervalUs 250 — a transfer of one or two seconds gives each end
 * several thousand samples; V8's own 1,000 µs gives too few to rank the data
 * path's smaller items.
 */
export async function profileTransfer(options: {
  name: string;
  /** Sends a lab op to a process and resolves with its (successful) reply; `profile-stop` answers with a ProfileWindow. */
  call: (process: string, request: Record<string, unknown>) => Promise<unknown>;
  ends: ProfiledEnd[];
  /** Runs the transfer; resolves with a line that says what it moved and how fast. */
  transfer: () => Promise<string>;
  intervalUs?: number;
}): Promise<string> {
  const dir = join(resultsDir, "profiles", options.name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const fileOf = (end: ProfiledEnd) => join(dir, `${end.role}-${end.process}.cpuprofile`);
  const loadAtStart = loadavg()[0];
  const started: ProfiledEnd[] = [];
  const windows = new Map<ProfiledEnd, ProfileWindow>();
  let described: string;
  try {
    for (const end of options.ends) {
      await options.call(end.process, { op: "profile-start", intervalUs: options.intervalUs ?? 250 });
      started.push(end);
    }
    described = await options.transfer();
  } finally {
    // Stopped even when the transfer failed: a process left profiling would profile the rest of the bench.
    for (const end of started) windows.set(end, (await options.call(end.process, { op: "profile-stop", file: fileOf(end) })) as ProfileWindow);
  }
  for (const end of options.ends) writeCpuSummary(fileOf(end), undefined, windows.get(end));
  writeFileSync(
    join(dir, "transfer.txt"),
    [
      `# ${options.name}`,
      described,
      `ends: ${options.ends.map((end) => `${end.role} ${end.process} (main thread ${windows.get(end)!.mainThreadCpuMs.toFixed(0)} ms CPU, process ${windows.get(end)!.processCpuMs.toFixed(0)} ms, over ${windows.get(end)!.wallMs.toFixed(0)} ms)`).join(", ")}`,
      `one sample every ${options.intervalUs ?? 250} µs, from just before the transfer to just after it`,
      `${new Date().toISOString()}; load average ${loadAtStart.toFixed(2)} at the start, ${loadavg()[0].toFixed(2)} at the end`,
      "",
    ].join("\n"),
  );
  console.error(`profiles: ${dir}`);
  return dir;
}
