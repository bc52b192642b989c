/**
 * A lease held in a KV bucket whose TTL is the lease duration: the holder keeps
 * its key alive with compare-and-set updates; when it dies, the server expires
 * the key and the next contender takes it. Only server time counts, so clock
 * skew between hubs cannot give two holders.
 *
 * Taken only while the key holds nothing, with an expected last sequence of 0:
 * on nats-server 2.9.10 a clustered stream checks that condition as it applies
 * each write, in the order of its log, so one of many contenders wins. It checks
 * an expected sequence above 0 only before it proposes the write
 * (nats-io/nats-server#4320): `kv.create` on a key holding a delete marker is
 * such an update, and two to six of six hubs woken by one release took the
 * lease in 5 to 20 of 40 rounds (lease-contenders.test.ts, docs/design.md).
 * So a release removes the holder's own message by its sequence (no marker), a
 * marker found (an operator's `kv del`, an older hub's release) is removed the
 * same way before the key is taken, and a won key is read back from the
 * stream's leader before this hub leads.
 *
 * States (an xstate machine): following ⇄ leading → stopped. A holder that
 * fails one renewal steps down at once: it may be cut off, and another hub may
 * already hold the lease, so it must stop writing before it knows. A writer
 * fences each batch with `confirm()` (a renewal now) and each write with
 * `mayWrite()` (renewed recently enough).
 *
 * ```ts
 * const lease = new KvLease({ kv, manager, bucket: "mesh-leases", key: "catalog-publisher", holder: "hub-1", ttlMs: 6000, log });
 * lease.onChange((leading) => leading ? publisher.resume() : publisher.pause());
 * lease.start();
 * if (await lease.confirm()) for (const write of batch) if (lease.mayWrite()) await write();
 * ```
 */
import type { JetStreamManager, StoredMsg } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { createActor, setup } from "xstate";
import { systemClock, type Clock } from "../../lib/clock.ts";
import type { Logger } from "../../lib/log.ts";
import { describeError } from "../../lib/errors.ts";
import { within } from "../../lib/within.ts";

export interface KvLeaseOptions {
  /** A bucket created with `ttl` = ttlMs and history 1 (see `leaseBucketOptions`). */
  kv: KV;
  /** A manager on the same connection: messages are read from the stream's leader and removed by their sequence. */
  manager: JetStreamManager;
  /** The bucket's name (its stream is `KV_<bucket>`). */
  bucket: string;
  key: string;
  holder: string;
  /** @default defaultLeaseTtlMs — must equal the bucket's TTL; a dead holder is replaced within ttl + one attempt interval. */
  ttlMs?: number;
  log: Logger;
  clock?: Clock;
}

/**
 * @default 6_000 — a dead publisher is replaced within about this long (plus one attempt
 * interval, ttl / 3); shorter would let a hub's GC pause or a slow JetStream write lose a
 * healthy lease. The one definition: `leafmesh hub --lease-ttl` shows it.
 */
export const defaultLeaseTtlMs = 6_000;

export function leaseBucketOptions(ttlMs = defaultLeaseTtlMs, replicas = 1) {
  return { history: 1, ttl: ttlMs, replicas };
}

const leaseMachine = setup({
  types: { events: {} as { type: "ACQUIRED" } | { type: "LOST" } | { type: "STOP" } },
}).createMachine({
  id: "lease",
  initial: "following",
  states: {
    following: { on: { ACQUIRED: "leading", STOP: "stopped" } },
    leading: { on: { LOST: "following", STOP: "stopped" } },
    stopped: { type: "final" },
  },
});

/** @default 1_000 — how long a stop waits for its lease's release. */
const releaseWaitMs = 1_000;

const isMarker = (message: StoredMsg) => ["DEL", "PURGE"].includes(message.header?.get("KV-Operation") ?? "");

function holderOf(message: StoredMsg | null): string | null {
  if (!message || isMarker(message)) return null;
  try {
    return message.json<{ holder?: string }>().holder ?? null;
  } catch {
    return null;
  }
}

export class KvLease {
  readonly actor = createActor(leaseMachine);
  readonly #options: Required<Omit<KvLeaseOptions, "clock">> & { clock: Clock };
  readonly #stream: string;
  readonly #subject: string;
  #revision = 0;
  /** Monotonic time until which the lease is surely ours: when the last successful write of it was sent, plus the TTL. */
  #heldUntil = 0;
  #timer: unknown;
  /** The attempt or renewal in progress: one at a time, or two renewals with one revision would fail each other. */
  #running: Promise<void> | undefined;
  #listeners = new Set<(leading: boolean) => void>();
  /** Who held the lease at the last look (for status). */
  holderSeen: string | null = null;

  constructor(options: KvLeaseOptions) {
    // Not a spread of defaults: an option passed as undefined must not erase its default.
    this.#options = { ...options, ttlMs: options.ttlMs ?? defaultLeaseTtlMs, clock: options.clock ?? systemClock };
    this.#stream = `KV_${options.bucket}`;
    this.#subject = `$KV.${options.bucket}.${options.key}`;
  }

  get leading(): boolean {
    return this.actor.getSnapshot().value === "leading";
  }

