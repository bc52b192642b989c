/**
 * What the Kubernetes source holds of one resource, as client-go's Store holds
 * it for a Reflector: the raw objects of a list or of watch events become
 * catalog objects through `normalizeObject` (normalize.ts, the one conversion
 * of Kubernetes objects, which the manifest source uses too). An object whose
 * new version is refused keeps its last good version, and a refused version is
 * reported once, not again at every relist. It also says what a resource is
 * (ResourceSpec) and where it lives in the API (path, apiVersion, the name RBAC
 * gives it). Pure: no I/O, no timers.
 *
 * ```ts
 * const store = new ResourceStore((refusal) => report(refusal));
 * const { before, after } = store.replace(list.items.map((item) => withKind(item, "v1", "Service")));
 * const change = store.apply("MODIFIED", withKind(event.object, "v1", "Service")); // { before, after } or undefined
 * ```
 */
import type { CatalogObject } from "../../bus/catalog.ts";
import { describeObject, normalizeObject, problemMessage } from "./normalize.ts";
import type { CatalogRejection } from "./source.ts";

/** An object as the API sends it. */
export type RawObject = {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string; [key: string]: unknown };
  [key: string]: unknown;
};

/** A refused object version, for the source to report (it adds its name). */
export type Refusal = Omit<CatalogRejection, "source" | "file">;

/** What the store holds for one object of the API. */
interface Held {
  /** The last version that normalised; kept when a later version is refused. */
  good?: CatalogObject;
  /** metadata.resourceVersion of the last version seen, good or refused. */
  seenVersion?: string;
  /** resourceVersion of the last refused version, so a relist does not report it again. */
  refusedVersion?: string;
}

/** One resource the source reads: where it lives in the API, and whether a cluster may lack it. */
export interface ResourceSpec {
  resource: string;
  kind: string;
  /** "" for the core group. */
  group: string;
  /** Tried in order; the first the server serves is used. */
  versions: string[];
  /** A 404 means "not installed here" (an empty list), not an error; an error status means "not allowed here" (going on without). */
  optional: boolean;
  /** Asked of the server on every list and watch, e.g. "type=kubernetes.io/tls": only what leafmesh reads comes over. */
  fieldSelector?: string;
}

/** The query parameters that narrow a resource's lists and watches (its field selector), or none. */
export function selectorQuery(spec: ResourceSpec): Record<string, string> {
  return spec.fieldSelector ? { fieldSelector: spec.fieldSelector } : {};
}

/** "/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices": the collection to list and watch. */
export function resourcePath(spec: ResourceSpec, version: string, namespace?: string): string {
  const base = spec.group ? `/apis/${spec.group}/${version}` : `/api/${version}`;
  return `${base}${namespace ? `/namespaces/${encodeURIComponent(namespace)}` : ""}/${spec.resource}`;
}

/** "networking.istio.io/v1", or "v1" for the core group. */
export function apiVersionOf(spec: ResourceSpec, version: string): string {
  return spec.group ? `${spec.group}/${version}` : version;
}

/** "services", or "destinationrules.networking.istio.io": how RBAC names the resource. */
export function qualifiedResource(spec: ResourceSpec): string {
  return `${spec.resource}${spec.group ? `.${spec.group}` : ""}`;
}

/** A list's items carry no kind and apiVersion: the list says them, and normalisation needs them. */
export function withKind(item: RawObject, apiVersion: string, kind: string): RawObject {
  return { ...item, apiVersion: item.apiVersion ?? apiVersion, kind: item.kind ?? kind };
}

/** namespace/name: an object's identity within one resource. */
function objectId(raw: RawObject): string {
  return `${raw.metadata?.namespace ?? "default"}/${raw.metadata?.name ?? ""}`;
}

export class ResourceStore {
  readonly #onRefused: (refusal: Refusal) => void;
  #held = new Map<string, Held>();
  #rejected = 0;

  constructor(onRefused: (refusal: Refusal) => void) {
    this.#onRefused = onRefused;
  }

  /** Objects held in the catalog (refused ones without a good version do not count). */
  get size(): number {
    let count = 0;
    for (const held of this.#held.values()) if (held.good) count++;
    return count;
  }

  /** Object versions refused, each counted once. */
  get rejected(): number {
    return this.#rejected;
  }

  /** Whether this very version of the object (same resourceVersion) is the last one the store saw. */
  hasSeen(raw: RawObject): boolean {
    const version = raw.metadata?.resourceVersion;
    return version !== undefined && this.#held.get(objectId(raw))?.seenVersion === version;
  }

  /** Takes a full list in place of everything held; returns the catalog objects held before and after. */
  replace(items: RawObject[]): { before: CatalogObject[]; after: CatalogObject[] } {
    const next = new Map<string, Held>();
    for (const raw of items) {
      const id = objectId(raw);
      const held = this.#hold(raw, this.#held.get(id));
      if (held) next.set(id, held);
    }
    const before = goods(this.#held.values());
    this.#held = next;
    return { before, after: goods(next.values()) };
  }

  /** Follows one watch event; returns the catalog object before and after when the catalog changes, else undefined. */
  apply(type: "ADDED" | "MODIFIED" | "DELETED", raw: RawObject): { before?: CatalogObject; after?: CatalogObject } | undefined {
    const id = objectId(raw);
    const previous = this.#held.get(id);
    if (type === "DELETED") {
      this.#held.delete(id);
      return previous?.good ? { before: previous.good } : undefined;
    }
    const held = this.#hold(raw, previous);
    if (!held) return undefined;
    this.#held.set(id, held);
    return held.good && held.good !== previous?.good ? { before: previous?.good, after: held.good } : undefined;
  }

  /** What to hold for a raw object: its normalised form, or the previous good one when it is refused. */
  #hold(raw: RawObject, previous: Held | undefined): Held | undefined {
    const result = normalizeObject(raw);
    const version = raw.metadata?.resourceVersion;
    if (result.status === "ok") return { good: result.object, seenVersion: version };
    if (result.status === "ignored") return previous;
    if (previous?.refusedVersion !== version) {
      this.#rejected++;
      for (const problem of result.problems) {
        this.#onRefused({
          object: describeObject(result.kind, result.name),
          field: problem.field,
          message: `${problemMessage(problem)}${previous?.good ? " (the previous version stays in the catalog)" : ""}`,
        });
      }
    }
    return { good: previous?.good, refusedVersion: version, seenVersion: version };
  }
}

function goods(held: Iterable<Held>): CatalogObject[] {
  const objects: CatalogObject[] = [];
  for (const entry of held) if (entry.good) objects.push(entry.good);
  return objects;
}
