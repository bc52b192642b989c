/** The keys directory's lock (`DIR/.lock`): the CLI and an enrolling hub change state.json one at a time. */
import { AsyncLocalStorage } from "node:async_hooks";
import { rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { LeafmeshError } from "../lib/errors.ts";
import { createLock, ownerAlive, readOwner, removeStaleLock, thisProcess } from "../lib/lock-owner.ts";

/**
 * Runs `change` while holding the keys directory's lock (`DIR/.lock`), so that the CLI (every `keys`
 * command that writes) and a hub that enrols nodes from the same directory never write state.json, or
 * an account JWT, over each other: a revocation written over by a concurrent enrolment would be lost,
 * and the next re-signing would make the revoked key valid again. A lock left by a process that is gone
 * (or whose pid another process has now, after a reboot: lib/lock-owner.ts) is taken over. A change made inside another one on the same directory (issuing a site's servers as
 * nodes) runs in its caller's hold.
 * @default waits up to 30 s — an enrolment (openssl, re-signing every account) takes about a second.
 */
export async function withKeysLock<T>(dir: string, change: () => Promise<T>, waitMs = 30_000): Promise<T> {
  const held = holding.getStore();
  const key = resolve(dir);
  if (held?.has(key)) return change();
  const lock = join(dir, ".lock");
  const deadline = performance.now() + waitMs;
  for (;;) {
    try {
      if (createLock(lock, thisProcess())) break;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // No directory: nothing to keep apart, and the change says there is no mesh there (readKeyState).
      if (code === "ENOENT" || code === "ENOTDIR") return change();
      if (code === "EACCES" || code === "EPERM" || code === "EROFS") throw new LeafmeshError("TRUST_FAILED", `${resolve(dir)}: cannot take its lock ${lock} (${code}): the keys directory must be writable by this user`, { cause: error });
      throw error;
    }
    // Our own pid is another change of this process (two enrolments at once), not a lock left behind: it is waited for.
    if (removeStaleLock(lock, (holder) => holder.pid !== process.pid && !ownerAlive(holder))) continue;
    if (performance.now() > deadline) throw new LeafmeshError("TRUST_FAILED", `${resolve(dir)} is locked by process ${readOwner(lock)?.pid ?? "?"} (${lock}) for more than ${waitMs / 1000} s`);
    await new Promise((wake) => setTimeout(wake, 25));
  }
  try {
    return await holding.run(new Set([...(held ?? []), key]), change);
  } finally {
    rmSync(lock, { force: true });
  }
}

/** The keys directories the current async call chain holds. */
const holding = new AsyncLocalStorage<Set<string>>();
