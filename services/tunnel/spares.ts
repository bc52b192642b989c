/**
 * Sessions made ahead of the next stream: a TLS session over a relay channel or
 * a punched connection costs round trips (a punch agreed through the fabric, a
 * handshake across the hubs), so each stream takes the spare made for it, and
 * the next one is made once its open is done (stream-opener.ts). One spare per
 * carrier and node at most; an unused one is closed after `spareSessionLifetimeMs`.
 *
 * A spare also says when its peer was last heard on it (its handshake, and a relay channel's pings since):
 * one taken longer than `spareHeardWithinMs` after that is quiet (`isQuietSpare`), and carries no early bytes
 * (lib/early-bytes.ts): its peer may have died since without a FIN or RST.
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

/**
 * @default 4_000 — a spare whose peer was last heard longer ago than this when it is taken is quiet: a client's
 * first bytes wait for its answer instead of going with the header (stream-opener.ts). Why: a peer that died
 * without a FIN or RST (an agent killed behind a relay, a power or cable cut) leaves its spares open for up to
 * the relay's idle timeout (8 s) or TCP keepalive's ~15 s; early bytes sent on one were never answered, could not
 * be proven unread, and cost the client its connection where another endpoint would have served it. A relayed
 * spare hears its peer's pings every 2–3 s (relay-channel.ts), so a live one is never quiet; a direct or punched
 * one hears nothing after its handshake (keepalive is answered by the far kernel, unseen here), so it keeps its
 * 0-RTT for 4 s after it was made (the opener makes one 20 ms after each open), then pays the answer's round trip.
 */
export const spareHeardWithinMs = 4_000;

/** Sessions handed out by `take` whose peer was not heard within `spareHeardWithinMs`. */
const quietSpares = new WeakSet<Duplex>();

/** Whether `session` is a spare taken quiet (its peer not heard lately): early bytes must not ride it. */
export function isQuietSpare(session: Duplex): boolean {
  return quietSpares.has(session);
}

interface Spare {
  session: Promise<Duplex>;
  expiry: unknown;
  ready: boolean;
  /** When the session was made (its handshake: the peer answered then), on the clock's monotonic time. */
  madeAt?: number;
  heardAt?: (session: Duplex) => number | undefined;
}

export interface PrepareOptions {
  /** A spare that fails is simply not there: this hears why. */
  onFailure?: (error: unknown) => void;
  /** When the peer was last heard on the session after its handshake (a relay channel's last frame), on the clock's monotonic time. */
  heardAt?: (session: Duplex) => number | undefined;
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
    if (session && !session.destroyed && session.writable) {
      const heard = Math.max(spare.madeAt ?? -Infinity, spare.heardAt?.(session) ?? -Infinity);
      if (this.#clock.monotonic() - heard > spareHeardWithinMs) quietSpares.add(session);
      return session;
    }
    session?.destroy();
    return undefined;
  }

  /** Makes the spare under `key` unless there is one; a spare that fails is simply not there (`onFailure` hears why). */
  prepare(key: string, open: () => Promise<Duplex>, options: PrepareOptions = {}): void {
    const { onFailure } = options;
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
    const spare: Spare = { session, expiry, ready: false, heardAt: options.heardAt };
    void session.then(
      () => {
        spare.ready = true;
        spare.madeAt = this.#clock.monotonic();
      },
      () => undefined,
    );
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
