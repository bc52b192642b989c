/**
 * Secret files of the mesh (nkey seeds, creds, TLS keys, the pre-shared key):
 * written 0600 in one step (never readable by others, not even for a moment),
 * and refused at start when someone loosened them.
 *
 * ```ts
 * writeSecretFile("/etc/leafmesh/keys/nodes/edge-a/node.creds", creds);
 * checkSecretFilePermissions("/etc/leafmesh/keys/nodes/edge-a/node.creds"); // throws TRUST_FAILED if group/other may read it
 * ```
 */
import { chmodSync, closeSync, fsyncSync, openSync, statSync, unlinkSync, writeSync, renameSync, constants } from "node:fs";
import { dirname, basename, join } from "node:path";
import { randomBytes } from "node:crypto";
import { LeafmeshError } from "../lib/errors.ts";
import { makeDirectories } from "../lib/make-dirs.ts";

/** Creates a directory that only the owner may enter (0700). */
export function makePrivateDir(path: string): void {
  makeDirectories(path, 0o700);
  chmodSync(path, 0o700);
}

/**
 * Writes `content` to `path` with mode 0600. The data goes to a temporary file
 * created 0600 (O_EXCL) and is renamed over the target, so a crash never leaves a
 * half-written key and the content is never visible with looser permissions.
 */
export function writeSecretFile(path: string, content: string | Uint8Array): void {
  writeFileWhole(path, content, 0o600);
}

/**
 * Writes a file of the keys directory or a node's bundle that is not secret (account JWTs, the
 * revocation list, certificates) the same way: whole or not at all, never a truncated JWT or list
 * after a crash or on a full disk.
 * @default mode 0o644
 */
export function writeFileWhole(path: string, content: string | Uint8Array, mode = 0o644): void {
  const temporary = writeTemporary(path, content, mode);
  renameSync(temporary, path);
}

/**
 * Throws TRUST_FAILED when `path` is missing, not a regular file, or readable or
 * writable by group or others (like ssh does for private keys). Call it for every
 * secret before handing it to nats-server or libp2p.
 */
export function checkSecretFilePermissions(path: string): void {
  let stats;
  try {
    stats = statSync(path);
  } catch (cause) {
    throw new LeafmeshError("TRUST_FAILED", `secret file ${path} cannot be read: ${(cause as Error).message} (create it with \`leafmesh keys issue\`)`, { cause });
  }
  if (!stats.isFile()) throw new LeafmeshError("TRUST_FAILED", `secret file ${path} is not a regular file`);
  const loose = stats.mode & 0o077;
  if (loose !== 0) {
    const mode = (stats.mode & 0o777).toString(8).padStart(4, "0");
    throw new LeafmeshError(
      "TRUST_FAILED",
      `secret file ${path} has permissions ${mode}: group or others may access it, so it is refused. Run \`chmod 600 ${path}\` (and check who could have copied it)`,
    );
  }
}

/**
 * The content in a new file beside `path` (a name of its own, created 0600 exclusively, then given
 * `mode`), on the disk (fsync) before it is renamed or linked over it; returns its path. The fsync: an
 * edge node loses power, and a rename of data still in the page cache can leave an empty file where the
 * old one was. A write that fails (a full disk) removes the temporary file and throws.
 */
function writeTemporary(path: string, content: string | Uint8Array, mode = 0o600): string {
  const temporary = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString("hex")}.tmp`);
  const fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    const bytes = typeof content === "string" ? Buffer.from(content) : content;
    for (let written = 0; written < bytes.byteLength; ) written += writeSync(fd, bytes, written);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(temporary);
    throw error;
  }
  closeSync(fd);
  chmodSync(temporary, mode); // the umask could only have narrowed it; make it exact
  return temporary;
}
