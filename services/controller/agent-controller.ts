/**
 * The agent's controller actor: its leaf server mirrors KV `mesh-catalog` from
 * the upstream domain (`hub`, or the site's) into the node's own domain; the
 * controller follows that mirror and turns every change into a `catalog` event
 * on the bus, and answers `rpc.<node>.catalog.snapshot` for actors that start
 * later. A cut-off leaf keeps answering from its mirror; the fabric's link
 * events tell the controller whether the view is fresh (online) or not.
 *
 * Machine: starting → loading → serving.online ⇄ serving.offline → stopped.
 *
 * ```ts
 * const controller = await startController({ bus, log });
 * controller.index.service("shop", "web");
 * await controller.stop();
 * ```
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { assign, createActor, setup } from "xstate";
import { parseCatalogObject, type CatalogObject } from "../../bus/catalog.ts";
import { CatalogIndex } from "../../bus/catalog-index.ts";
import { IndexFeed, snapshotPage, type CatalogFeed, type SnapshotPage } from "../../bus/catalog-feed.ts";
import type { Bus } from "../../bus/bus.ts";
import { encodeCatalogEvent, nowIso } from "../../bus/events.ts";
import { followBucket, type BucketFollower } from "../../bus/kv-follow.ts";
import { buckets, hubDomain } from "../../bus/subjects.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { retryUntilReady } from "../../lib/retry.ts";
import { mirrorDeliverPrefix } from "../../bus/subjects.ts";
import { upstreamRecord, watchMirrorLineage } from "../../bus/mirror-lineage.ts";
import { rpc } from "../../bus/rpc.ts";

export interface ControllerOptions {
  bus: Bus;
  log: Logger;
  /** @default "hub" — the domain whose catalog this node mirrors (a site's name when the node sits under a site). */
  upstreamDomain?: string;
  /** JetStream replicas of the mirror: 3 on a three-server site. @default 1 */
  replicas?: number;
  /** This node's JetStream domain (MirrorOptions.domain). @default the node name */
  domain?: string;
  /** A stop asked while it opens the mirror (a Ctrl-C while the agent starts): the start ends with INTERRUPTED. */
  signal?: AbortSignal;
  /** How often the mirror is checked against its upstream's stream, besides at each leaf link up. @default lineageCheckMs (bus/lineage-check.ts) */
  lineageCheckMs?: number;
}

const controllerMachine = setup({
  types: {
    context: {} as { linkUp: boolean },
    events: {} as { type: "OPENED" } | { type: "LOADED" } | { type: "LINK_UP" } | { type: "LINK_DOWN" } | { type: "STOP" },
  },
  guards: { linkUp: ({ context }) => context.linkUp },
}).createMachine({
  id: "controller",
  initial: "starting",
  context: { linkUp: false },
  on: {
    LINK_UP: { actions: assign({ linkUp: true }) },
    LINK_DOWN: { actions: assign({ linkUp: false }) },
    STOP: ".stopped",
  },
  states: {
    starting: { on: { OPENED: "loading" } },
    loading: { on: { LOADED: "serving" } },
    serving: {
      initial: "deciding",
      states: {
        deciding: { always: [{ guard: "linkUp", target: "online" }, { target: "offline" }] },
        online: { on: { LINK_DOWN: { target: "offline", actions: assign({ linkUp: false }) } } },
        offline: { on: { LINK_UP: { target: "online", actions: assign({ linkUp: true }) } } },
      },
    },
    stopped: { type: "final" },
  },
});

export interface Controller {
  readonly actor: ReturnType<typeof createActor<typeof controllerMachine>>;
  readonly index: CatalogIndex;
  /**
   * The catalog for the actors of this process: the controller's own index, and the keys that
   * changed, in batches (one per turn of the event loop). The catalog events on the bus carry the
   * same changes to other processes (followCatalog); in-process actors need neither a second copy
   * of 20,000 objects nor to decode each again.
   */
  readonly feed: CatalogFeed;
  readonly revisions: ReadonlyMap<string, number>;
  readonly online: boolean;
  stop(): Promise<void>;
}

