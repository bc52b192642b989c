/**
 * The contract every catalog source keeps (manifest files, the Kubernetes API):
 * it holds the complete desired catalog, says when it has loaded it once
 * (`synced`), and tells listeners what changed, never before it is synced (a
 * listener acts on a synced source only, so an earlier batch would be lost on
 * it). A refused object is reported once, not again each time the source reads
 * its unchanged input; after `stop()` nothing is emitted and no timer is left.
 * The publisher writes whatever a source holds into KV `mesh-catalog`; the
 * shared suite in `test/support/source-contract.ts` runs over every
 * implementation.
 *
 * ```ts
 * const source = new ManifestSource({ path: directory, log });
 * source.onChange((changes) => publisher.apply(changes));
 * await source.start();
 * source.snapshot(); // Map key → CatalogObject
 * ```
 */
import type { CatalogObject } from "../../bus/catalog.ts";

export type CatalogChange = { op: "put"; key: string; object: CatalogObject } | { op: "delete"; key: string };

/** An object or file the source refused, with where and why. */
export interface CatalogRejection {
  source: string;
  file?: string;
  /** "Service shop/web" or "document 3". */
  object?: string;
  /** Field path, e.g. "spec.ports[0].port". */
  field?: string;
  message: string;
}

export interface CatalogSource {
  /** "manifests:/etc/leafmesh/manifests", "kubernetes:https://10.0.0.1:6443". */
  readonly name: string;
  /** True once the first complete load is done. */
  readonly synced: boolean;
  start(): Promise<void>;
  stop(): Promise<void>;
  snapshot(): ReadonlyMap<string, CatalogObject>;
  onChange(listener: (changes: CatalogChange[]) => void): () => void;
  onReject(listener: (rejection: CatalogRejection) => void): () => void;
}

/** "web.yaml: Service shop/web: spec.ports[0].port must be 1 to 65535": the rejection as one line for a log or an event. */
export function formatRejection(rejection: CatalogRejection): string {
  return [rejection.file, rejection.object, rejection.message].filter(Boolean).join(": ");
}

/** Listener bookkeeping shared by the sources. */
export class SourceListeners {
  readonly #change = new Set<(changes: CatalogChange[]) => void>();
  readonly #reject = new Set<(rejection: CatalogRejection) => void>();

  onChange(listener: (changes: CatalogChange[]) => void): () => void {
    this.#change.add(listener);
    return () => this.#change.delete(listener);
  }

  onReject(listener: (rejection: CatalogRejection) => void): () => void {
    this.#reject.add(listener);
    return () => this.#reject.delete(listener);
  }

  emitChanges(changes: CatalogChange[]): void {
    if (changes.length === 0) return;
    for (const listener of this.#change) listener(changes);
  }

  emitRejection(rejection: CatalogRejection): void {
    for (const listener of this.#reject) listener(rejection);
  }
}

/** The changes that turn `before` into `after`. */
export function diffCatalog(
  before: ReadonlyMap<string, CatalogObject>,
  after: ReadonlyMap<string, CatalogObject>,
): CatalogChange[] {
  const changes: CatalogChange[] = [];
  for (const key of before.keys()) if (!after.has(key)) changes.push({ op: "delete", key });
  for (const [key, object] of after) {
    const previous = before.get(key);
    // The same object (from a file that did not change) is unchanged without comparing its JSON.
    if (!previous || (previous !== object && JSON.stringify(previous) !== JSON.stringify(object))) changes.push({ op: "put", key, object });
  }
  return changes;
}
