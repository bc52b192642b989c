/**
 * How an actor follows the catalog without importing the controller: it
 * subscribes to the controller's `catalog` events on the bus, pages through the
 * controller's snapshot (`rpc.<node>.catalog.snapshot`) once, and keeps a
 * `CatalogIndex` current. Revisions (the KV mirror's sequence numbers) order the
 * two, so an event that raced the snapshot is neither lost nor applied twice.
 *
 * ```ts
 * const feed = await followCatalog({ bus, log });
 * feed.reader.service("shop", "web");
 * feed.onChange((keys) => rebuildRules());
 * ```
 */
import type { Logger } from "../lib/log.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { rpcRequest, type Bus } from "./bus.ts";
import type { CatalogObject, CatalogReader } from "./catalog.ts";
import { CatalogIndex } from "./catalog-index.ts";
import { rpc, type SnapshotPage, type SnapshotRequest } from "./rpc.ts";

export interface CatalogFeed {
  readonly reader: CatalogReader;
  /** Called after every applied batch with the keys that changed. */
  onChange(listener: (keys: string[]) => void): () => void;
  close(): void;
}

export type { SnapshotPage } from "./rpc.ts";

/**
 * One page of a snapshot reply: the entries after `request.after` in key order,
 * at most `request.limit` (capped at 2,000, well under NATS' 1 MiB payload).
 * Shared by every process that serves `catalog.snapshot` (agents, hubs).
 */
export function snapshotPage(
  sortedKeys: readonly string[],
  request: SnapshotRequest,
  entry: (key: string) => { revision: number; object: CatalogObject } | undefined,
): SnapshotPage {
  const { after = "", limit = 500 } = request;
  // Binary search: the first key greater than `after`.
  let start = 0;
  let high = after ? sortedKeys.length : 0;
  while (start < high) {
    const middle = (start + high) >> 1;
    if (sortedKeys[middle] <= after) start = middle + 1;
    else high = middle;
  }
  const keys = sortedKeys.slice(start, start + Math.max(1, Math.min(limit, 2_000)));
  const objects = keys.flatMap((key) => {
    const found = entry(key);
    return found ? [{ key, ...found }] : [];
  });
  return { objects, next: start + keys.length < sortedKeys.length ? keys[keys.length - 1] : null };
}

/** A feed over an index the caller fills itself (tests, the controller's own view). */
export class IndexFeed implements CatalogFeed {
  readonly reader: CatalogIndex;
  readonly #listeners = new Set<(keys: string[]) => void>();

  constructor(index = new CatalogIndex()) {
    this.reader = index;
  }

  onChange(listener: (keys: string[]) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Tells listeners that these keys changed. */
  notify(keys: string[]): void {
    if (keys.length === 0) return;
    for (const listener of this.#listeners) listener(keys);
  }

  close(): void {
    this.#listeners.clear();
  }
}

export interface FollowOptions {
  bus: Bus;
  log: Logger;
  /** @default 30_000 — the controller answers as soon as its mirror is open; a leaf starting JetStream may take seconds. */
  timeoutMs?: number;
  /** @default 500 — objects per snapshot page, well under the 1 MiB NATS payload limit. */
  pageSize?: number;
}

export async function followCatalog(options: FollowOptions): Promise<CatalogFeed> {
  const feed = new IndexFeed();
  const revisions = new Map<string, number>();
  const buffered: { op: "put" | "delete"; key: string; revision: number; object?: CatalogObject; redacted?: boolean }[] = [];
  let loading = true;

  const applyOne = (change: { op: "put" | "delete"; key: string; revision: number; object?: CatalogObject }): boolean => {
    if ((revisions.get(change.key) ?? 0) >= change.revision) return false;
    revisions.set(change.key, change.revision);
    if (change.op === "put" && change.object) return feed.reader.apply({ op: "put", key: change.key, object: change.object });
    return feed.reader.apply({ op: "delete", key: change.key });
  };

  let closed = false;
  /**
   * A put whose event left the object out (a TLS Secret: its key never goes under mesh.>): the object comes from the
   * controller by rpc, at the revision it holds then (a later change is ordered by revisions as any other).
   */
  const fetchRedacted = (key: string, revision: number, attempt = 1): void => {
    if (closed || (revisions.get(key) ?? 0) >= revision) return;
    rpcRequest(options.bus.connection, options.bus.node, rpc.catalogObject, { key }).then(
      (reply) => {
        // Gone meanwhile: its delete event follows (or came).
        if (closed || !reply) return;
        if (applyOne({ op: "put", key, revision: reply.revision, object: reply.object })) feed.notify([key]);
      },
      (error: unknown) => {
        if (closed) return;
        if (attempt >= 3) {
          options.log.warn({ err: error, key }, "could not fetch a catalog object its event left out (a TLS Secret); it stays as it was until it changes again");
          return;
        }
        setTimeout(() => fetchRedacted(key, revision, attempt + 1), 250 * attempt).unref();
      },
    );
  };
  const receive = (change: { op: "put" | "delete"; key: string; revision: number; object?: CatalogObject; redacted?: boolean }, changed?: string[]) => {
    if (change.op === "put" && !change.object) {
      if (change.redacted) fetchRedacted(change.key, change.revision);
      return;
    }
    if (!applyOne(change)) return;
    if (changed) changed.push(change.key);
    else feed.notify([change.key]);
  };

  const unsubscribe = options.bus.subscribe({ actor: "controller", event: "catalog" }, ({ payload }) => {
    if (loading) buffered.push(payload);
    else receive(payload);
  });

  const deadline = performance.now() + (options.timeoutMs ?? 30_000);
  let after: string | null = "";
  const changed: string[] = [];
  while (after !== null) {
    let page: SnapshotPage;
    try {
      page = await rpcRequest(options.bus.connection, options.bus.node, rpc.catalogSnapshot, {
        after,
        limit: options.pageSize ?? 500,
      });
    } catch (cause) {
      if (performance.now() > deadline) {
        unsubscribe();
        throw new LeafmeshError("NOT_RUNNING", `no catalog snapshot from the controller of ${options.bus.node} (is the agent running?)`, { cause });
      }
      options.log.debug({ err: cause }, "catalog snapshot not available yet, retrying");
      await new Promise((resolve) => setTimeout(resolve, 250));
      continue;
    }
    for (const entry of page.objects) if (applyOne({ op: "put", ...entry })) changed.push(entry.key);
    after = page.next;
  }
  loading = false;
  for (const change of buffered.splice(0)) receive(change, changed);
  feed.notify(changed);

  return {
    reader: feed.reader,
    onChange: (listener) => feed.onChange(listener),
    close: () => {
      closed = true;
      unsubscribe();
      feed.close();
    },
  };
}
