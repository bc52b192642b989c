/**
 * The agent's local nkey written into its bundle as `local.nk`, where the bundle takes a file, for the
 * `leafmesh status` of a leafmesh before 2026-12-06 (889d11c). That CLI reads the key from local.nk
 * and, finding none, writes a random one and connects with it: a newer agent, which derives its key
 * from node.key (local-nkey.ts), refused it with a bare "Authorization Violation", and the random
 * local.nk it left then took precedence for the newer CLI as well, which was refused the same way
 * until the agent restarted (and took that key). With the agent's own key in local.nk, both CLIs
 * connect. A bundle that takes no file (a read-only Secret volume, a directory the agent may only
 * read) is left as it is: nothing is written, and an older CLI there fails on its own write.
 *
 * ```ts
 * keepLocalNkeyFile(security, log); // at the agent's start, after loadNodeSecurity
 * ```
 */
import { closeSync, constants, existsSync, fsyncSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { derivedLocalSeed } from "./local-nkey.ts";
import type { NodeSecurity } from "./security.ts";

/** Errors of a bundle that takes no new file: left as it is. */
const notWritable = new Set(["EROFS", "EACCES", "EPERM"]);

/** Writes the derived local nkey to the bundle's local.nk when there is none (0600, created exclusively); true when written. */
export function keepLocalNkeyFile(security: Pick<NodeSecurity, "node" | "files">, log: Logger): boolean {
  const path = security.files.localNkey;
  // One there already is the key in use (loadNodeSecurity reads it first): never replaced.
  if (existsSync(path)) return false;
  const seed = derivedLocalSeed(readFileSync(security.files.key), security.node);
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "";
    if (code === "EEXIST") return false; // written meanwhile (an older CLI beside the start): its key, at the next start
    if (notWritable.has(code)) log.debug({ path, err: describeError(error) }, "local.nk not written (the bundle takes no file): a leafmesh status from before 2026-12-06 cannot connect to this agent");
    else log.warn({ path, err: describeError(error) }, "local.nk not written: a leafmesh status from before 2026-12-06 cannot connect to this agent");
    return false;
  }
  try {
    writeSync(fd, `${seed}\n`);
    fsyncSync(fd);
  } catch (error) {
    // A full disk: no half-written key left for a CLI to read.
    closeSync(fd);
    unlinkSync(path);
    log.warn({ path, err: describeError(error) }, "local.nk not written: a leafmesh status from before 2026-12-06 cannot connect to this agent");
    return false;
  }
  closeSync(fd);
  return true;
}
