/**
 * A vitest setup file for the lab and timed projects (vitest.config.ts): they run in worker threads beside the
 * suite's forks, and their meshes (JetStream clusters, hole punching, liveness bounds) must not starve while the
 * suite keeps two cores busy. Linux keeps a nice value per thread and a child starts with its parent thread's, so this
 * thread's priority is that of every process its file starts (nats-servers, leafmesh processes, tools).
 */
import { setPriority } from "node:os";
import { isMainThread } from "node:worker_threads";

/** −10: a CFS weight of 9,548 against the suite's 1,024 (nice 0), so a lab process that wants a core gets one soon. */
export const labPriority = -10;

// Only in a worker thread: pid 0 is the calling thread there, and the whole process (vitest's own) in the main thread.
if (!isMainThread) {
  try {
    setPriority(0, labPriority);
  } catch (error) {
    // Not root (or no CAP_SYS_NICE): the files still run, with the suite's priority, and say so once.
    process.stderr.write(`lab priority not raised (${(error as Error).message}): the lab shares the cores evenly with the suite\n`);
  }
}
