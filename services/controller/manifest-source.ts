/**
 * A catalog source reading a directory of Kubernetes manifests (YAML or JSON,
 * several documents per file, `kind: List` expanded), or one such file, as
 * `kubectl apply -f` takes either, reloaded when a file changes. One file named
 * on its own that goes missing (an editor saving by rename, a tool replacing
 * it) keeps what it held: an empty catalog is never read from a file's absence. A file is taken once it was last written `settleMs` ago: one being
 * written (truncated, then filled over a slow link) parses at every step, each
 * time with fewer objects, and each step took Services out of the mesh for a
 * moment. A file with any invalid object is refused as a whole and the objects
 * it held before stay, so a half-saved edit never tears a Service down; the
 * rejection names the file, the object and the field. Each refusal is reported
 * once, not at every rescan: a broken file until its bytes change, an object defined
 * in two files until it is no longer.
 *
 * ```ts
 * const source = new ManifestSource({ path: "/etc/leafmesh/manifests", log });
 * source.onReject((r) => log.warn(r));
 * await source.start();
 * ```
 */
import { createHash } from "node:crypto";
import { watch, type FSWatcher } from "node:fs";
import { lstat, readdir, readFile, stat } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { catalogKey, type CatalogObject } from "../../bus/catalog.ts";
import { systemClock, type Clock } from "../../lib/clock.ts";
import { describeError, LeafmeshError } from "../../lib/errors.ts";
import { Coalescer } from "../../lib/coalesce.ts";
import type { Logger } from "../../lib/log.ts";
import { parseManifestDocuments } from "./manifest-yaml.ts";
import { describeObject, normalizeObject, problemMessage } from "./normalize.ts";
import { diffCatalog, formatRejection, SourceListeners, type CatalogChange, type CatalogRejection, type CatalogSource } from "./source.ts";

export interface ManifestSourceOptions {
  /** A directory (every manifest file under it) or one file. */
  path: string;
  log: Logger;
  /** @default 2_000 — a rescan catches changes that inotify misses (editors renaming files, network filesystems). */
  rescanMs?: number;
  /** @default 100 — editors write a file in several steps: wait for them to settle. */
  debounceMs?: number;
  /** @default 300 — a file written less than this long ago (its mtime) is still being written: read again later. */
  settleMs?: number;
  /** @default systemClock — the rescan and the debounce run on it. */
  clock?: Clock;
}

interface LoadedFile {
  /** Size, mtime and inode: unchanged means the file is not read again. */
  signature: string;
  /**
   * SHA-256 of the bytes last read: a file written again with the same bytes (a config tool, a ConfigMap volume's
   * swap) is neither parsed again nor, when refused, reported again.
   */
  digest?: string;
  objects: Map<string, CatalogObject>;
}

const manifestPattern = /\.(ya?ml|json)$/i;
/** A manifest file larger than this is refused, not read: ~95,000 Services with their EndpointSlices (10,000 are 6.7 MB of YAML). */
export const maxManifestBytes = 64 * 2 ** 20;

export class ManifestSource implements CatalogSource {
  readonly name: string;
  readonly #options: ManifestSourceOptions;
  readonly #listeners = new SourceListeners();
  #files = new Map<string, LoadedFile>();
  #catalog = new Map<string, CatalogObject>();
  /** "key file" of every object refused as defined in an earlier file, at the last reload: reported when it first appears. */
  #duplicates = new Set<string>();
  /** Symbolic links to nothing, said when first found. */
  readonly #broken = new Set<string>();
  #synced = false;
  #watcher: FSWatcher | undefined;
  #rescanTimer: unknown;
  #debounceTimer: unknown;
  readonly #clock: Clock;
  readonly #reloader = new Coalescer(() => this.#reloadOnce().then(() => undefined, (error: unknown) => void this.#options.log.error({ err: error }, "reloading manifests failed")));
  #started = false;
  #stopped = false;
  /** The directory that file names are relative to and that is watched: `path`, or the directory of the one file. */
  #root: string;
  /** `path` when it names one file. */
  #single: string | undefined;
  /** The one file was missing at the last pass (said once). */
  #singleMissing = false;

