/**
 * `mkdir -p` that always ends. Node's own (`mkdirSync(path, { recursive: true })`, Node 24.21) spins for ever on a
 * path under /proc: mkdir of the child says ENOENT, so it makes the parent, which says EEXIST, so it tries the child
 * again; the process takes a core and no signal but SIGKILL stops it (a Node handler never runs). `leafmesh agent
 * --data /proc/…` did exactly that. This walks up once to the nearest directory that exists, then makes each
 * missing one below it once; a failure throws the mkdir's own error (ENOENT, EACCES, ENOTDIR, EROFS).
 *
 * ```ts
 * makeDirectories("/var/lib/leafmesh/edge-a/jetstream");
 * makeDirectories(keysDir, 0o700);
 * makeDirectories("/proc/leafmesh"); // throws ENOENT: no such file or directory, mkdir '/proc/leafmesh'
 * ```
 */
import { mkdirSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";

export function makeDirectories(path: string, mode?: number): void {
  const missing: string[] = [];
  let current = resolve(path);
  for (;;) {
    try {
      if (statSync(current).isDirectory()) break;
      // A file where a directory must be: mkdir says so (EEXIST for the path itself, ENOTDIR below it).
      mkdirSync(missing.length > 0 ? missing[missing.length - 1] : current);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      const parent = dirname(current);
      if (parent === current) throw error;
      missing.push(current);
      current = parent;
    }
  }
  for (let index = missing.length - 1; index >= 0; index--) {
    try {
      mkdirSync(missing[index], mode === undefined ? undefined : { mode });
    } catch (error) {
      // Made by someone else in the meantime: as good.
      if ((error as NodeJS.ErrnoException).code !== "EEXIST" || !statSync(missing[index]).isDirectory()) throw error;
    }
  }
}
