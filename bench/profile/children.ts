/**
 * CPU profiles of the leafmesh processes a benchmark starts: with
 * LEAFMESH_BENCH_PROFILE=1, `profileChildren(name)` makes every Node child
 * started afterwards write a V8 CPU profile (`--cpu-prof`) under
 * bench/results/profiles/<name>/, and `summarizeProfiles(name)` turns each into
 * a text summary and a flame graph SVG (bench/profile/cpu-profile.ts) once the
 * children have exited. Heap snapshots: send SIGUSR2 to a child
 * (`--heapsnapshot-signal`), then `summarizeProfiles` summarizes those too.
 */
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { resultsDir } from "../table.ts";
import { writeCpuSummary } from "./cpu-profile.ts";
import { writeHeapSummary } from "./heap-snapshot.ts";

export const profiling = process.env.LEAFMESH_BENCH_PROFILE === "1";

/** Sets NODE_OPTIONS for the children started from now on; returns the directory, or undefined when not profiling. */
export function profileChildren(name: string): string | undefined {
  if (!profiling) return undefined;
  const dir = join(resultsDir, "profiles", name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  process.env.NODE_OPTIONS = `--cpu-prof --cpu-prof-dir=${dir} --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${dir}`;
  return dir;
}

/** Stops profiling further children and summarizes what the exited ones wrote. */
export function summarizeProfiles(dir: string | undefined): void {
  if (!dir) return;
  delete process.env.NODE_OPTIONS;
  for (const file of readdirSync(dir)) {
    const path = join(dir, file);
    if (file.endsWith(".cpuprofile")) writeCpuSummary(path);
    else if (file.endsWith(".heapsnapshot")) {
      writeHeapSummary(path);
      rmSync(path); // hundreds of MB; the summary stays
    }
  }
  console.error(`profiles: ${dir}`);
}
