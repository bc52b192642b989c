/**
 * A vitest setup file: uses OpenSSL's Ed25519 for the NATS libraries (lib/ed25519.ts), records the test file this worker runs (test/support/worker-deaths.ts), and, with
 * LEAFMESH_TEST_CPU_LOG=FILE, appends the CPU the file's worker process and the children it waited for
 * (nats-servers, leafmesh processes) used, to find what the suite spends its time on.
 */
import { afterAll, beforeAll } from "vitest";
import { appendFileSync, readFileSync } from "node:fs";
import { isMainThread } from "node:worker_threads";
import { recordWorkerFile } from "./worker-deaths.ts";
import { useNativeEd25519 } from "../../lib/ed25519.ts";

// As every leafmesh process does (cli/main.ts): the keys, claims and connections tests make in-process sign with OpenSSL.
useNativeEd25519();

let file = "";
let atStart = { own: 0, children: 0, uptime: 0 };
beforeAll((suite) => {
  file = suite.file.filepath;
  recordWorkerFile(file);
  if (process.env.LEAFMESH_TEST_CPU_LOG) atStart = cpuSoFar();
});

/** This process's CPU and that of the children it waited for, from /proc/self/stat (utime, stime, cutime, cstime: fields 14–17, 100 a second). */
function cpuSoFar(): { own: number; children: number; uptime: number } {
  const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ");
  const [utime, stime, cutime, cstime] = [11, 12, 13, 14].map((index) => Number(fields[index]) / 100);
  return { own: utime! + stime!, children: cutime! + cstime!, uptime: process.uptime() };
}

afterAll(() => {
  const log = process.env.LEAFMESH_TEST_CPU_LOG;
  if (!log) return;
  // A worker process runs several files (vitest.config.ts): each file's share is what changed while it ran.
  const now = cpuSoFar();
  const own = isMainThread ? (now.own - atStart.own).toFixed(1) : "shared";
  appendFileSync(log, `${file}\t${own}\t${(now.children - atStart.children).toFixed(1)}\t${(now.uptime - atStart.uptime).toFixed(1)}\t${process.pid}\n`);
});
