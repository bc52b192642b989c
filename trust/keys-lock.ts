/** The keys directory's lock (`DIR/.lock`): the CLI and an enrolling hub change state.json one at a time. */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { LeafmeshError } from "../lib/errors.ts";

/**
 * Runs `change` while holding the keys directory's lock (`DIR/.lock`), so that the CLI (`keys token`,
 * `keys revoke`) and a hub that enrols nodes from the same directory never write state.json over each
 * other. A lock left by a process that is gone is taken over.
 * @default waits up to 30 s — an enrolment (openssl, re-signing every account) takes about a second.
 */
export async function withKeysLock<T>(dir: string, change: () => Promise<T>, waitMs = 30_000): Promise<T> {
  const lock = join(dir, ".lock");
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      writeFileSync(lock, String(process.pid), { flag: "wx", mode: 0o600 });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const holder = Number(readFileSync(lock, "utf8").trim() || "0");
      if (holder > 0 && holder !== process.pid && !processAlive(holder)) {
        rmSync(lock, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new LeafmeshError("TRUST_FAILED", `${resolve(dir)} is locked by process ${holder} (${lock}) for more than ${waitMs / 1000} s`);
      await new Promise((wake) => setTimeout(wake, 25));
    }
  }
  try {
    return await change();
  } finally {
    rmSync(lock, { force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
