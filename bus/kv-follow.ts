/**
 * Follows a KV bucket: every current value once, then every change, resuming
 * from the last revision seen when the watch breaks (a server restart, a
 * consumer lost with its server). `loaded` fires once the initial values are in.
 *
 * A watch that cannot be made is asked for again after a wait that doubles (from
 * `retryMs` to `maxRetryMs`, each a random half to whole of it) and starts over
 * once a watch is made: a hub that answered a thousand followers too late (they
 * time out at 5 s, and it still makes each consumer) is not asked by each of them
 * again every second (docs/limits.md, "nodes on one hub").
 *
 * ```ts
 * const follower = followBucket({ kv, log, onEntry: (entry) => ..., onLoaded: () => ... });
 * follower.lastRevision;
 * await follower.stop();
 * ```
 */
import type { KV, KvWatchEntry } from "@nats-io/kv";
import type { Logger } from "../lib/log.ts";

export interface FollowBucketOptions {
  kv: KV;
  log: Logger;
  onEntry: (entry: KvWatchEntry) => void;
  onLoaded?: () => void;
  /** @default 1_000 — the first wait before re-watching after the watch broke or could not be made. */
  retryMs?: number;
  /** @default 30_000 — the longest wait, after failures in a row. */
  maxRetryMs?: number;
  /** @default Math.random */
  random?: () => number;
}

export interface BucketFollower {
  readonly lastRevision: number;
  readonly loaded: boolean;
  /**
   * Follows the bucket again from its first revision (its stream was made again: revisions start
   * over). `onReloaded` is called once every value it holds then has been handed to onEntry.
   */
  restart(onReloaded: () => void): void;
  stop(): Promise<void>;
}

export function followBucket(options: FollowBucketOptions): BucketFollower {
  let lastRevision = 0;
  let loaded = false;
  let stopped = false;
  let current: { stop(): void } | undefined;
  let wake: (() => void) | undefined;
  let restarting = false;
  let onReloaded: (() => void) | undefined;

  const markLoaded = () => {
    const reloaded = onReloaded;
    onReloaded = undefined;
    reloaded?.();
    if (loaded) return;
    loaded = true;
    options.onLoaded?.();
  };

  const firstWait = options.retryMs ?? 1_000;
  const random = options.random ?? Math.random;
  let wait = firstWait;

  const run = async () => {
    while (!stopped) {
      try {
        if ((!loaded || onReloaded) && (await options.kv.status()).values === 0) markLoaded();
        const iterator = await options.kv.watch(lastRevision > 0 ? { resumeFromRevision: lastRevision + 1 } : {});
        current = iterator;
        wait = firstWait;
        // stop() may have come while the watch was being set up: it found nothing to stop then.
        if (stopped) {
          iterator.stop();
          break;
        }
        // So may restart(): this watch began at the revision before it.
        if (restarting) iterator.stop();
        for await (const entry of iterator) {
          if (entry.revision <= lastRevision) continue;
          lastRevision = entry.revision;
          options.onEntry(entry);
          if (entry.isUpdate) markLoaded();
        }
        if (!stopped && !restarting) options.log.warn({ lastRevision }, "KV watch ended; watching again from the last revision");
      } catch (error) {
        if (stopped) break;
        options.log.warn({ err: error, lastRevision }, "KV watch failed; retrying");
      }
      if (stopped) break;
      if (restarting) {
        restarting = false;
        continue;
      }
      const waitMs = wait * (0.5 + 0.5 * random());
      wait = Math.min(wait * 2, options.maxRetryMs ?? 30_000);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, waitMs).unref();
      });
    }
  };
  const running = run();

  return {
    get lastRevision() {
      return lastRevision;
    },
    get loaded() {
      return loaded;
    },
    restart(reloaded) {
      lastRevision = 0;
      onReloaded = reloaded;
      restarting = true;
      current?.stop();
      wake?.();
    },
    async stop() {
      stopped = true;
      current?.stop();
      wake?.();
      await running;
    },
  };
}
