/** Keeps a long-running command alive until SIGINT, SIGTERM or SIGHUP (bin/leafmesh.js), then stops it cleanly. */
import type { CommandIO } from "./command.ts";

export async function runUntilSignal(io: CommandIO, stop: () => Promise<void>): Promise<number> {
  await new Promise<void>((resolve) => {
    if (io.signal.aborted) resolve();
    io.signal.addEventListener("abort", () => resolve(), { once: true });
  });
  await stop();
  return 0;
}
