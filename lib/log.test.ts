/**
 * The logger against a stderr whose reader is gone (a `| tee` killed with the
 * agent by one Ctrl-C, a log shipper that died): the process must still exit.
 * pino's async destination flushes what it holds at exit, and sonic-boom 4's
 * flushSync retried any failed write forever, EPIPE included, 100 ms at a time:
 * an agent stopped after its reader was gone never exited (measured: still there
 * 30 minutes later, in Atomics.wait under flushSync). And against a reader that
 * is there but does not read (a paused terminal, a stuck shipper): what waits for
 * it is bounded (lib/log.ts logBacklogBytes), not kept without end.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { nodeBinary } from "../test/support/processes.ts";

const logModule = fileURLToPath(new URL("./log.ts", import.meta.url));
const metricsModule = fileURLToPath(new URL("./metrics.ts", import.meta.url));

/** Runs `script` with stderr into a pipe nobody reads any more; resolves with its exit code, or "hung". */
function exitWithReaderGone(script: string): Promise<number | string | null> {
  return new Promise((resolve) => {
    const child = spawn(nodeBinary, ["--input-type=module", "-e", script], { stdio: ["ignore", "ignore", "pipe"] });
    // The reader goes away before the process logs its last lines.
    child.stderr!.destroy();
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolve("hung");
    }, 10_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

describe("createLogger", () => {
  it("lets the process exit when its stderr reader is gone while lines are waiting to be written", async () => {
    const script = `
      const { createLogger } = await import(${JSON.stringify(logModule)});
      const log = createLogger();
      setTimeout(() => {
        for (let i = 0; i < 20; i++) log.info({ i }, "stopping: a line the reader will never see");
        process.exit(3);
      }, 300);`;
    expect(await exitWithReaderGone(script)).toBe(3);
  }, 20_000);

  it("holds a bounded amount of lines for a reader that stopped reading (the rest are dropped, not kept)", async () => {
    // 40 MB of lines into a pipe nobody reads: what the kernel does not take waits in the process.
    const script = `
      const { createLogger } = await import(${JSON.stringify(logModule)});
      const log = createLogger();
      const before = process.memoryUsage().heapUsed;
      const text = "x".repeat(200);
      for (let i = 0; i < 200_000; i++) log.info({ i }, text);
      globalThis.gc?.();
      const { MetricsServer } = await import(${JSON.stringify(metricsModule)});
      const metrics = await new MetricsServer({ log }).registry.metrics();
      const dropped = /^leafmesh_log_lines_dropped_total (\\d+)$/m.exec(metrics)?.[1];
      process.stdout.write(JSON.stringify({ grewMiB: Math.round((process.memoryUsage().heapUsed - before) / 1048576), dropped: Number(dropped) }) + "\\n");
      setInterval(() => undefined, 1_000); // waits to be killed: an exit would wait for the reader to take what is left`;
    const child = spawn(nodeBinary, ["--expose-gc", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    child.stderr!.pause(); // never read: the pipe fills, then the logger holds what is left
    let said = "";
    await new Promise<void>((resolve) =>
      child.stdout!.on("data", (chunk: Buffer) => {
        said += chunk.toString();
        if (said.endsWith("\n")) resolve();
      }),
    );
    child.kill("SIGKILL");
    child.stderr!.destroy();
    const { grewMiB, dropped } = JSON.parse(said) as { grewMiB: number; dropped: number };
    expect(grewMiB).toBeLessThan(24);
    // Most of the 200,000 lines found the backlog full: counted, for /metrics.
    expect(dropped).toBeGreaterThan(100_000);
    expect(dropped).toBeLessThan(200_000);
  }, 30_000);

  it("still writes every line to a reader that reads", async () => {
    const script = `
      const { createLogger } = await import(${JSON.stringify(logModule)});
      const log = createLogger();
      for (let i = 0; i < 500; i++) log.info({ i }, "line");
      process.exit(0);`;
    const child = spawn(nodeBinary, ["--input-type=module", "-e", script], { stdio: ["ignore", "ignore", "pipe"] });
    let text = "";
    child.stderr!.on("data", (chunk: Buffer) => (text += chunk.toString()));
    await new Promise((resolve) => child.once("close", resolve));
    const lines = text.trim().split("\n").map((line) => JSON.parse(line) as { i: number });
    expect(lines.map((line) => line.i)).toEqual(Array.from({ length: 500 }, (_, i) => i));
  });
});
