/**
 * Who holds a lock file, and whether that process still runs. A pid alone is
 * reused (pids only go to 32,768 on many machines, and after a reboot the low
 * ones come back first): the owner is its pid and its start time
 * (/proc/PID/stat, field 22), and a live process with another start time is
 * not the owner. Used by the data directory's lock (cli/data-lock.ts) and the
 * keys directory's (trust/keys-lock.ts).
 *
 * ```ts
 * writeFileSync(file, JSON.stringify(thisProcess("agent")), { flag: "wx" });
 * const owner = readOwner(file);
 * if (owner && !ownerAlive(owner)) rmSync(file); // stale: a kill -9, a power cut
 * ```
 */
import { readFileSync } from "node:fs";

export interface LockOwner {
  pid: number;
  /** Clock ticks since boot when the process started (field 22 of /proc/PID/stat); undefined where /proc is not. */
  start?: number;
  role?: string;
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

/** This process as a lock's owner. */
export function thisProcess(role?: string): LockOwner {
  return { pid: process.pid, start: startOf(process.pid), ...(role ? { role } : {}) };
}

/** Whether the lock's owner still runs: not when its pid is gone, or runs another process (another start time). */
export function ownerAlive(owner: LockOwner): boolean {
  if (owner.pid === process.pid) return false; // this very process, started again in place (execve): ours
  const start = startOf(owner.pid);
  if (start !== undefined) return owner.start === undefined || start === owner.start;
  if (owner.start !== undefined) return false; // it had a start time: there is /proc, and the process is gone
  try {
    process.kill(owner.pid, 0);
    return owner.start === undefined; // no /proc to tell a reused pid: a live pid is taken as the owner
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"; // another user's process: alive
  }
}

/** The owner a lock file names (JSON, or a bare pid as older locks held), or undefined when it names none (cut short by a crash: stale). */
export function readOwner(file: string): LockOwner | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8").trim();
  } catch {
    return undefined;
  }
  if (/^\d+$/.test(text)) return Number(text) > 0 ? { pid: Number(text) } : undefined;
  try {
    const owner = JSON.parse(text) as LockOwner;
    return Number.isInteger(owner.pid) && owner.pid > 0 ? owner : undefined;
  } catch {
    return undefined;
  }
}
