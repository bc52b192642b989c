/**
 * Who allocates, not only who runs: V8's sampling heap profiler from a process's
 * first module to a signal, keeping the samples of objects the garbage
 * collector has already taken (a plain `--heap-prof` keeps only what is still
 * alive at its end, so the garbage of a load, which is what costs a fresh agent
 * its GC time, never shows there). Loaded before the process's own modules
 * with `--import`; product code knows nothing of it.
 *
 *   NODE_OPTIONS="--import=$PWD/bench/profile/heap-sampling-preload.ts" \
 *   LEAFMESH_HEAP_SAMPLING_DIR=/tmp/heap leafmesh agent …
 *   kill -USR2 <pid>   # writes /tmp/heap/<pid>-<time>.heapprofile and stops sampling
 *
 * Beside it, <pid>-<time>.gc.json: the collections over the same window, counted and timed by kind (Node's `gc`
 * performance entries: wall time of each pause on the main thread).
 *
 * Without a SIGUSR2 the profile is written at exit. bench/fabric/fresh-starts.ts
 * does both for each agent with LEAFMESH_STARTS_HEAP=DIR (the signal once traffic
 * holds every service); bench/profile/heap-profile.ts reads the files.
 * LEAFMESH_HEAP_SAMPLING_BYTES sets the mean bytes between samples (default 8,192;
 * V8's own default, 32 KiB, leaves a load of 20,000 objects a few thousand samples; 0: no heap profile, only the
 * collections, for timing them without the sampler's own cost); LEAFMESH_HEAP_SAMPLING_LIVE=1 keeps only the samples
 * of objects still alive at the signal: what the process holds, by where it was allocated.
 */
import { Session } from "node:inspector";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { constants, PerformanceObserver, type PerformanceEntry } from "node:perf_hooks";

const dir = process.env.LEAFMESH_HEAP_SAMPLING_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  const samplingInterval = Number(process.env.LEAFMESH_HEAP_SAMPLING_BYTES ?? 8_192);
  // An in-process session answers synchronously: the sampling is on before the next line runs, and the profile
  // can still be taken in an `exit` listener.
  // LEAFMESH_HEAP_SAMPLING_LIVE=1: only what is still alive at the signal (what the process keeps, by allocation site).
  const collectedToo = process.env.LEAFMESH_HEAP_SAMPLING_LIVE !== "1";
  if (samplingInterval > 0) session.post("HeapProfiler.startSampling", { samplingInterval, includeObjectsCollectedByMinorGC: collectedToo, includeObjectsCollectedByMajorGC: collectedToo });
  const kinds: Record<number, string> = {
    [constants.NODE_PERFORMANCE_GC_MINOR]: "minor",
    [constants.NODE_PERFORMANCE_GC_MAJOR]: "major",
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weak callbacks",
  };
  const collections: Record<string, { count: number; ms: number }> = {};
  const record = (entries: PerformanceEntry[]) => {
    for (const entry of entries) {
      const kind = kinds[(entry as unknown as { detail: { kind: number } }).detail.kind] ?? "other";
      collections[kind] ??= { count: 0, ms: 0 };
      collections[kind].count++;
      collections[kind].ms += entry.duration;
    }
  };
  const observer = new PerformanceObserver((list) => record(list.getEntries()));
  observer.observe({ entryTypes: ["gc"] });
  let written = false;
  const writeProfile = () => {
    if (written) return;
    written = true;
    const name = join(dir, `${process.pid}-${Date.now()}`);
    if (samplingInterval > 0) {
      // What is kept, not what is merely not collected yet: a full collection first.
      if (!collectedToo) session.post("HeapProfiler.collectGarbage");
      session.post("HeapProfiler.stopSampling", (error, result) => {
        if (error) process.stderr.write(`heap sampling: ${error.message}\n`);
        else writeFileSync(`${name}.heapprofile`, JSON.stringify(result.profile));
      });
    }
    // Entries of the last few collections may still be queued for the observer: taken now, as they are.
    record(observer.takeRecords());
    observer.disconnect();
    writeFileSync(`${name}.gc.json`, JSON.stringify({ collections, cpuMs: Math.round((process.cpuUsage().user + process.cpuUsage().system) / 1000) }));
  };
  process.on("SIGUSR2", writeProfile);
  process.on("exit", writeProfile);
}