  constructor(options: ManifestSourceOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#root = options.path;
    this.name = `manifests:${options.path}`;
  }

  get synced(): boolean {
    return this.#synced;
  }

  snapshot(): ReadonlyMap<string, CatalogObject> {
    return this.#catalog;
  }

  onChange(listener: (changes: CatalogChange[]) => void): () => void {
    return this.#listeners.onChange(listener);
  }

  onReject(listener: (rejection: CatalogRejection) => void): () => void {
    return this.#listeners.onReject(listener);
  }

  /** Loads the directory or file once (synced when it resolves), then follows it; one it cannot read is a CONFIG_INVALID error. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    const path = this.#options.path;
    const info = await stat(path).catch((cause: unknown) => {
      const code = (cause as NodeJS.ErrnoException).code;
      throw new LeafmeshError("CONFIG_INVALID", `--manifests: cannot read ${path}: ${code === "ENOENT" ? "no such file or directory" : code === "EACCES" ? "permission denied" : describeError(cause)}`, { cause });
    });
    if (info.isFile()) {
      this.#single = path;
      this.#root = dirname(path);
    } else if (!info.isDirectory()) {
      throw new LeafmeshError("CONFIG_INVALID", `--manifests: ${path} is neither a directory nor a file`);
    }
    if (this.#stopped) return;
    // Not through the reloader, which logs and goes on: a first load that fails must not leave an empty catalog that says it is synced.
    // Files still being written are waited for (real time: their mtimes are), so the first catalog is whole.
    let wait = await this.#reloadOnce();
    for (let waits = 0; wait > 0 && waits < 100 && !this.#stopped; waits++) {
      await new Promise((resolve) => setTimeout(resolve, wait + 1));
      wait = await this.#reloadOnce();
    }
    // Written to all along (half a minute): taken as it is.
    if (wait > 0) await this.#reloadOnce(0);
    // Stopped while loading: nothing to follow.
    if (this.#stopped) return;
    try {
      // One file: its directory, where an editor's rename and a ConfigMap volume's swap of `..data` happen.
      this.#watcher = watch(this.#root, { recursive: this.#single === undefined }, () => this.#schedule());
      this.#watcher.on("error", (error) => this.#options.log.warn({ err: error }, "watching the manifest directory failed; rescanning on a timer only"));
    } catch (error) {
      this.#options.log.warn({ err: error }, "cannot watch the manifest directory; rescanning on a timer only");
    }
    this.#rescanTimer = this.#clock.setInterval(() => this.#schedule(), this.#options.rescanMs ?? 2_000);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watcher?.close();
    this.#clock.clearInterval(this.#rescanTimer);
    this.#clock.clearTimeout(this.#debounceTimer);
    await this.#reloader.stop();
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#clock.clearTimeout(this.#debounceTimer);
    this.#debounceTimer = this.#clock.setTimeout(() => void this.reload(), this.#options.debounceMs ?? 100);
  }

  /** Reads changed files and emits what changed; concurrent calls coalesce. Does nothing once stopped. */
  reload(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    return this.#reloader.run();
  }

