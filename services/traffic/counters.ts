/** Counters by reason (STYLE 16): every refusal, drop and ejection is counted. */
export class Counters {
  readonly #values = new Map<string, number>();

  count(reason: string, by = 1): void {
    this.#values.set(reason, (this.#values.get(reason) ?? 0) + by);
  }

  get(reason: string): number {
    return this.#values.get(reason) ?? 0;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries(this.#values);
  }
}
