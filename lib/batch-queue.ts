/**
 * Work handled in batches, one batch at a time: what arrives while a batch runs forms the next
 * batch (trust/enrolment-service.ts: each join re-signs every account, so a fleet joining at once
 * is pushed to the hubs once per batch, not once per node).
 *
 * A batch that fails (its handler throws or rejects) is handed to `onFailed` with its error, so
 * that nothing of it goes unanswered, and the queue goes on with what waited behind it: a failure
 * never leaves items waiting for the next push to start the queue again.
 *
 * ```ts
 * const queue = batchQueue(async (batch) => handle(batch), (batch, error) => batch.forEach((item) => fail(item, error)));
 * queue.push(item);
 * await queue.idle();
 * ```
 */
export interface BatchQueue<T> {
  /** Items waiting for the batch after the one that runs. */
  readonly waiting: number;
  push(item: T): void;
  /** Settles when every batch pushed so far has run (or failed). */
  idle(): Promise<void>;
}

export function batchQueue<T>(run: (batch: T[]) => Promise<void>, onFailed: (batch: T[], error: unknown) => void): BatchQueue<T> {
  const queue: T[] = [];
  let draining: Promise<void> | undefined;
  const drain = async () => {
    while (queue.length > 0) {
      const batch = queue.splice(0, queue.length);
      try {
        await run(batch);
      } catch (error) {
        try {
          onFailed(batch, error);
        } catch {
          // onFailed is the last word on a failed batch: its own failure must not stop the queue.
        }
      }
    }
    draining = undefined;
  };
  return {
    get waiting() {
      return queue.length;
    },
    push(item: T) {
      queue.push(item);
      draining ??= drain();
    },
    idle: () => draining ?? Promise.resolve(),
  };
}
