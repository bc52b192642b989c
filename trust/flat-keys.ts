/**
 * The keys directory as a Kubernetes Secret, and back.
 *
 * A Secret is flat: `kubectl create secret --from-file=keys/` drops every
 * subdirectory (hub/, accounts/), and a Secret volume holds one file per key.
 * So `leafmesh keys k8s-secret` writes each file of the keys directory (or of
 * the hubs' copy of it) under a key that spells its path with `__` for `/`
 * (`hub__hub.key`), beside a key that says the layout (`leafmesh-keys-layout`).
 * A hub given such a mount as `--keys` unpacks it into its data directory
 * (DATA/keys: directories 0700, files 0600) and runs from there:
 *
 * - a hub that enrols nodes (`--enrol`) writes its keys directory, so the Secret
 *   only seeds it, at the first start; from then on DATA/keys is its own;
 * - any other hub takes the Secret as it is at every start, and again while it
 *   runs when the Secret changes (kubelet updates the mount within a minute), so
 *   that a hub certificate issued again reaches it (trust/bundle-watch.ts then
 *   restarts it in place, the hubs of a cluster one at a time).
 *
 * Names in a keys directory never hold `__` (node, site and account names are
 * DNS labels), and a path is refused if one did, rather than mapped ambiguously.
 *
 * ```ts
 * const { yaml } = keysSecretManifest({ dir: "keys", part: "hubs", name: "leafmesh-hub-keys", namespace: "leafmesh" });
 * if (isFlatKeys("/etc/leafmesh/keys")) unpackFlatKeys({ mount: "/etc/leafmesh/keys", target: "/data/keys", seedOnly: false, log });
 * ```
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { LeafmeshError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { makePrivateDir, writeSecretFile } from "./secret-files.ts";

/** The key that marks a flat keys layout, and its value. */
export const flatLayoutKey = "leafmesh-keys-layout";
const flatLayoutValue = "flat/1";
const separator = "__";
/** Kubernetes refuses a Secret whose data is over 1 MiB. */
export const secretLimitBytes = 1024 * 1024;
/** In an unpacked directory: the digest of the Secret it came from (a hub that is not enrolling takes a changed one). */
const digestFile = ".from-secret";

/** hubs: what a hub that does not enrol needs (state.json, operator.jwt, accounts/*.jwt, hub/); all: the whole directory, seeds and CA key too. */
export type KeysPart = "hubs" | "all";

function filesUnder(root: string, relative: string): string[] {
  const path = join(root, relative);
  if (!existsSync(path)) return [];
  if (statSync(path).isFile()) return [relative];
  return readdirSync(path, { withFileTypes: true })
    .filter((entry) => !entry.name.startsWith(".")) // the lock, temporary files
    .flatMap((entry) => (entry.isDirectory() || entry.isFile() ? filesUnder(root, relative ? `${relative}/${entry.name}` : entry.name) : []));
}

/** The files of `part`, as paths relative to the keys directory, sorted. */
export function keysPartFiles(dir: string, part: KeysPart): string[] {
  if (!existsSync(join(dir, "state.json")) || !existsSync(join(dir, "operator.jwt"))) {
    throw new LeafmeshError("CONFIG_INVALID", `${dir} is not a keys directory (no state.json or operator.jwt): create one with 'leafmesh keys init --dir ${dir}'`);
  }
  const files =
    part === "all"
      ? filesUnder(dir, "")
      : ["state.json", "operator.jwt", ...filesUnder(dir, "accounts").filter((file) => file.endsWith(".jwt")), ...filesUnder(dir, "hub")];
  return files.sort();
}

/** "hub/audit/edge-a.creds" → "hub__audit__edge-a.creds". */
export function flatName(relative: string): string {
  const parts = relative.split("/");
  for (const part of parts) {
    if (!/^[-.a-zA-Z0-9_]+$/.test(part) || part.includes(separator) || part.startsWith(".")) {
      throw new LeafmeshError("CONFIG_INVALID", `${relative}: a file name a Secret cannot carry (letters, digits, '-', '.', single '_'; not starting with '.')`);
    }
  }
  return parts.join(separator);
}

/** The inverse of flatName; refuses a key that would leave the directory. */
export function pathOfFlatName(name: string): string {
  const parts = name.split(separator);
  if (parts.some((part) => part === "" || part === "." || part === ".." || part.startsWith("."))) {
    throw new LeafmeshError("CONFIG_INVALID", `'${name}' is not a key of a leafmesh keys Secret`);
  }
  return parts.join("/");
}

