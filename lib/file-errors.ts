/**
 * A failed file operation in words an operator acts on, from its errno code: a full disk, a quota, a read-only
 * file system, a permission. The system's own message stays in the error's cause.
 *
 * ```ts
 * throw new LeafmeshError("CONFIG_INVALID", `cannot write ${file}: ${fileProblem(error)}`, { cause: error });
 * // "cannot write /var/lib/leafmesh/leafmesh.lock: no space left on the device (its file system is full: free some space)"
 * ```
 */
const words: Record<string, string> = {
  ENOSPC: "no space left on the device (its file system is full: free some space)",
  EDQUOT: "the disk quota of this user is used up",
  EROFS: "the file system is read-only",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EIO: "an input/output error (a failing disk?)",
  ENOENT: "no such file or directory",
  ENOTDIR: "a file is in the way",
};

export function fileProblem(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return (code && words[code]) ?? (error instanceof Error ? error.message : String(error));
}
