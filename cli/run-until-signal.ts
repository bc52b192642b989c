/** Keeps a long-running command alive until SIGINT, SIGTERM or SIGHUP (bin/leafmesh.js), then stops it cleanly. */
import type { CommandIO } from "./command.ts";

let startAgain = false;

/**
 * Whether the command stopped to start again in place (its bundle replaced on disk: trust/bundle-watch.ts):
 * bin/leafmesh.js then runs the same command line again in this process (execve: the same pid, stdio and
 * service unit). A command run inside another program (a test) only stops.
 */
export function startAgainRequested(): boolean {
  return startAgain;
}

/** Runs until `io.signal`, or until `again` asks to stop and start again in place; stops either way. */
export async function runUntilSignal(io: CommandIO, stop: () => Promise<void>, again?: AbortSignal): Promise<number> {
  await new Promise<void>((resolve) => {
    if (io.signal.aborted || again?.aborted) resolve();
    io.signal.addEventListener("abort", () => resolve(), { once: true });
    again?.addEventListener("abort", () => resolve(), { once: true });
  });
  await stop();
  if (again?.aborted && !io.signal.aborted) startAgain = true;
  return 0;
}
