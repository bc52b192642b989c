/**
 * What the live-ops probes (lab/live-ops-*.ts) share: a log line stamped with the seconds since the probe began,
 * the pid of a leafmesh process's nats-server, a retry that says how soon something works again, and the warnings
 * a process logged. Diagnostics, not tests.
 *
 * ```ts
 * await untilWorks("new stream", () => echoesThroughSocks(socksPort, "edge-c", echo.port, 5_000), { tries: 30, sayEvery: 3 });
 * sayWarnings([edgeA, edgeC], { last: 6, width: 300 });
 * ```
 */
import { execFileSync } from "node:child_process";

const t0 = Date.now();
/** ms since the probe began. */
export const elapsedMs = () => Date.now() - t0;
export const sleep = (ms: number) => new Promise((wake) => setTimeout(wake, ms));
export const log = (...parts: unknown[]) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...parts);

/** The pid of the nats-server a leafmesh process runs in its data directory. */
export function natsPid(process: { dataDir: string }): number {
  return Number(execFileSync("pgrep", ["-f", `nats-server.*${process.dataDir}`], { encoding: "utf8" }).trim().split("\n")[0]);
}

/** `attempt` again until it resolves (at most `tries` times): logs "<what> works after N ms", or every `sayEvery`th failure. */
export async function untilWorks(what: string, attempt: () => Promise<unknown>, options: { tries: number; sayEvery: number }): Promise<void> {
  const started = Date.now();
  for (let i = 0; i < options.tries; i++) {
    try {
      await attempt();
      log(`${what} works after`, Date.now() - started, "ms");
      return;
    } catch (error) {
      if (i % options.sayEvery === 0) log(`${what} fails:`, (error as Error).message);
    }
  }
}

/** Waits up to 20 s for `ended()` after a fault; says when the client's stream is still open then (`more`: what that means here). */
export async function awaitEnding(ended: () => boolean, more = ""): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!ended() && Date.now() < deadline) await sleep(200);
  if (!ended()) log(`client stream still open 20 s after the fault${more}`);
}

/** Each process's warnings and errors, the last `last` of them cut at `width` characters (the --insecure banner left out). */
export function sayWarnings(processes: { name: string; output(): string }[], options: { last: number; width: number }): void {
  for (const process of processes) {
    const lines = process.output().split("\n").filter((line) => /"level":(40|50|60)/.test(line) && !line.includes("INSECURE"));
    log(`${process.name} warnings (${lines.length}):\n` + lines.slice(-options.last).map((line) => "   " + line.slice(0, options.width)).join("\n"));
  }
}