  /**
   * Leading, and renewed recently enough that a write sent now lands before the lease could pass to another hub: a
   * third of the TTL is kept for it (a renewal is due every third, so a healthy holder always may).
   */
  mayWrite(): boolean {
    return this.leading && this.#options.clock.monotonic() < this.#heldUntil - this.#options.ttlMs / 3;
  }

  onChange(listener: (leading: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  start(): void {
    this.actor.start();
    void this.tick();
    // A third of the TTL: two renewals may fail to arrive before the key expires.
    this.#timer = this.#options.clock.setInterval(() => void this.tick(), Math.max(100, Math.floor(this.#options.ttlMs / 3)));
  }

  /** One attempt: renew when leading, try to acquire when following (skipped while one is in progress). */
  tick(): Promise<void> {
    if (this.#running || this.actor.getSnapshot().status !== "active") return this.#running ?? Promise.resolve();
    return this.#run(() => (this.leading ? this.#renew() : this.#acquire()));
  }

  /**
   * Renews now (after an attempt in progress) and says whether this hub may write: a writer asks before each batch, so
   * a hub that lost the lease while it was not looking (a pause, a cut) finds out before it writes, not after.
   */
  async confirm(): Promise<boolean> {
    while (this.#running) await this.#running;
    if (!this.leading) return false;
    await this.#run(() => this.#renew());
    return this.mayWrite();
  }

  #run(attempt: () => Promise<void>): Promise<void> {
    const running = attempt().finally(() => {
      if (this.#running === running) this.#running = undefined;
    });
    this.#running = running;
    return running;
  }

  #value(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify({ holder: this.#options.holder, at: new Date(this.#options.clock.now()).toISOString() }));
  }

  async #renew(): Promise<void> {
    const sentAt = this.#options.clock.monotonic();
    try {
      this.#revision = await this.#options.kv.update(this.#options.key, this.#value(), this.#revision);
      this.#heldUntil = sentAt + this.#options.ttlMs;
    } catch (error) {
      this.#options.log.warn({ err: error, key: this.#options.key }, "lease renewal failed; stepping down");
      this.#set(false);
    }
  }

  /** What the key holds, read from the stream's leader (a direct get may answer from a replica that is behind). */
  #stored(): Promise<StoredMsg | null> {
    return this.#options.manager.streams.getMessage(this.#stream, { last_by_subj: this.#subject });
  }

  async #acquire(): Promise<void> {
    const { key, kv, manager, log } = this.#options;
    const sentAt = this.#options.clock.monotonic();
    const revision = await (async () => {
      const stored = await this.#stored();
      if (stored && !isMarker(stored)) {
        this.holderSeen = holderOf(stored);
        return undefined;
      }
      // A marker: only this message is removed (by whichever hub comes first), never a later holder's.
      if (stored) await manager.streams.deleteMessage(this.#stream, stored.seq, false).catch(() => undefined);
      return await kv.put(key, this.#value(), { previousSeq: 0 });
    })().catch(async () => {
      // Taken just now by another hub, or the hub's JetStream does not answer: look who holds it, for status.
      this.holderSeen = holderOf(await this.#stored().catch(() => null));
      return undefined;
    });
    if (revision === undefined) return;
    const won = await this.#stored().catch((error: unknown) => {
      log.warn({ err: describeError(error), key }, "could not read back the lease just taken; not leading, it expires by itself");
      return null;
    });
    if (won?.seq !== revision) {
      this.holderSeen = holderOf(won);
      if (won) log.warn({ key, revision, stored: won.seq, holder: this.holderSeen }, "lease taken, but the stream holds another write of it; not leading");
      return;
    }
    if (this.actor.getSnapshot().status !== "active") {
      // Stopped while it was taking the lease: give it back at once.
      await manager.streams.deleteMessage(this.#stream, revision, false).catch(() => undefined);
      return;
    }
    this.#revision = revision;
    this.#heldUntil = sentAt + this.#options.ttlMs;
    this.holderSeen = this.#options.holder;
    this.#set(true);
  }

  #set(leading: boolean): void {
    if (leading === this.leading) return;
    this.actor.send({ type: leading ? "ACQUIRED" : "LOST" });
    this.#options.log.info({ key: this.#options.key, holder: this.#options.holder }, leading ? "lease acquired" : "lease lost");
    for (const listener of this.#listeners) listener(leading);
  }

  /** Stops, and releases the lease so that another holder takes over at once. */
  async stop(): Promise<void> {
    this.#options.clock.clearInterval(this.#timer);
    const wasLeading = this.leading;
    if (this.actor.getSnapshot().status === "active") this.actor.send({ type: "STOP" });
    if (wasLeading) {
      for (const listener of this.#listeners) listener(false);
      // Its own message removed by its sequence, not a delete marker: the next holder takes the key with an expected
      // sequence of 0, the one check 2.9.10 applies in order (see above). A later holder's message is never touched.
      // After a renewal in flight, which would leave a newer revision than the one released. A second at most: a stop
      // whose server is already gone (a signal to the whole group) would otherwise wait for the client's request
      // timeout, and an unreleased lease only expires as if the holder had crashed.
      const released = (this.#running ?? Promise.resolve()).then(() => this.#options.manager.streams.deleteMessage(this.#stream, this.#revision, false));
      await within(released, releaseWaitMs).catch((error: unknown) => {
        this.#options.log.warn({ err: describeError(error) }, "could not release the lease; it expires by itself");
      });
    }
  }
}
