/**
 * Publishes traffic's listener set on the bus (`mesh.<node>.traffic.listeners`):
 * the full set as pages of one generation, at most once per `minIntervalMs`.
 *
 * Why a minimum interval: a fresh agent's catalog arrives in hundreds of
 * batches, each reconciled on its own, and publishing the full set after each
 * one (20 pages of 500 at 10,000 services) made the work grow with the square
 * of the catalog: 1.5 s of CPU of a fresh agent's start at 10,000 services, and
 * ~150 MB of write buffers waiting for the collector (bench/results/profiles,
 * issue 17). The first change after a quiet spell goes out at once; the
 * changes of a burst go out together at the end of the interval, which is at
 * least ten times what sending the last generation cost.
 *
 * ```ts
 * const publisher = new ListenerPublisher({ bus, clock, bindings: () => encodedBindings() });
 * publisher.request();   // after a reconcile that changed listeners
 * publisher.publishNow(); // a proxier asked (rpc traffic.listeners)
 * ```
 */
import { Buffer } from "node:buffer";
import type { Bus } from "../../bus/bus.ts";
import { nowIso } from "../../bus/events.ts";
import type { Clock } from "../../lib/clock.ts";

export interface ListenerPublisherOptions {
  bus: Bus;
  clock: Clock;
  /** Each listener's binding as JSON (bindings.ts keeps them encoded). */
  bindings: () => string[];
  /** @default 500 — listeners per bus event page (~100 bytes each, well under 1 MiB). */
  pageSize?: number;
  /** @default 100 — a new Service's cluster IP waits at most this long for its rule during a burst; a lone change is not delayed. */
  minIntervalMs?: number;
}

export class ListenerPublisher {
  readonly #options: ListenerPublisherOptions;
  #generation = 0;
  #lastAt = Number.NEGATIVE_INFINITY;
  #spacingMs = 0;
  #timer: unknown;

  constructor(options: ListenerPublisherOptions) {
    this.#options = options;
  }

  get generation(): number {
    return this.#generation;
  }

  /** The set changed: published now, or at the end of the current interval with whatever changed meanwhile. */
  request(): void {
    if (this.#timer !== undefined) return;
    const wait = this.#lastAt + this.#spacingMs - this.#options.clock.monotonic();
    if (wait <= 0) {
      this.publishNow();
      return;
    }
    this.#timer = this.#options.clock.setTimeout(() => {
      this.#timer = undefined;
      this.publishNow();
    }, wait);
  }

  /** Publishes the current set as a new generation, at once. */
  publishNow(): void {
    const { bus, clock } = this.#options;
    if (this.#timer !== undefined) {
      clock.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const all = this.#options.bindings();
    // Timed from here: each listener's binding is encoded once per state (bindings.ts), whatever the rate; what
    // every generation repeats, and the spacing bounds, is sending the whole set. Timed with the encoding, the
    // generation after a burst of new listeners waited ten times their encoding: ~350 ms at 10,000 services.
    const started = performance.now();
    const pageSize = this.#options.pageSize ?? 500;
    const pages = Math.max(1, Math.ceil(all.length / pageSize));
    this.#generation++;
    for (let page = 0; page < pages; page++) {
      // Bindings are built by the traffic actor from its own listeners: typed, not checked again field by field,
      // and spliced in as they were encoded, in the fields' order of the event's schema.
      const head = `{"at":${JSON.stringify(nowIso(clock.now))},"generation":${this.#generation},"page":${page},"pages":${pages},"listeners":[`;
      bus.publishJson("traffic", "listeners", pageBytes(head, all, page * pageSize, Math.min(all.length, (page + 1) * pageSize)));
    }
    // The next one waits at least ten times what this one cost: publishing stays under a tenth of the time.
    this.#lastAt = clock.monotonic();
    this.#spacingMs = Math.max(this.#options.minIntervalMs ?? 100, 10 * (performance.now() - started));
  }

  stop(): void {
    if (this.#timer !== undefined) this.#options.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * A page's event as the bytes the bus sends: its head, bindings `from` to `to` joined by commas, "]}". Written into
 * one buffer outside V8's heap: as a string, each page was a slice of the set, the bindings joined, the whole text
 * flattened and encoded to UTF-8 again (a generation of 10,000 bindings, ~2 MB of young garbage; 5–17 generations
 * while a fresh agent loads).
 */
function pageBytes(head: string, bindings: readonly string[], from: number, to: number): Buffer {
  let length = Buffer.byteLength(head) + Math.max(0, to - from - 1) + 2;
  for (let i = from; i < to; i++) length += Buffer.byteLength(bindings[i]);
  const bytes = Buffer.allocUnsafeSlow(length);
  let offset = bytes.write(head, 0, "utf8");
  for (let i = from; i < to; i++) {
    if (i > from) bytes[offset++] = comma;
    offset += bytes.write(bindings[i], offset, "utf8");
  }
  bytes[offset++] = closingBracket;
  bytes[offset] = closingBrace;
  return bytes;
}

const comma = 0x2c;
const closingBracket = 0x5d;
const closingBrace = 0x7d;
