/**
 * A Secret volume as kubelet writes it (pkg/volume/util/atomic_writer.go): each
 * key's content in a timestamped directory `..<time>` with the volume's
 * defaultMode, `..data` a symlink to that directory, and each key a symlink
 * `<key> → ..data/<key>`. An update writes a new timestamped directory and
 * swaps `..data` in one rename, then removes the old directory and the links
 * of keys that went away. No kubelet runs here; this is its layout on disk.
 *
 * ```ts
 * projectSecret(mount, secretData(yamlText));   // first mount, and every update
 * ```
 */
import { existsSync, lstatSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";

/** The decoded data of a Secret manifest. */
export function secretData(manifest: string): Record<string, Buffer> {
  const secret = parse(manifest) as { kind: string; data?: Record<string, string> };
  if (secret.kind !== "Secret") throw new Error(`not a Secret: ${secret.kind}`);
  return Object.fromEntries(Object.entries(secret.data ?? {}).map(([key, value]) => [key, Buffer.from(value, "base64")]));
}

let updates = 0;

export function projectSecret(mount: string, data: Record<string, Buffer>, defaultMode = 0o400): void {
  mkdirSync(mount, { recursive: true });
  const stamp = `..${new Date().toISOString().replace(/[-:]/g, "_").replace("T", "_").replace("Z", "")}${String(++updates).padStart(9, "0")}`;
  const staged = join(mount, stamp);
  mkdirSync(staged, { mode: 0o755 });
  for (const [key, content] of Object.entries(data)) writeFileSync(join(staged, key), content, { mode: defaultMode });
  const previous = existsSync(join(mount, "..data")) ? readlinkSync(join(mount, "..data")) : undefined;
  symlinkSync(stamp, join(mount, "..data_tmp"));
  renameSync(join(mount, "..data_tmp"), join(mount, "..data"));
  for (const key of Object.keys(data)) if (!existsSync(join(mount, key))) symlinkSync(join("..data", key), join(mount, key));
  for (const name of readdirSync(mount)) {
    if (name.startsWith("..") || name in data) continue;
    if (lstatSync(join(mount, name)).isSymbolicLink()) rmSync(join(mount, name));
  }
  if (previous) rmSync(join(mount, previous), { recursive: true, force: true });
}