/** A Secret manifest (YAML) holding `part` of the keys directory `dir`. */
export function keysSecretManifest(options: { dir: string; part: KeysPart; name: string; namespace: string }): { yaml: string; files: number; bytes: number } {
  const dir = resolve(options.dir);
  const files = keysPartFiles(dir, options.part);
  const data: [string, Buffer][] = [[flatLayoutKey, Buffer.from(`${flatLayoutValue}\n`)], ...files.map((file): [string, Buffer] => [flatName(file), readFileSync(join(dir, file))])];
  const bytes = data.reduce((sum, [, content]) => sum + content.byteLength, 0);
  if (bytes > secretLimitBytes) {
    throw new LeafmeshError(
      "CONFIG_INVALID",
      `the ${options.part === "all" ? "whole keys directory" : "hubs' copy"} of ${dir} is ${bytes} bytes in ${files.length} files, over the 1 MiB Kubernetes allows a Secret` +
        (options.part === "all" ? ": seed the enrolling hub's volume from a copy instead (kubectl cp)" : ""),
    );
  }
  const lines = [
    `# leafmesh keys k8s-secret --part ${options.part}: ${files.length} files of ${dir}, each under its path with '__' for '/'.`,
    `# A hub given this Secret's mount as --keys unpacks it into DATA/keys (trust/flat-keys.ts).`,
    "apiVersion: v1",
    "kind: Secret",
    "metadata:",
    `  name: ${options.name}`,
    `  namespace: ${options.namespace}`,
    "type: Opaque",
    "data:",
    ...data.map(([key, content]) => `  ${key}: ${content.toString("base64")}`),
    "",
  ];
  return { yaml: lines.join("\n"), files: files.length, bytes };
}

/** Whether `dir` is a flat keys layout (a mounted Secret of `keys k8s-secret`). */
export function isFlatKeys(dir: string): boolean {
  return existsSync(join(dir, flatLayoutKey));
}

/** The mount's keys and contents (kubelet's own entries, `..data` and its timestamped directory, left out) and their digest. */
function readFlat(mount: string): { files: [string, Buffer][]; digest: string } {
  const marker = readFileSync(join(mount, flatLayoutKey), "utf8").trim();
  if (marker !== flatLayoutValue) {
    throw new LeafmeshError("CONFIG_INVALID", `${join(mount, flatLayoutKey)} says '${marker.slice(0, 40)}', not '${flatLayoutValue}': a Secret made by another leafmesh release (make it again with 'leafmesh keys k8s-secret')`);
  }
  const names = readdirSync(mount)
    .filter((name) => !name.startsWith("..") && name !== flatLayoutKey)
    .sort();
  const hash = createHash("sha256");
  const files = names.map((name): [string, Buffer] => {
    const content = readFileSync(join(mount, name));
    hash.update(`${name}\0${content.byteLength}\0`).update(content);
    return [pathOfFlatName(name), content];
  });
  if (!files.some(([path]) => path === "state.json")) throw new LeafmeshError("CONFIG_INVALID", `${mount}: the keys Secret holds no state.json: make it with 'leafmesh keys k8s-secret --dir DIR'`);
  return { files, digest: hash.digest("hex") };
}

/**
 * Unpacks the flat keys at `mount` into `target`. seedOnly (a hub that enrols): only when `target` does not
 * exist yet. Otherwise `target` is replaced whole when the Secret differs from what it was unpacked from; a
 * `target` that was not unpacked from a Secret is never replaced. Returns whether it unpacked.
 */
export function unpackFlatKeys(options: { mount: string; target: string; seedOnly: boolean; log: Logger }): boolean {
  const { mount, target, log } = options;
  if (options.seedOnly && existsSync(target)) {
    log.info({ keys: target, secret: mount }, "keys: this hub enrols nodes and keeps its own keys directory, seeded from the Secret at its first start; the Secret is not applied again");
    return false;
  }
  const { files, digest } = readFlat(mount);
  if (existsSync(target)) {
    const from = existsSync(join(target, digestFile)) ? readFileSync(join(target, digestFile), "utf8").trim() : undefined;
    if (from === undefined) {
      throw new LeafmeshError("CONFIG_INVALID", `${target} exists and was not unpacked from a keys Secret: move it away, or give it as --keys instead of ${mount}`);
    }
    if (from === digest) return false;
  }
  const staging = `${target}.unpacking-${randomBytes(4).toString("hex")}`;
  makePrivateDir(dirname(target));
  makePrivateDir(staging);
  try {
    for (const [path, content] of files) {
      makePrivateDir(dirname(join(staging, path)));
      writeSecretFile(join(staging, path), content);
    }
    writeSecretFile(join(staging, digestFile), `${digest}\n`);
    const old = existsSync(target) ? `${target}.replaced-${randomBytes(4).toString("hex")}` : undefined;
    if (old) renameSync(target, old);
    renameSync(staging, target);
    if (old) rmSync(old, { recursive: true, force: true });
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
  log.info({ keys: target, secret: mount, files: files.length }, options.seedOnly ? "keys: seeded from the Secret (from now on this hub's own)" : "keys: unpacked from the Secret");
  return true;
}

/** Unpacks the Secret again whenever it changes (not for a hub that enrols); each failure is said once until it changes. */
export function watchFlatKeys(options: { mount: string; target: string; log: Logger; intervalMs?: number }): { stop(): void } {
  let said: string | undefined;
  const timer = setInterval(() => {
    try {
      if (unpackFlatKeys({ ...options, seedOnly: false })) said = undefined;
    } catch (error) {
      const message = (error as Error).message;
      if (message !== said) options.log.warn({ secret: options.mount, err: message }, "keys: the changed Secret was not unpacked; the hub keeps running on what it has");
      said = message;
    }
  }, options.intervalMs ?? 10_000);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
