/**
 * The hub's catalog publisher: writes what a catalog source holds into KV
 * `mesh-catalog` (hub domain), only while it holds the publisher lease. It
 * follows the bucket itself, so it always knows what is there: taking over from
 * another hub writes only the difference (nothing lost, nothing written twice),
 * and a value equal to the stored one is never written again.
 *
 * ```ts
 * const publisher = new CatalogPublisher({ connection, source, holder: "hub-1", bus, log });
 * await publisher.start();
 * publisher.leading;
 * ```
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { CatalogObject } from "../../bus/catalog.ts";
import type { Bus } from "../../bus/bus.ts";
import { nowIso } from "../../bus/events.ts";
import { buckets, leaseKeys } from "../../bus/subjects.ts";
import { followBucket, type BucketFollower } from "../../bus/kv-follow.ts";
import { KvPuts } from "../../bus/kv-puts.ts";
import type { Clock } from "../../lib/clock.ts";
import type { Logger } from "../../lib/log.ts";
import { retryUntilReady } from "../../lib/retry.ts";
import { Coalescer } from "../../lib/coalesce.ts";
import { KvLease, leaseBucketOptions } from "./lease.ts";
import { withoutUnreferencedSecrets } from "./gateway-secrets.ts";
import { formatRejection, type CatalogSource } from "./source.ts";

export interface CatalogPublisherOptions {
  /** A client connection to a hub server (its own JetStream domain is `hub`). */
  connection: NatsConnection;
  /** Absent: this hub only serves and follows the catalog, it never writes. */
  source?: CatalogSource;
  /**
   * The source's start() when the caller began it already (the hub starts loading manifests while its
   * nats-server starts: parsing 10,000 services no longer waits for JetStream). @default source.start()
   */
  sourceStarted?: Promise<void>;
  holder: string;
  bus: Bus;
  log: Logger;
  /** @default 1 — 3 in a three-hub cluster so the catalog survives a hub. */
  replicas?: number;
  /** @default defaultLeaseTtlMs (lease.ts) */
  leaseTtlMs?: number;
  /** @default 256 — puts in flight at once while writing a large catalog (pipelined: bus/kv-puts.ts). */
  concurrency?: number;
  /** @default 10_000 — how often the whole catalog is compared with the source, whatever the source said. */
  resyncMs?: number;
  /** The lease's clock (its renewals and how long a renewal lets this hub write). @default systemClock */
  clock?: Clock;
  /** A stop asked while it opens its buckets (a Ctrl-C while the hub starts): start() ends with INTERRUPTED. */
  signal?: AbortSignal;
}

/** Opens (creating when missing) the catalog bucket in the hub domain. */
export async function openCatalogBucket(connection: NatsConnection, replicas = 1): Promise<KV> {
  return new Kvm(connection).create(buckets.catalog, { history: 1, replicas });
}

const encoder = new TextEncoder();

/**
 * @default 1 MiB less 8 KiB — the most a catalog entry may hold: the servers' max_payload (nats/render.ts) counts the
 * subject and headers too.
 */
export const maxCatalogValueBytes = 1_048_576 - 8_192;