  /** One pass over the directory; returns how long until the files still being written have settled (0: none is). */
  async #reloadOnce(settleMs = this.#options.settleMs ?? 300): Promise<number> {
    const paths = this.#single !== undefined ? await this.#singleFile(this.#single) : await listManifestFiles(this.#root).catch((cause: unknown) => {
      throw new LeafmeshError("CONFIG_INVALID", `--manifests: cannot list the files of ${this.#root}`, { cause });
    });
    // The one file gone: what it held stays until it is back (an empty catalog would take every Service out of the mesh).
    if (paths.length === 0 && this.#single !== undefined && this.#synced) return 0;
    const next = new Map<string, LoadedFile>();
    // Whether any file's objects may differ from the last pass: a rescan that finds every file as it was
    // rebuilds and compares nothing (at 10,000 services that was ~0.2 s of CPU every 2 s; --cpu-prof).
    let changed = !this.#synced || paths.length !== this.#files.size;
    let unsettled = 0;
    for (const path of paths) {
      let signature: string;
      let age: number;
      let size: number;
      try {
        // Through a symbolic link to its file (a file linked in, a ConfigMap volume's names).
        const info = await stat(path);
        if (!info.isFile()) continue;
        signature = `${info.size}:${info.mtimeMs}:${info.ino}`;
        size = info.size;
        age = Date.now() - info.mtimeMs;
        this.#broken.delete(path);
      } catch (error) {
        // Removed while we listed, or a link to nothing (said once, until it changes).
        const code = (error as NodeJS.ErrnoException).code;
        if ((code === "ENOENT" || code === "ELOOP") && (await isLink(path)) && !this.#broken.has(path)) {
          this.#broken.add(path);
          this.#reject({ file: this.#relative(path), message: `cannot read: it is a symbolic link to ${code === "ELOOP" ? "itself, through a loop" : "a file that does not exist"}` });
        }
        continue;
      }
      const previous = this.#files.get(path);
      // Still being written (a future mtime, a clock set back, is no writer): what it held stays until the writer is done.
      if (previous?.signature !== signature && age >= 0 && age < settleMs) {
        unsettled = Math.max(unsettled, settleMs - age);
        if (previous) next.set(path, previous);
        continue;
      }
      if (!previous) changed = true;
      if (previous?.signature === signature) {
        next.set(path, previous);
        continue;
      }
      if (size > maxManifestBytes) {
        // A log or a dump named .yaml by mistake: read whole, it would take the hub's memory. What it held stays.
        this.#reject({ file: this.#relative(path), message: `is ${(size / 2 ** 20).toFixed(0)} MiB: a manifest file is read whole, up to ${maxManifestBytes / 2 ** 20} MiB; split it into several files` });
        next.set(path, { signature, objects: previous?.objects ?? new Map() });
        continue;
      }
      const text = await this.#read(path);
      const digest = text === undefined ? undefined : createHash("sha256").update(text).digest("hex");
      if (previous && digest !== undefined && previous.digest === digest) {
        next.set(path, { ...previous, signature });
        continue;
      }
      const parsed = text === undefined ? undefined : this.#parse(path, text);
      changed = true;
      if (parsed) {
        next.set(path, { signature, digest, objects: parsed });
        if (previous) this.#options.log.info({ file: this.#relative(path), objects: parsed.size }, "manifest file reloaded");
      } else {
        // Refused: keep what the file held before, and remember signature and bytes so the same broken file is reported once.
        next.set(path, { signature, digest, objects: previous?.objects ?? new Map() });
      }
    }
    for (const path of this.#broken) if (!paths.includes(path)) this.#broken.delete(path);
    // Stopped while reading: a stopped source changes and emits nothing.
    if (this.#stopped) return 0;
    // The files read are remembered (a refusal is said once); those still being written are read again later.
    this.#files = next;
    if (unsettled > 0) {
      // The first load waits for them (start) before it says anything; a later one keeps what they held.
      if (!this.#synced) return unsettled;
      this.#clock.clearTimeout(this.#debounceTimer);
      this.#debounceTimer = this.#clock.setTimeout(() => void this.reload(), unsettled + 1);
    }
    if (!changed) return unsettled;

    const catalog = new Map<string, CatalogObject>();
    const origin = new Map<string, string>();
    const duplicates = new Set<string>();
    for (const [path, file] of next) {
      for (const [key, object] of file.objects) {
        const first = origin.get(key);
        if (first) {
          const duplicate = `${key} ${path}`;
          duplicates.add(duplicate);
          if (this.#duplicates.has(duplicate)) continue; // reported when it appeared
          this.#reject({
            file: this.#relative(path),
            object: describeObject(object.kind, `${object.namespace}/${object.name}`),
            message: `is also defined in ${this.#relative(first)}; the first definition is used`,
          });
          continue;
        }
        origin.set(key, path);
        catalog.set(key, object);
      }
    }
    this.#duplicates = duplicates;
    const changes = diffCatalog(this.#catalog, catalog);
    this.#catalog = catalog;
    // Synced before the first batch goes out: a listener acts only on a synced source, and must be able to act on every batch.
    this.#synced = true;
    if (changes.length > 0) this.#options.log.info({ changes: changes.length, objects: catalog.size }, "manifest catalog changed");
    this.#listeners.emitChanges(changes);
    return unsettled;
  }

  /** [file] while it exists; [] (said once) while it does not. */
  async #singleFile(file: string): Promise<string[]> {
    const exists = await stat(file).then(() => true, () => false);
    if (exists === !this.#singleMissing) return exists ? [file] : [];
    this.#singleMissing = !exists;
    if (exists) this.#options.log.info({ file }, "the manifest file is back");
    else this.#options.log.warn({ file }, "the manifest file is gone; the catalog keeps what it held until it is back");
    return exists ? [file] : [];
  }

  /** The file's text, or undefined (reported) when it cannot be read. */
  async #read(path: string): Promise<string | undefined> {
    try {
      return await readFile(path, "utf8");
    } catch (error) {
      this.#reject({ file: this.#relative(path), message: `cannot read: ${describeError(error)}` });
      return undefined;
    }
  }

  /** The file's objects, or undefined when the file is refused (every problem reported). */
  #parse(path: string, text: string): Map<string, CatalogObject> | undefined {
    const file = this.#relative(path);
    const objects = new Map<string, CatalogObject>();
    let refused = false;
    for (const [index, document] of parseManifestDocuments(text).entries()) {
      if ("error" in document) {
        const { message, line, column } = document.error;
        this.#reject({ file, object: `document ${index + 1}`, message: `not valid YAML/JSON${line ? ` at line ${line}, column ${column}` : ""}: ${message}` });
        refused = true;
        continue;
      }
      const raw = document.value;
      if (raw === null || raw === undefined) continue;
      const items = isList(raw) ? raw.items : [raw];
      for (const [itemIndex, item] of items.entries()) {
        const where = isList(raw) ? `document ${index + 1}, item ${itemIndex}` : `document ${index + 1}`;
        const result = normalizeObject(item);
        if (result.status === "ignored") continue;
        if (result.status === "invalid") {
          refused = true;
          for (const problem of result.problems) {
            this.#reject({
              file,
              object: result.kind ? describeObject(result.kind, result.name) : where,
              field: problem.field,
              message: problemMessage(problem),
            });
          }
          continue;
        }
        const key = catalogKey(result.object);
        if (objects.has(key)) {
          refused = true;
          this.#reject({ file, object: describeObject(result.object.kind, `${result.object.namespace}/${result.object.name}`), message: "is defined twice in this file" });
          continue;
        }
        objects.set(key, result.object);
      }
    }
    if (refused) {
      this.#options.log.warn({ file }, "manifest file refused; the objects it held before stay in the catalog");
      return undefined;
    }
    return objects;
  }

  #reject(rejection: Omit<CatalogRejection, "source">): void {
    if (this.#stopped) return;
    const full = { source: this.name, ...rejection };
    this.#options.log.warn(full, `rejected: ${formatRejection(full)}`);
    this.#listeners.emitRejection(full);
  }

  #relative(path: string): string {
    return relative(this.#root, path) || path;
  }
}

function isList(raw: unknown): raw is { items: unknown[] } {
  return typeof raw === "object" && raw !== null && (raw as { kind?: unknown }).kind === "List" && Array.isArray((raw as { items?: unknown }).items);
}

/**
 * The manifest files under `directory`: files and symbolic links (to files: a file linked in, a ConfigMap volume's
 * names, which link into its hidden `..data`). Nothing inside a hidden directory: a ConfigMap volume's timestamped
 * `..2026_…` directory holds the same files its names link to, which would be read twice.
 */
async function listManifestFiles(directory: string): Promise<string[]> {
  const entries = await readdir(directory, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => (entry.isFile() || entry.isSymbolicLink()) && manifestPattern.test(entry.name) && !entry.name.startsWith("."))
    .filter((entry) => !relative(directory, entry.parentPath).split(sep).some((part) => part.startsWith(".")))
    .map((entry) => join(entry.parentPath, entry.name))
    .sort();
}

async function isLink(path: string): Promise<boolean> {
  return lstat(path).then(
    (info) => info.isSymbolicLink(),
    () => false,
  );
}
