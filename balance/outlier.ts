/**
 * Outlier ejection, as Envoy's `consecutive_5xx` at L4: an endpoint whose connects
 * keep failing is left out for a while, longer each time it is ejected again, and
 * taken back when the time is up (a connect that then fails ejects it again at
 * once). Pure: the proxy reports outcomes, time comes from the clock.
 *
 * ```ts
 * const outliers = new OutlierDetector({ clock });
 * outliers.failure("198.18.1.3:80");
 * outliers.isEjected("198.18.1.3:80");
 * ```
 */
import type { Clock } from "../lib/clock.ts";

export interface OutlierOptions {
  clock: Clock;
  /** @default 3 — one refused connect can be a restart; three in a row is a dead endpoint. */
  consecutiveFailures?: number;
  /** @default 10_000 — Envoy's base ejection time is 30 s; edge endpoints restart fast, so come back sooner. */
  baseEjectionMs?: number;
  /** @default 300_000 — the longest ejection after repeated ejections (Envoy's max_ejection_time). */
  maxEjectionMs?: number;
}

interface EndpointHealth {
  failures: number;
  ejections: number;
  ejectedUntil: number;
}

export class OutlierDetector {
  readonly #clock: Clock;
  readonly #threshold: number;
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #health = new Map<string, EndpointHealth>();
  /** Ejections so far (a counter for stats). */
  ejections = 0;

  constructor(options: OutlierOptions) {
    this.#clock = options.clock;
    this.#threshold = options.consecutiveFailures ?? 3;
    this.#baseMs = options.baseEjectionMs ?? 10_000;
    this.#maxMs = options.maxEjectionMs ?? 300_000;
  }

  success(key: string): void {
    const health = this.#health.get(key);
    if (!health) return;
    health.failures = 0;
    // A healthy endpoint's ejection history fades: the next ejection starts short again.
    if (health.ejectedUntil <= this.#clock.monotonic()) this.#health.delete(key);
  }

  /** Records a failed connect; returns true when this failure ejected the endpoint. */
  failure(key: string): boolean {
    let health = this.#health.get(key);
    if (!health) this.#health.set(key, (health = { failures: 0, ejections: 0, ejectedUntil: 0 }));
    health.failures++;
    const now = this.#clock.monotonic();
    // An endpoint just back from ejection that fails again goes straight back out.
    const returning = health.ejections > 0 && health.ejectedUntil <= now;
    if (health.ejectedUntil > now || (health.failures < this.#threshold && !returning)) return false;
    health.ejections++;
    health.failures = 0;
    health.ejectedUntil = now + Math.min(this.#maxMs, this.#baseMs * health.ejections);
    this.ejections++;
    return true;
  }

  /** Endpoints with a failure or ejection on record; 0 on the healthy fast path. */
  get tracked(): number {
    return this.#health.size;
  }

  isEjected(key: string): boolean {
    const health = this.#health.get(key);
    return health !== undefined && health.ejectedUntil > this.#clock.monotonic();
  }

  /** Keys currently ejected. */
  ejected(): string[] {
    const now = this.#clock.monotonic();
    return [...this.#health].filter(([, health]) => health.ejectedUntil > now).map(([key]) => key);
  }

  /** Forgets endpoints that left the catalog. */
  retain(keys: ReadonlySet<string>): void {
    for (const key of this.#health.keys()) if (!keys.has(key)) this.#health.delete(key);
  }
}