export class CatalogPublisher {
  readonly #options: CatalogPublisherOptions;
  /** key → JSON of what the bucket holds (as seen by our watch, plus our own acknowledged writes). */
  readonly stored = new Map<string, { json: string; revision: number; object: CatalogObject }>();
  #kv: KV | undefined;
  #puts: KvPuts | undefined;
  #follower: BucketFollower | undefined;
  #lease: KvLease | undefined;
  readonly #reconciler = new Coalescer(async () => {
    try {
      await this.#reconcile();
    } catch (error) {
      this.#options.log.error({ err: error }, "writing the catalog failed; retrying in a second");
      setTimeout(() => void this.#schedule(), 1_000).unref();
    }
  });
  #loaded!: Promise<void>;
  /** Objects too large for a catalog entry, with the size said (once per object and size). */
  readonly #saidTooLarge = new Map<string, number>();
  readonly #unsubscribe: (() => void)[] = [];
  #resync: NodeJS.Timeout | undefined;

  /**
   * The JSON of a source's object, once per object: a source hands out the same object until it changes
   * (a manifest file unchanged, a Kubernetes object at the same version), and the periodic resync
   * compares every object (JSON.stringify of 20,000 objects every 10 s at 10,000 services).
   */
  readonly #jsonOf = new WeakMap<CatalogObject, string>();

  #json(object: CatalogObject): string {
    let json = this.#jsonOf.get(object);
    if (json === undefined) this.#jsonOf.set(object, (json = JSON.stringify(object)));
    return json;
  }

  constructor(options: CatalogPublisherOptions) {
    this.#options = options;
  }

  get leading(): boolean {
    return this.#lease?.leading ?? false;
  }

  get leaseHolder(): string | null {
    return this.#lease?.holderSeen ?? null;
  }

  get kv(): KV | undefined {
    return this.#kv;
  }

  /** Called with each change of the stored catalog (key, revision, object or undefined when deleted). */
  onStoredChange?: (key: string, revision: number, object: CatalogObject | undefined) => void;

  async start(): Promise<void> {
    const { connection, log } = this.#options;
    this.#kv = await retryUntilReady(() => openCatalogBucket(connection, this.#options.replicas ?? 1), {
      what: `the hub's JetStream (catalog bucket with ${this.#options.replicas ?? 1} replica(s))`,
      log,
      signal: this.#options.signal,
    });
    let resolveLoaded!: () => void;
    this.#loaded = new Promise((resolve) => (resolveLoaded = resolve));
    this.#follower = followBucket({
      kv: this.#kv,
      log,
      onLoaded: resolveLoaded,
      onEntry: (entry) => {
        if (entry.operation === "PUT") {
          const json = entry.string();
          try {
            // Our own write coming back (the hub writing 10,000 services sees each again): the object is known.
            const seen = this.stored.get(entry.key);
            const object = seen?.json === json ? seen.object : (JSON.parse(json) as CatalogObject);
            this.stored.set(entry.key, { json, revision: entry.revision, object });
            this.onStoredChange?.(entry.key, entry.revision, object);
          } catch (error) {
            log.warn({ err: error, key: entry.key }, "catalog bucket holds a value that is not JSON; it will be overwritten");
          }
        } else {
          this.stored.delete(entry.key);
          this.onStoredChange?.(entry.key, entry.revision, undefined);
        }
      },
    });
    await this.#loaded;

    const source = this.#options.source;
    if (!source) return;
    this.#unsubscribe.push(
      source.onChange(() => this.#schedule()),
      source.onReject((rejection) =>
        this.#options.bus.publish("publisher", "rejected", {
          at: nowIso(),
          source: rejection.source,
          file: rejection.file,
          object: rejection.object,
          error: formatRejection(rejection),
        }),
      ),
    );
    const leaseKv = await retryUntilReady(() => new Kvm(connection).create(buckets.leases, leaseBucketOptions(this.#options.leaseTtlMs, this.#options.replicas ?? 1)), {
      what: "the hub's JetStream (lease bucket)",
      log,
      signal: this.#options.signal,
    });
    this.#lease = new KvLease({
      kv: leaseKv,
      manager: await jetstreamManager(connection),
      bucket: buckets.leases,
      key: leaseKeys.catalogPublisher,
      holder: this.#options.holder,
      ttlMs: this.#options.leaseTtlMs,
      clock: this.#options.clock,
      log,
    });
    this.#lease.onChange((leading) => {
      this.#options.bus.publish("publisher", "lease", { at: nowIso(), holder: leading ? this.#options.holder : this.#lease!.holderSeen, held: leading });
      if (leading) this.#schedule();
    });
    await (this.#options.sourceStarted ?? source.start());
    this.#lease.start();
    // A source that becomes synced with nothing to change emits nothing (SourceListeners drops empty batches):
    // a periodic pass compares the whole catalog, so stale keys never outlive it. Cheap: no write when equal.
    this.#resync = setInterval(() => void this.#schedule(), this.#options.resyncMs ?? 10_000);
    this.#resync.unref();
  }

  /** Runs a reconcile now (coalescing with one in progress) and waits for it. */
  #schedule(): Promise<void> {
    return this.#reconciler.run();
  }

  async #reconcile(): Promise<void> {
    const source = this.#options.source;
    // An unsynced source would look empty: writing it would delete the whole catalog.
    if (!source?.synced || !this.leading || !this.#kv) return;
    // TLS Secrets only when a Gateway names them: every node mirrors what is written here.
    const desired = withoutUnreferencedSecrets(source.snapshot());
    const puts: [string, CatalogObject, string][] = [];
    const deletes: string[] = [];
    for (const [key, object] of desired) {
      const json = this.#json(object);
      if (this.stored.get(key)?.json === json) continue;
      if (json.length * 3 > maxCatalogValueBytes && Buffer.byteLength(json) > maxCatalogValueBytes) {
        this.#tooLarge(key, Buffer.byteLength(json), source.name);
        continue;
      }
      puts.push([key, object, json]);
    }
    for (const key of this.stored.keys()) if (!desired.has(key)) deletes.push(key);
    if (puts.length === 0 && deletes.length === 0) return;

    // Fencing: a renewal answered just now, or no write. A hub that lost the lease while it was not looking (paused,
    // cut off: its `leading` is only as fresh as its last renewal) learns it here, before it writes over a newer leader.
    const lease = this.#lease!;
    if (!(await lease.confirm())) return this.#fenced(lease, 0, puts.length + deletes.length);
    const kv = this.#kv;
    if (!this.#puts || this.#puts.closed) this.#puts = new KvPuts({ connection: this.#options.connection, bucket: buckets.catalog });
    const pipeline = this.#puts;
    const work: (() => Promise<void>)[] = [
      ...puts.map(([key, object, json]) => async () => {
        const revision = await pipeline.put(key, encoder.encode(json));
        const seen = this.stored.get(key);
        if (!seen || seen.revision < revision) this.stored.set(key, { json, revision, object });
      }),
      ...deletes.map((key) => async () => {
        await kv.delete(key);
        this.stored.delete(key);
      }),
    ];
    let next = 0;
    const worker = async () => {
      while (next < work.length) {
        // Fencing: a publisher that lost the lease, or whose renewals are late, stops in the middle of a batch.
        if (!lease.mayWrite()) return;
        await work[next++]();
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#options.concurrency ?? 256, work.length) }, worker));
    if (next < work.length) return this.#fenced(lease, next, work.length - next);
    this.#options.log.info({ puts: puts.length, deletes: deletes.length, objects: desired.size, source: source.name }, "catalog written");
    this.#options.bus.publish("publisher", "publish", { at: nowIso(), puts: puts.length, deletes: deletes.length, objects: desired.size, source: source.name });
  }

  /** Writes held back by the lease's fence: said, and tried again in a second while this hub still leads (a renewal was late). */
  #fenced(lease: KvLease, sent: number, held: number): void {
    this.#options.log.warn({ sent, held, leading: lease.leading }, "catalog writes held back: the publisher lease is lost, or its last renewal is too old to write under");
    // Lost: the next leader writes them, from its own source.
    if (lease.leading) setTimeout(() => void this.#schedule(), 1_000).unref();
  }

  /**
   * An object whose entry the servers cannot carry (NATS max_payload, nats/render.ts): never put (it would fail at every
   * resync, and stop nothing else), said once per object and size, as an error and an event. What the bucket held
   * under its key before stays.
   */
  #tooLarge(key: string, bytes: number, source: string): void {
    if (this.#saidTooLarge.get(key) === bytes) return;
    if (this.#saidTooLarge.size >= 10_000) this.#saidTooLarge.clear();
    this.#saidTooLarge.set(key, bytes);
    const reason = `${key} is ${bytes} bytes as a catalog entry, over the ${maxCatalogValueBytes} a NATS message carries here: not written (split it: Kubernetes keeps an EndpointSlice to 1,000 endpoints); what the catalog held under its key stays`;
    this.#options.log.error({ key, bytes, source }, reason);
    this.#options.bus.publish("publisher", "rejected", { at: nowIso(), source, object: key, error: reason });
  }

  async stop(): Promise<void> {
    for (const unsubscribe of this.#unsubscribe) unsubscribe();
    clearInterval(this.#resync);
    await this.#reconciler.stop();
    await this.#lease?.stop();
    await this.#options.source?.stop();
    await this.#follower?.stop();
    this.#puts?.close();
  }
}
