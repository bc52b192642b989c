/**
 * Sessions made ahead of the next stream: a TLS session over a relay channel or
 * a punched connection costs round trips (a punch agreed through the fabric, a
 * handshake across the hubs), so each stream takes the spare made for it, and
 * the next one is made once its open is done (stream-opener.ts). One spare per
 * carrier and node at most; an unused one is closed after `spareSessionLifetimeMs`.
 *
 * ```ts
 * const spares = new SpareSessions({ clock });
 * const ready = await spares.take("relayed TLS edge-b");          // a live session, or undefined
 * spares.prepare("relayed TLS edge-b", () => openSession("edge-b"));
 * ```
 */
import type { Duplex } from "node:stream";
import type { Clock } from "../../lib/clock.ts";

/** How long a TLS session made ahead of a stream (a spare, relayed or punched) is kept unused. */
export const spareSessionLifetimeMs = 60_000;

interface Spare {
  session: Promise<Duplex>;
  expiry: unknown;
  ready: boolean;
}

export class SpareSessions {
  readonly #clock: Clock;
  readonly #spares = new Map<string, Spare>();
  #closed = false;

  constructor(options: { clock: Clock }) {
    this.#clock = options.clock;
  }

  /** The spare under `key` if there is one and it is still open (it is handed out once); `readyOnly`: not one still being made. */
  async take(key: string, options: { readyOnly?: boolean } = {}): Promise<Duplex | undefined> {
    const spare = this.#spares.get(key);
    if (!spare || (options.readyOnly && !spare.ready)) return undefined;
    this.#spares.delete(key);
    this.#clock.clearTimeout(spare.expiry);
    const session = await spare.session.catch(() => undefined);
    if (session && !session.destroyed && session.writable) return session;
    session?.destroy();
    return undefined;
  }

  /** Makes the spare under `key` unless there is one; a spare that fails is simply not there (`onFailure` hears why). */
  prepare(key: string, open: () => Promise<Duplex>, onFailure?: (error: unknown) => void): void {
    if (this.#closed || this.#spares.has(key)) return;
    const session = open();
    session.catch((error: unknown) => {
      if (this.#spares.get(key)?.session === session) {
        this.#clock.clearTimeout(this.#spares.get(key)!.expiry);
        this.#spares.delete(key);
      }
      if (!this.#closed) onFailure?.(error);
    });
    const expiry = this.#clock.setTimeout(() => {
      if (this.#spares.get(key)?.session !== session) return;
      this.#spares.delete(key);
      void session.then((ready) => ready.destroy(), () => undefined);
    }, spareSessionLifetimeMs);
    const spare: Spare = { session, expiry, ready: false };
    void session.then(() => (spare.ready = true), () => undefined);
    this.#spares.set(key, spare);
  }

  /** The keys of the spares that are ready to be taken (for status and tests). */
  ready(): string[] {
    return [...this.#spares].filter(([, spare]) => spare.ready).map(([key]) => key);
  }

  /** Closes every spare; none is made after. */
  close(): void {
    this.#closed = true;
    for (const spare of this.#spares.values()) {
      this.#clock.clearTimeout(spare.expiry);
      void spare.session.then((session) => session.destroy(), () => undefined);
    }
    this.#spares.clear();
  }
}