export interface MirrorOptions {
  /** JetStream domain the catalog is mirrored from. @default hubDomain */
  upstreamDomain?: string;
  /** @default 1 */
  replicas?: number;
  /**
   * This node's JetStream domain: the mirror's deliveries come under its prefix. An agent's is its
   * node name; a site cluster's servers share the site's, so whichever server leads the replicated
   * mirror receives them (a prefix per server would have each server remake the others' mirror).
   * @default the bus's node name
   */
  domain?: string;
  log?: Logger;
}

/**
 * Creates (or opens) the node's mirror of the catalog. Its deliveries come under the node's own
 * inbox prefix (mirrorDeliverPrefix of its domain: no other node can see them, nor learn the
 * mirror's consumer).
 * A mirror made by an older leafmesh (deliveries on the shared `$JS.M.>`) cannot be changed in
 * place (nats-server refuses mirror updates): it is made again, and catches up from its upstream.
 */
export async function openCatalogMirror(bus: Bus, options: MirrorOptions = {}): Promise<KV> {
  const { upstreamDomain = hubDomain, replicas = 1, domain = bus.node, log } = options;
  const external = { api: `$JS.${upstreamDomain}.API`, deliver: mirrorDeliverPrefix(domain) };
  // The mirror records which upstream stream it was made from (bus/mirror-lineage.ts), when the upstream answers.
  const create = async () =>
    await new Kvm(bus.connection).create(buckets.catalog, { mirror: { name: buckets.catalog, external }, replicas, ...(await upstreamRecord(bus.connection, upstreamDomain, `KV_${buckets.catalog}`)) });
  try {
    const manager = await jetstreamManager(bus.connection);
    const existing = await manager.streams.info(`KV_${buckets.catalog}`).catch(() => undefined);
    const current = existing?.config.mirror?.external;
    if (existing && (current?.api !== external.api || current?.deliver !== external.deliver)) {
      log?.warn({ was: current ?? null, now: external }, "the catalog mirror is made again: its deliveries move to this node's own subjects (or its upstream changed); it catches up from the upstream");
      await manager.streams.delete(`KV_${buckets.catalog}`);
    }
    return await create();
  } catch (cause) {
    throw new LeafmeshError(
      "NATS_SERVER_FAILED",
      `cannot create the catalog mirror in domain '${bus.node}' (from domain '${upstreamDomain}'): is JetStream enabled on the node's nats-server?`,
      { cause },
    );
  }
}

const textDecoder = new TextDecoder();

/** @default 30_000 — after a mirror made again is reloaded, how long objects it lacks are kept (its hub may still be writing them). */
const remadeGraceMs = 30_000;

