/**
 * Where leafmesh keeps V8's compile cache: a directory only the running user can
 * write. Node's default, `$TMPDIR/node-compile-cache`, is a name any local user
 * can create first; a cache entry there holds a TypeScript file's stripped source
 * as plain text behind two CRC32s, and Node runs it in place of the file. An
 * unprivileged user who made that directory ran code in root's leafmesh (checked:
 * a crafted entry printed uid 0). So the cache goes in
 * `$TMPDIR/leafmesh-compile-cache-<uid>`, used only when it is a real directory
 * (no symlink), owned by this user, writable by nobody else, in a parent that
 * others cannot rename it in (not writable by others, or sticky like /tmp).
 * Anything else: no cache (a slower start, said once on stderr), never a shared
 * one. NODE_COMPILE_CACHE, when set, is the operator's own choice and wins;
 * NODE_DISABLE_COMPILE_CACHE=1 turns the cache off.
 *
 * Plain JavaScript: a TypeScript file imported before the cache is on would load
 * Node's type stripper in every process (~12–24 MiB of RSS, measured in an agent).
 *
 * ```js
 * privateCompileCacheDir();   // "/tmp/leafmesh-compile-cache-0", or { refused: "…" }
 * ```
 */
import { lstatSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** @param {string} [parent] @param {number} [uid] @returns {string | { refused: string }} */
export function privateCompileCacheDir(parent = tmpdir(), uid = process.getuid?.()) {
  if (uid === undefined) return { refused: "no user id on this platform" };
  const dir = join(parent, `leafmesh-compile-cache-${uid}`);
  try {
    const above = lstatSync(parent);
    const othersWrite = (above.mode & 0o022) !== 0;
    const sticky = (above.mode & 0o1000) !== 0;
    if (!above.isDirectory()) return { refused: `${parent} is not a directory` };
    if (othersWrite && !sticky) return { refused: `${parent} is writable by other users and not sticky` };
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (error) {
      if (error.code !== "EEXIST") throw error;
    }
    const stat = lstatSync(dir);
    if (!stat.isDirectory()) return { refused: `${dir} is not a directory (a symlink?)` };
    if (stat.uid !== uid) return { refused: `${dir} belongs to uid ${stat.uid}, not ${uid}` };
    if ((stat.mode & 0o077) !== 0) return { refused: `${dir} is open to other users (mode ${(stat.mode & 0o777).toString(8)})` };
    return dir;
  } catch (error) {
    return { refused: `${dir}: ${error.message}` };
  }
}

/**
 * The compile cache leafmesh picks for a process with environment `env`: undefined where the operator decided
 * (NODE_COMPILE_CACHE set, or NODE_DISABLE_COMPILE_CACHE=1), else privateCompileCacheDir()'s answer.
 * @param {NodeJS.ProcessEnv} [env] @returns {string | { refused: string } | undefined}
 */
export function compileCacheFor(env = process.env) {
  if (env.NODE_COMPILE_CACHE || env.NODE_DISABLE_COMPILE_CACHE) return undefined;
  return privateCompileCacheDir();
}

/**
 * `env` with NODE_COMPILE_CACHE at leafmesh's own cache, for a process started without `leafmesh` (a lab's
 * node, a test worker); `env` itself where the operator decided or no private directory can be had.
 * @param {NodeJS.ProcessEnv} [env] @returns {NodeJS.ProcessEnv}
 */
export function withCompileCache(env = process.env) {
  const dir = compileCacheFor(env);
  return typeof dir === "string" ? { ...env, NODE_COMPILE_CACHE: dir } : env;
}
