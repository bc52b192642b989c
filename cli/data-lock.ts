/**
 * One leafmesh process per data directory. Two on one --data (a systemd unit and a start by hand, two units left
 * with the same path) each wrote the directory's nats-server.conf over the other's and each took the other's
 * running nats-server for one left over by a crash and killed it: the first node ended up serving on the second's
 * ports, restarting its server again and again. The second start is now refused, naming the first.
 *
 * DATA/leafmesh.lock holds the owner's pid and its start time (lib/lock-owner.ts: a pid alone is reused). A lock
 * whose process is gone, or is another process under a reused pid, is stale and taken over: a kill -9 leaves one
 * behind. The lock goes when its process exits.
 *
 * ```ts
 * lockDataDirectory("/var/lib/leafmesh", "agent"); // or throws CONFIG_INVALID: … is in use by leafmesh agent (pid 812) …
 * ```
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { LeafmeshError } from "../lib/errors.ts";
import { fileProblem } from "../lib/file-errors.ts";
import { createLock, ownerAlive, readOwner, removeStaleLock, thisProcess } from "../lib/lock-owner.ts";

export function lockDataDirectory(dir: string, role: string): void {
  const file = join(dir, "leafmesh.lock");
  const mine = thisProcess(role);
  // Twice at most: once, and once more after taking a stale lock away.
  for (let attempt = 0; attempt < 2; attempt++) {
    if (!createLockIn(dir, file, mine)) {
      const owner = readOwner(file);
      if (owner && ownerAlive(owner)) {
        throw new LeafmeshError(
          "CONFIG_INVALID",
          `--data ${dir} is in use by leafmesh ${owner.role ?? "process"} (pid ${owner.pid}): two processes on one data directory overwrite each other's nats-server and stop each other's server; stop that one first, or give this one a --data of its own`,
        );
      }
      removeStaleLock(file, (holder) => !ownerAlive(holder));
      continue;
    }
    process.once("exit", () => {
      // Only our own: a later process may have taken a lock we left (it would not, while we run).
      if (readOwner(file)?.pid === process.pid) rmSync(file, { force: true });
    });
    return;
  }
  throw new LeafmeshError("CONFIG_INVALID", `--data ${dir}: another process took its lock (${file}) while this one started; start one at a time`);
}

/** createLock, with a failure to write (a full disk, a read-only file system) said as the data directory's. */
function createLockIn(dir: string, file: string, owner: ReturnType<typeof thisProcess>): boolean {
  try {
    return createLock(file, owner, 0o644);
  } catch (error) {
    throw new LeafmeshError("CONFIG_INVALID", `--data ${dir}: cannot write its lock file ${file}: ${fileProblem(error)}`, { cause: error });
  }
}
