/**
 * One leafmesh process per data directory. Two on one --data (a systemd unit and a start by hand, two units left
 * with the same path) each wrote the directory's nats-server.conf over the other's and each took the other's
 * running nats-server for one left over by a crash and killed it: the first node ended up serving on the second's
 * ports, restarting its server again and again. The second start is now refused, naming the first.
 *
 * DATA/leafmesh.lock holds the owner's pid and its start time (/proc/PID/stat: a pid alone is reused, and pids
 * only go to 32,768 on many machines). A lock whose process is gone, or is another process under a reused pid, is
 * stale and taken over: a kill -9 leaves one behind. The lock goes when its process exits.
 *
 * ```ts
 * lockDataDirectory("/var/lib/leafmesh", "agent"); // or throws CONFIG_INVALID: … is in use by leafmesh agent (pid 812) …
 * ```
 */
import { closeSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import { LeafmeshError } from "../lib/errors.ts";

interface LockOwner {
  pid: number;
  /** Clock ticks since boot when the process started (field 22 of /proc/PID/stat); undefined where /proc is not. */
  start?: number;
  role: string;
}

/** The start time of a running process, or undefined when it is not running (a zombie is not) or there is no /proc. */
function startOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may hold spaces: the fields that follow come after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Z: exited, not yet reaped by its parent (a kill -9 a moment ago); X: dying.
    if (fields[0] === "Z" || fields[0] === "X") return undefined;
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

function alive(owner: LockOwner): boolean {
  if (owner.pid === process.pid) return false; // this very process, started again in place (execve): ours
  const start = startOf(owner.pid);
  if (start !== undefined) return owner.start === undefined || start === owner.start;
  if (owner.start !== undefined) return false; // it had a start time: there is /proc, and the process is gone
  try {
    process.kill(owner.pid, 0);
    return owner.start === undefined; // no /proc to tell a reused pid: a live pid is taken as the owner
  } catch {
    return false;
  }
}

function readOwner(file: string): LockOwner | undefined {
  try {
    const owner = JSON.parse(readFileSync(file, "utf8")) as LockOwner;
    return Number.isInteger(owner.pid) && owner.pid > 0 ? owner : undefined;
  } catch {
    return undefined; // missing, or cut short by a crash while written: stale either way
  }
}

export function lockDataDirectory(dir: string, role: string): void {
  const file = join(dir, "leafmesh.lock");
  const mine: LockOwner = { pid: process.pid, start: startOf(process.pid), role };
  // Twice at most: once, and once more after taking a stale lock away.
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number;
    try {
      fd = openSync(file, "wx", 0o644);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const owner = readOwner(file);
      if (owner && alive(owner)) {
        throw new LeafmeshError(
          "CONFIG_INVALID",
          `--data ${dir} is in use by leafmesh ${owner.role} (pid ${owner.pid}): two processes on one data directory overwrite each other's nats-server and stop each other's server; stop that one first, or give this one a --data of its own`,
        );
      }
      rmSync(file, { force: true });
      continue;
    }
    writeSync(fd, JSON.stringify(mine));
    closeSync(fd);
    process.once("exit", () => {
      // Only our own: a later process may have taken a lock we left (it would not, while we run).
      if (readOwner(file)?.pid === process.pid) rmSync(file, { force: true });
    });
    return;
  }
  throw new LeafmeshError("CONFIG_INVALID", `--data ${dir}: another process took its lock (${file}) while this one started; start one at a time`);
}