export async function startController(options: ControllerOptions): Promise<Controller> {
  const { bus, log } = options;
  const actor = createActor(controllerMachine).start();
  const index = new CatalogIndex();
  const feed = new IndexFeed(index);
  const revisions = new Map<string, number>();
  let sortedKeys: string[] | undefined;
  // Changes gathered over one turn of the event loop, then announced together: a mirror catching up
  // delivers thousands of entries in a row, each in a microtask of its own. Published one by one, each
  // catalog event was a socket write of its own (the client flushes in a microtask once its buffer is
  // non-empty): 20,000 writes, 2.2 s of a fresh agent's CPU at 10k services (--cpu-prof). Batched, the
  // events go out in a few writes, and each actor works once per batch, not once per object.
  // A put keeps its KV value's text until then: its event carries it as it came (encodeCatalogEvent).
  let pending: { key: string; revision: number; object: CatalogObject | undefined; json?: string }[] = [];
  const flushChanges = () => {
    const changes = pending;
    pending = [];
    const at = nowIso();
    for (const change of changes) bus.publishJson("controller", "catalog", encodeCatalogEvent(at, change));
    feed.notify(changes.map((change) => change.key));
  };

  const kv = await retryUntilReady(() => openCatalogMirror(bus, { upstreamDomain: options.upstreamDomain, replicas: options.replicas, domain: options.domain, log }), { what: "the node's JetStream (catalog mirror)", log, signal: options.signal });
  actor.send({ type: "OPENED" });

  const publishSync = () =>
    bus.publish("controller", "sync", { at: nowIso(), objects: index.size, revision: follower.lastRevision, online: actor.getSnapshot().matches({ serving: "online" }) });

  const follower: BucketFollower = followBucket({
    kv,
    log,
    onLoaded: () => {
      actor.send({ type: "LOADED" });
      log.info({ objects: index.size }, "catalog loaded from the node's mirror");
      publishSync();
    },
    onEntry: (entry) => {
      // Read once: nats.js derives the key from the subject at each read.
      const key = entry.key;
      const put = entry.operation === "PUT";
      sweeping?.delete(key);
      let object: CatalogObject | undefined;
      let json: string | undefined;
      if (put) {
        try {
          json = textDecoder.decode(entry.value);
          object = parseCatalogObject(json);
        } catch (error) {
          log.warn({ err: error, key }, "catalog value failed to decode; ignoring it");
          return;
        }
        index.apply({ op: "put", key, object });
      } else {
        index.apply({ op: "delete", key });
      }
      if (!put || !revisions.has(key)) sortedKeys = undefined;
      if (object) revisions.set(key, entry.revision);
      else revisions.delete(key);
      if (pending.push({ key, revision: entry.revision, object, json }) === 1) setImmediate(flushChanges);
    },
  });

  // The mirror against the upstream's stream (bus/mirror-lineage.ts), every 30 s and at each leaf link up: made
  // again (a hub that lost its store), the mirror is made again and the catalog reloaded; what the new one lacks
  // goes once its hub has had remadeGraceMs to write it.
  const upstreamDomain = options.upstreamDomain ?? hubDomain;
  let sweeping: Set<string> | undefined;
  let stopped = false;
  const sweep = (stale: Set<string>) => {
    if (stopped || sweeping !== stale) return;
    sweeping = undefined;
    for (const key of stale) {
      index.apply({ op: "delete", key });
      revisions.delete(key);
      if (pending.push({ key, revision: 0, object: undefined }) === 1) setImmediate(flushChanges);
    }
    sortedKeys = undefined;
    log.info({ removed: stale.size }, "catalog reloaded from the remade upstream: objects it does not hold are removed");
  };
  const lineage = watchMirrorLineage({
    connection: bus.connection, upstreamDomain, stream: `KV_${buckets.catalog}`, log, what: "catalog", intervalMs: options.lineageCheckMs,
    remake: () => openCatalogMirror(bus, { upstreamDomain, replicas: options.replicas, domain: options.domain, log }),
    onRemade: () => {
      const stale = new Set(revisions.keys());
      sweeping = stale;
      follower.restart(() => setTimeout(() => sweep(stale), remadeGraceMs).unref());
    },
  });

  const stopServing = bus.serve(rpc.catalogSnapshot, (request): SnapshotPage => {
    sortedKeys ??= [...revisions.keys()].sort();
    return snapshotPage(sortedKeys, request, (key) => {
      const object = index.get(key);
      return object ? { revision: revisions.get(key) ?? 0, object } : undefined;
    });
  });

  const stopServingObjects = bus.serve(rpc.catalogObject, ({ key }) => {
    const object = index.get(key);
    return object ? { revision: revisions.get(key) ?? 0, object } : null;
  });

  const stopLinks = bus.subscribe({ actor: "fabric", event: "link" }, ({ payload }) => {
    if (payload.kind !== "leaf") return;
    const wasOnline = actor.getSnapshot().matches({ serving: "online" });
    actor.send({ type: payload.up ? "LINK_UP" : "LINK_DOWN" });
    if (payload.up) lineage.check();
    const online = actor.getSnapshot().matches({ serving: "online" });
    if (online !== wasOnline) {
      log.info({ online }, online ? "hub link up: catalog follows the hub" : "hub link down: serving the catalog from the node's mirror");
      publishSync();
    }
  });

  return {
    actor,
    index,
    feed,
    revisions,
    get online() {
      return actor.getSnapshot().matches({ serving: "online" });
    },
    async stop() {
      stopped = true;
      lineage.stop();
      stopLinks();
      stopServing();
      stopServingObjects();
      await follower.stop();
      feed.close();
      actor.send({ type: "STOP" });
    },
  };
}
