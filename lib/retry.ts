/**
 * Retries a start-up step that depends on something still coming up (a
 * JetStream cluster electing its leader, a peer starting), logging once what it
 * waits for, until it succeeds or the deadline passes.
 *
 * ```ts
 * const kv = await retryUntilReady(() => kvm.create("mesh-catalog"), { what: "the JetStream cluster", log });
 * ```
 */
import { LeafmeshError, type ErrorCode } from "./errors.ts";
import type { Logger } from "./log.ts";

export interface RetryOptions {
  what: string;
  log: Logger;
  /** @default 60_000 — a three-server JetStream cluster elects its leaders within seconds; a minute covers slow starts. */
  timeoutMs?: number;
  /** @default 500 */
  intervalMs?: number;
  code?: ErrorCode;
  /** A stop asked meanwhile (a Ctrl-C while the role starts): the wait ends at once with INTERRUPTED. */
  signal?: AbortSignal;
}

export async function retryUntilReady<T>(step: () => Promise<T>, options: RetryOptions): Promise<T> {
  const deadline = performance.now() + (options.timeoutMs ?? 60_000);
  let attempts = 0;
  const { signal } = options;
  const stopped = () => new LeafmeshError("INTERRUPTED", `stopped while waiting for ${options.what}`);
  for (;;) {
    if (signal?.aborted) throw stopped();
    try {
      return await step();
    } catch (error) {
      attempts++;
      if (performance.now() > deadline) {
        throw new LeafmeshError(options.code ?? "NATS_SERVER_FAILED", `gave up waiting for ${options.what} after ${attempts} attempts`, { cause: error });
      }
      if (attempts === 1) options.log.info({ err: error }, `waiting for ${options.what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, options.intervalMs ?? 500);
        signal?.addEventListener("abort", done, { once: true });
        function done() {
          clearTimeout(timer);
          signal?.removeEventListener("abort", done);
          resolve();
        }
      });
    }
  }
}
