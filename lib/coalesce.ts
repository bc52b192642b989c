/**
 * Runs a task so that calls made while it runs coalesce into one more run after
 * it, never two at once and never one lost: for reloads and reconciles that must
 * always end on the latest input.
 *
 * ```ts
 * const reload = new Coalescer(() => readFiles());
 * reload.run(); reload.run(); // one run now, one after it
 * await reload.idle();
 * ```
 */
export class Coalescer {
  readonly #task: () => Promise<void>;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;

  constructor(task: () => Promise<void>) {
    this.#task = task;
  }

  /** Runs now, or once more after the run in progress; resolves when the work asked for is done. */
  run(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          await this.#task();
        } while (this.#again && !this.#stopped);
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  /** No more runs after the current one. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#running;
  }

  async idle(): Promise<void> {
    await this.#running;
  }
}
