/**
 * A promise given a deadline: its outcome if it settles within `timeoutMs`, else a rejection saying so.
 * For what a stop waits on that a dead server would never answer (a lease released, a node record
 * withdrawn): the work itself goes on, unawaited; the timer is cleared either way.
 *
 * ```ts
 * await within(kv.delete(key), 1_000).catch(() => log.warn("not released; it expires by itself"));
 * ```
 */
export async function within<T>(work: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}
