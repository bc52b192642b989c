/**
 * Says which test file a vitest worker process was running when it died (a crash, a signal), instead
 * of the run ending with nothing but "Error: Channel closed".
 *
 * Vitest 3's forks pool (tinypool 1.1) sends the next message to a worker whose process has died; on
 * Node 24 that send emits ERR_IPC_CHANNEL_CLOSED, which ends vitest's own process at once: no summary,
 * no file named, the cause lost (a CI run of 2026-12-04 ended so after 348 s). Here, in vitest's
 * process (vitest.config.ts), a message to a dead worker is dropped with a line that names the worker's
 * pid, its exit and the file it ran; tinypool's own "Worker exited unexpectedly" then fails the run as
 * it should, with the summary. Each worker writes the file it runs to a directory (`recordWorkerFile`,
 * a setup file) that vitest's process reads back by pid.
 */
import childProcess, { type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

const directoryVariable = "LEAFMESH_VITEST_WORKER_FILES";

/** In vitest's process: report, and drop, messages to a worker whose channel is closed. */
export function reportWorkerDeaths(): void {
  if (process.env[directoryVariable]) return; // once per vitest process (the config may be loaded again)
  const directory = mkdtempSync(join(tmpdir(), "leafmesh-vitest-workers-"));
  process.env[directoryVariable] = directory;
  process.once("exit", () => rmSync(directory, { recursive: true, force: true }));
  const fork = childProcess.fork;
  childProcess.fork = function (...args: Parameters<typeof fork>): ChildProcess {
    const child = fork(...args);
    const send = child.send;
    let reported = false;
    child.send = function (this: ChildProcess, ...sendArgs: unknown[]): boolean {
      if (this.connected || sendArgs.some((arg) => typeof arg === "function")) return (send as (...a: unknown[]) => boolean).apply(this, sendArgs);
      if (!reported) {
        reported = true;
        const exit = this.signalCode ? `signal ${this.signalCode}` : this.exitCode !== null ? `exit code ${this.exitCode}` : "no exit seen yet";
        console.error(`[worker-deaths] vitest worker ${this.pid} died (${exit}) while running ${workerFile(this.pid)}: its next message is dropped, and the run fails with "Worker exited unexpectedly"`);
      }
      return false;
    } as typeof send;
    return child;
  } as typeof fork;
  // tinypool imports fork by name from node:child_process: the ESM binding follows the CommonJS one.
  syncBuiltinESMExports();
}

function workerFile(pid: number | undefined): string {
  try {
    return readFileSync(join(process.env[directoryVariable] ?? "", String(pid)), "utf8");
  } catch {
    return "a file it did not record";
  }
}

/** In a worker (a setup file): the file it runs now. */
export function recordWorkerFile(file: string): void {
  const directory = process.env[directoryVariable];
  if (directory) writeFileSync(join(directory, String(process.pid)), file);
}
