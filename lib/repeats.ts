/**
 * A line said at most once per interval per kind, with how often it came in between: a peer that fails the same way
 * every second is one line a minute, not 3,600 an hour. Bounded: the oldest kind is forgotten first.
 *
 * ```ts
 * const repeats = new Repeats({ everyMs: 60_000, kinds: 256, now: () => performance.now() });
 * const since = repeats.note("refused 198.18.0.7");   // undefined: count it, say nothing; a number: say it, with since more
 * ```
 */
export class Repeats {
  readonly #seen = new Map<string, { saidAt: number; since: number }>();
  readonly #everyMs: number;
  readonly #kinds: number;
  readonly #now: () => number;

  /** `now`: a monotonic clock (how long since a kind was said, not when). */
  constructor(options: { everyMs: number; kinds: number; now: () => number }) {
    this.#everyMs = options.everyMs;
    this.#kinds = options.kinds;
    this.#now = options.now;
  }

  /** undefined: a repeat to count, not say; otherwise say it, with how many came since it was last said (0 the first time). */
  note(kind: string): number | undefined {
    const now = this.#now();
    const seen = this.#seen.get(kind);
    if (seen && now - seen.saidAt < this.#everyMs) {
      seen.since++;
      return undefined;
    }
    this.#seen.delete(kind);
    this.#seen.set(kind, { saidAt: now, since: 0 });
    if (this.#seen.size > this.#kinds) this.#seen.delete(this.#seen.keys().next().value!);
    return seen?.since ?? 0;
  }
}
