/**
 * Who holds a lock file, and whether that process still runs. A pid alone is
 * reused (pids only go to 32,768 on many machines, and after a reboot the low
 * ones come back first): the owner is its pid and its start time
 * (/proc/PID/stat, field 22), and a live process with another start time is
 * not the owner. Used by the data directory's lock (cli/data-lock.ts) and the
 * keys directory's (trust/keys-lock.ts).
 *
 * A lock file is made whole (written aside, then linked in: a reader never
 * finds it empty), and a stale one is taken away only under a second lock,
 * `FILE.takeover`, after reading it again there: two processes that both found
 * the same stale lock each removed it, the second removing the lock the first
 * had just made, and both went on holding it.
 *
 * ```ts
 * while (!createLock(file, thisProcess("agent"))) {
 *   if (!removeStaleLock(file, (owner) => !ownerAlive(owner))) await sleep(25); // stale: a kill -9, a power cut
 * }
 * ```
 */
import { linkSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";

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

/** An owner that reads as no owner (its file cut short by a crash) is stale once its file is this old. */
const unreadableStaleMs = 1_000;

/**
 * Makes `file` naming `owner`; false when it exists. The text is written to a file of this process's own and linked
 * in, so the lock appears whole; where the file system has no hard links (FAT), it is created and written in place.
 * Errors other than EEXIST (no directory, no permission) are thrown as they come.
 */
export function createLock(file: string, owner: LockOwner, mode = 0o600): boolean {
  const text = JSON.stringify(owner);
  const aside = `${file}.${process.pid}.${Math.random().toString(36).slice(2, 10)}`;
  try {
    writeFileSync(aside, text, { flag: "wx", mode });
  } catch (error) {
    // Made but not written (a full disk): not left beside the lock for ever.
    rmSync(aside, { force: true });
    throw error;
  }
  try {
    linkSync(aside, file);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return false;
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "ENOSYS" && code !== "EOPNOTSUPP") throw error;
  } finally {
    rmSync(aside, { force: true });
  }
  try {
    writeFileSync(file, text, { flag: "wx", mode });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw error;
  }
}

/**
 * Takes `file` away when `stale` says its owner is stale (an owner that cannot be read is, once the file is a second
 * old), reading it again under `FILE.takeover`, which one process holds at a time. True: it is gone, make it again;
 * false: it is held (or another process is taking it over this moment), wait.
 */
export function removeStaleLock(file: string, stale: (owner: LockOwner) => boolean): boolean {
  const guard = `${file}.takeover`;
  if (!createLock(guard, thisProcess())) {
    // A taker that died in the few hundred microseconds it holds the guard leaves it behind: taken away once it is
    // old as well. Never on a read that found no guard: the guard that is there by the time of the removal may be a
    // new taker's, and removing it let two takers in at once (a stale lock removed after one of them had made it anew).
    const taker = readOwner(guard);
    const age = ageOf(guard);
    if (age !== undefined && age > takerStaleMs && (taker ? taker.pid !== process.pid && !ownerAlive(taker) : true)) rmSync(guard, { force: true });
    return false;
  }
  try {
    // Under the guard only this process removes a stale lock, and a lock is made only where there is none: a stale
    // owner read here is still the file's at the removal. A lock that is gone is not removed "again": the one at its
    // name by then may be a new holder's (its holder released it, another made it).
    const owner = readOwner(file);
    if (owner === undefined) {
      const age = ageOf(file);
      if (age === undefined) return true; // gone: make it again
      if (age <= unreadableStaleMs) return false; // being written, where there are no hard links
    } else if (!stale(owner)) return false;
    rmSync(file, { force: true });
    return true;
  } finally {
    rmSync(guard, { force: true });
  }
}

/** A guard older than this was left by a taker that died holding it (it holds it for well under a millisecond). */
const takerStaleMs = 5_000;

/** How long ago `file` was last written, or undefined when it is not there. */
function ageOf(file: string): number | undefined {
  try {
    return Date.now() - statSync(file).mtimeMs;
  } catch {
    return undefined;
  }
}
