/**
 * A lease held in a KV bucket whose TTL is the lease duration: the holder keeps
 * its key alive with compare-and-set updates; when it dies, the server expires
 * the key and the next contender's `create` succeeds. Only server time counts,
 * so clock skew between hubs cannot give two holders.
 *
 * States (an xstate machine): following ⇄ leading → stopped. A holder that
 * fails one renewal steps down at once: it may be cut off, and another hub may
 * already hold the lease, so it must stop writing before it knows.
 *
 * ```ts
 * const lease = new KvLease({ kv, key: "catalog-publisher", holder: "hub-1", ttlMs: 6000, log });
 * lease.onChange((leading) => leading ? publisher.resume() : publisher.pause());
 * lease.start();
 * ```
 */
import type { KV } from "@nats-io/kv";
import { createActor, setup } from "xstate";
import { systemClock, type Clock } from "../../lib/clock.ts";
import type { Logger } from "../../lib/log.ts";
import { describeError } from "../../lib/errors.ts";
import { within } from "../../lib/within.ts";

export interface KvLeaseOptions {
  /** A bucket created with `ttl` = ttlMs and history 1 (see `leaseBucketOptions`). */
  kv: KV;
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

export class KvLease {
  readonly actor = createActor(leaseMachine);
  readonly #options: Required<Omit<KvLeaseOptions, "clock">> & { clock: Clock };
  #revision = 0;
  #timer: unknown;
  #busy = false;
  #listeners = new Set<(leading: boolean) => void>();
  /** Who held the lease at the last look (for status). */
  holderSeen: string | null = null;

  constructor(options: KvLeaseOptions) {
    // Not a spread of defaults: an option passed as undefined must not erase its default.
    this.#options = { ...options, ttlMs: options.ttlMs ?? defaultLeaseTtlMs, clock: options.clock ?? systemClock };
  }

  get leading(): boolean {
    return this.actor.getSnapshot().value === "leading";
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

  /** One attempt: renew when leading, try to acquire when following. */
  async tick(): Promise<void> {
    if (this.#busy || this.actor.getSnapshot().status !== "active") return;
    this.#busy = true;
    const value = new TextEncoder().encode(JSON.stringify({ holder: this.#options.holder, at: new Date(this.#options.clock.now()).toISOString() }));
    try {
      if (this.leading) {
        try {
          this.#revision = await this.#options.kv.update(this.#options.key, value, this.#revision);
        } catch (error) {
          this.#options.log.warn({ err: error, key: this.#options.key }, "lease renewal failed; stepping down");
          this.#set(false);
        }
      } else {
        try {
          this.#revision = await this.#options.kv.create(this.#options.key, value);
          this.holderSeen = this.#options.holder;
          this.#set(true);
        } catch {
          // Held by someone else (or the hub is unreachable): look who, for status.
          const entry = await this.#options.kv.get(this.#options.key).catch(() => null);
          this.holderSeen = entry && entry.operation === "PUT" ? (entry.json<{ holder: string }>().holder ?? null) : null;
        }
      }
    } finally {
      this.#busy = false;
    }
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
      // A second at most: a stop whose server is already gone (a signal to the whole group) would otherwise wait for the client's
      // request timeout, and an unreleased lease only expires as if the holder had crashed.
      await within(this.#options.kv.delete(this.#options.key, { previousSeq: this.#revision }), releaseWaitMs).catch((error: unknown) => {
        this.#options.log.warn({ err: describeError(error) }, "could not release the lease; it expires by itself");
      });
    }
  }
}
