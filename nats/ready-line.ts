/** The server's "Server is ready" log line: the readiness check that waits for it goes at once, not up to 100 ms later. */
export class ReadyLine {
  ready = false;
  #wake: (() => void) | undefined;

  read(line: string): void {
    if (this.ready || !line.includes("Server is ready")) return;
    this.ready = true;
    this.#wake?.();
  }

  /** Resolves after `ms`, or at once when the line comes meanwhile. */
  within(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#done(resolve), ms);
      this.#wake = () => {
        clearTimeout(timer);
        this.#done(resolve);
      };
    });
  }

  #done(resolve: () => void): void {
    this.#wake = undefined;
    resolve();
  }
}
