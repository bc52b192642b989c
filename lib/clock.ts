/**
 * Time handed in: production code takes a `Clock`, tests pass a manual one and
 * step it instead of sleeping.
 *
 * ```ts
 * const clock = new ManualClock();
 * clock.setTimeout(fire, 5000);
 * clock.advance(5000); // fire() ran
 * ```
 */
export interface Clock {
  /** The wall clock (ms since the epoch): for times shown or written down. It jumps when the machine's clock is set. */
  now(): number;
  /**
   * A clock that only moves on with time (performance.now in whole ms on the system clock): for durations, deadlines and ages.
   * An edge box's wall clock is set by NTP at any moment, by minutes or hours either way.
   */
  monotonic(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  setInterval(callback: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  // Whole ms, as Date.now's: durations said in logs and events read 8123, not 8123.456789.
  monotonic: () => Math.floor(performance.now()),
  setTimeout: (callback, ms) => {
    const timer = setTimeout(callback, ms);
    timer.unref?.();
    return timer;
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
  setInterval: (callback, ms) => {
    const timer = setInterval(callback, ms);
    timer.unref?.();
    return timer;
  },
  clearInterval: (handle) => clearInterval(handle as NodeJS.Timeout),
};

interface Pending {
  id: number;
  at: number;
  every?: number;
  callback: () => void;
}

/** A clock that moves only when told to; its wall clock can also be set (`jump`), as NTP sets a machine's. */
export class ManualClock implements Clock {
  #now: number;
  /** What the wall clock was set by (jump), on top of the time that passed. */
  #set = 0;
  #nextId = 1;
  #pending = new Map<number, Pending>();

  constructor(start = 0) {
    this.#now = start;
    // Handed around as `clock.now` (nowIso(clock.now)), as systemClock's arrow functions are: bound, or `this` is lost.
    this.now = this.now.bind(this);
  }

  now(): number {
    return this.#now + this.#set;
  }

  monotonic(): number {
    return this.#now;
  }

  /** Sets the wall clock `ms` forward (or back, when negative): no time passes, and no timer fires. */
  jump(ms: number): void {
    this.#set += ms;
  }

  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.#nextId++;
    this.#pending.set(id, { id, at: this.#now + ms, callback });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#pending.delete(handle as number);
  }

  setInterval(callback: () => void, ms: number): unknown {
    const id = this.#nextId++;
    this.#pending.set(id, { id, at: this.#now + ms, every: Math.max(1, ms), callback });
    return id;
  }

  clearInterval(handle: unknown): void {
    this.#pending.delete(handle as number);
  }

  /** Moves time forward, firing due timers in order. */
  advance(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      let next: Pending | undefined;
      for (const pending of this.#pending.values()) if (pending.at <= end && (!next || pending.at < next.at)) next = pending;
      if (!next) break;
      this.#now = next.at;
      if (next.every) next.at += next.every;
      else this.#pending.delete(next.id);
      next.callback();
    }
    this.#now = end;
  }
}
