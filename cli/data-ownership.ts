/**
 * Files in a data directory that this process cannot write because another user owns them. A node started once as
 * root (by hand, with sudo, before its systemd unit got `User=leafmesh`) leaves its nats-server.conf, its JetStream
 * store and its keys owned by root; the next start as the service user failed on the first file it wrote, with
 * "unexpected error: EACCES" and a stack trace, or later inside nats-server. It is said at start instead, with the
 * first such file, how many there are, and the chown that fixes it.
 *
 * ```ts
 * checkDataOwnership("--data", "/var/lib/leafmesh"); // or throws CONFIG_INVALID: … owned by uid 0 … chown -R 998:998 …
 * ```
 */
import { accessSync, constants, lstatSync, readdirSync, type Stats } from "node:fs";
import { join } from "node:path";
import { LeafmeshError } from "../lib/errors.ts";

/** @default 100_000 — entries looked at, at most: a JetStream store of a large catalog holds a few hundred files; the walk must end. */
const maxEntries = 100_000;

export function checkDataOwnership(flag: string, dir: string, entryLimit = maxEntries): void {
  const uid = process.geteuid?.();
  // Root writes whatever it owns or not; where there are no uids (not Linux) there is nothing to check.
  if (uid === undefined || uid === 0) return;
  const gid = process.getegid?.() ?? uid;
  const stack = [dir];
  let seen = 0;
  let first: { path: string; owner: number } | undefined;
  let count = 0;
  while (stack.length > 0 && seen < entryLimit) {
    const path = stack.pop()!;
    let stats: Stats;
    try {
      stats = lstatSync(path);
    } catch {
      continue; // gone while we looked (a file nats-server is replacing): nothing to say about it
    }
    seen++;
    if (stats.isSymbolicLink()) continue;
    if (stats.uid !== uid && !writable(path)) {
      count++;
      first ??= { path, owner: stats.uid };
    }
    if (stats.isDirectory()) {
      try {
        for (const name of readdirSync(path)) stack.push(join(path, name));
      } catch {
        // A directory we cannot list is itself one we cannot write (counted above, unless it is ours: then we can).
      }
    }
  }
  if (!first) return;
  throw new LeafmeshError(
    "CONFIG_INVALID",
    `${flag}: ${first.path} is owned by uid ${first.owner} and this process (uid ${uid}) cannot write it${count > 1 ? `, nor ${count - 1} more in ${dir}` : ""}: a start as another user (root?) left them; give them to this user (chown -R ${uid}:${gid} ${dir}) or start as their owner`,
  );
}

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
