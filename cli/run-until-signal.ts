/** Keeps a long-running command alive until SIGINT, SIGTERM or SIGHUP (bin/leafmesh.js), then stops it cleanly. */
import type { Logger } from "../lib/log.ts";
import { describeError, LeafmeshError } from "../lib/errors.ts";
import type { CommandIO } from "./command.ts";

let startAgain = false;

/**
 * Whether the command stopped to start again in place (its keys replaced on disk: trust/bundle-watch.ts):
 * bin/leafmesh.js then runs the same command line again in this process (execve: the same pid, stdio and
 * service unit). A command run inside another program (a test) only stops.
 */
export function startAgainRequested(): boolean {
  return startAgain;
}

/** A watch that calls `onReplaced` once, with what changed, when the process should start again with new files. */
export type ReplacementWatch = (onReplaced: (what: string) => void) => { stop(): void };

/**
 * Runs until `io.signal`, or until `watch` reports its files replaced (then it says so, and the command starts again
 * in place); stops either way, and lets the log's last lines out before the process image may be replaced.
 */
export async function runUntilSignal(io: CommandIO, stop: () => Promise<void>, restart?: { watch: ReplacementWatch; log: Logger }, log?: Logger): Promise<number> {
  if (io.signal.aborted) {
    // The stop came as the start ended (its last parts, a watch being set up): a start interrupted, as one before it
    // is, not a clean run's end (exit 0, as if the role had run and been stopped).
    await stop();
    throw new LeafmeshError("INTERRUPTED", "stopped while it was starting, after its nats-server was ready: nothing is left running");
  }
  const again = new AbortController();
  let watching: ReturnType<ReplacementWatch> | undefined;
  try {
    watching = restart?.watch((what) => {
      restart.log.warn({ changed: what }, "keys replaced on disk: stopping, and starting again in place with them");
      again.abort();
    });
  } catch (error) {
    // The watch cannot begin (a key file gone since the start read it): the role is up, and stops before this is
    // said; thrown past it, the process ended with its parts running (interception rules, its node record).
    await stop();
    throw error instanceof LeafmeshError ? error : new LeafmeshError("TRUST_FAILED", `cannot watch the keys for their replacement: ${describeError(error)}: put the bundle back in place and start again`, { cause: error });
  }
  await new Promise<void>((resolve) => {
    if (io.signal.aborted) resolve();
    io.signal.addEventListener("abort", () => resolve(), { once: true });
    again.signal.addEventListener("abort", () => resolve(), { once: true });
  });
  watching?.stop();
  // Said before and after: a stop that takes its time (a hub gone, streams to end) is seen as one, and a log read
  // later shows where the process ended and why, not only its last line before it.
  const why = again.signal.aborted && !io.signal.aborted ? "to start again with the keys replaced on disk" : stopReason(io.signal);
  const stopping = performance.now();
  log?.info({ why }, `stopping: ${why}`);
  await stop();
  log?.info({ ms: Math.round(performance.now() - stopping) }, `stopped in ${((performance.now() - stopping) / 1000).toFixed(1)} s`);
  if (again.signal.aborted && !io.signal.aborted) startAgain = true;
  for (const logger of new Set([restart?.log, log])) if (logger) await new Promise<void>((resolve) => logger.flush(() => resolve()));
  return 0;
}

/** What asked the stop: the signal's name bin/leafmesh.js aborts with ("SIGTERM"), else a stop asked by the caller. */
function stopReason(signal: AbortSignal): string {
  return typeof signal.reason === "string" && /^SIG[A-Z]+$/.test(signal.reason) ? `${signal.reason} received` : "stop asked";
}
