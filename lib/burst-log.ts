/**
 * Logs a burst of refusals once (STYLE 16): the first refusal of a reason is a
 * warning with its detail; those that follow are only counted, and when no more
 * came for `quietMs` one line says how many the burst held and how long it
 * lasted. A flood of 10,000 refused connections is two log lines, not 10,000.
 *
 * ```ts
 * const refusals = new BurstLog({ log, clock, message: "connection refused at the door" });
 * refusals.note("queue full", { client: "10.0.0.7" });
 * ```
 */
import type { Clock } from "./clock.ts";
import type { Logger } from "./log.ts";

interface Burst {
  count: number;
  firstAt: number;
  lastAt: number;
  timer: unknown;
}

export class BurstLog {
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #message: string;
  readonly #quietMs: number;
  readonly #bursts = new Map<string, Burst>();

  constructor(options: {
    log: Logger;
    clock: Clock;
    /** What happened, the same for every reason (e.g. "connection refused at the door"). */
    message: string;
    /** @default 10_000 — a burst ends after this long without another refusal of its reason. */
    quietMs?: number;
  }) {
    this.#log = options.log;
    this.#clock = options.clock;
    this.#message = options.message;
    this.#quietMs = options.quietMs ?? 10_000;
  }

  note(reason: string, detail: Record<string, unknown> = {}): void {
    const now = this.#clock.monotonic();
    const burst = this.#bursts.get(reason);
    if (burst) {
      burst.count++;
      burst.lastAt = now;
      return;
    }
    this.#log.warn({ reason, ...detail }, `${this.#message} (logged once per burst; counted by reason)`);
    const started: Burst = { count: 1, firstAt: now, lastAt: now, timer: undefined };
    this.#bursts.set(reason, started);
    this.#schedule(reason, started, this.#quietMs);
  }

  /** Says the bursts still open, and stops. */
  close(): void {
    for (const [reason, burst] of this.#bursts) {
      this.#clock.clearTimeout(burst.timer);
      this.#end(reason, burst);
    }
    this.#bursts.clear();
  }

  #schedule(reason: string, burst: Burst, delayMs: number): void {
    burst.timer = this.#clock.setTimeout(() => {
      const quietFor = this.#clock.monotonic() - burst.lastAt;
      if (quietFor < this.#quietMs) return this.#schedule(reason, burst, this.#quietMs - quietFor);
      this.#bursts.delete(reason);
      this.#end(reason, burst);
    }, delayMs);
  }

  #end(reason: string, burst: Burst): void {
    if (burst.count > 1) this.#log.warn({ reason, refused: burst.count, lastedMs: burst.lastAt - burst.firstAt }, `${this.#message}: burst over`);
  }
}
