/**
 * Follows a KV bucket: every current value once, then every change, resuming
 * from the last revision seen when the watch breaks (a server restart, a
 * consumer lost with its server). `loaded` fires once the initial values are in.
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
  /** @default 1_000 — wait before re-watching after the watch broke. */
  retryMs?: number;
}

export interface BucketFollower {
  readonly lastRevision: number;
  readonly loaded: boolean;
  stop(): Promise<void>;
}

export function followBucket(options: FollowBucketOptions): BucketFollower {
  let lastRevision = 0;
  let loaded = false;
  let stopped = false;
  let current: { stop(): void } | undefined;
  let wake: (() => void) | undefined;

  const markLoaded = () => {
    if (loaded) return;
    loaded = true;
    options.onLoaded?.();
  };

  const run = async () => {
    while (!stopped) {
      try {
        if (!loaded && (await options.kv.status()).values === 0) markLoaded();
        const iterator = await options.kv.watch(lastRevision > 0 ? { resumeFromRevision: lastRevision + 1 } : {});
        current = iterator;
        // stop() may have come while the watch was being set up: it found nothing to stop then.
        if (stopped) {
          iterator.stop();
          break;
        }
        for await (const entry of iterator) {
          if (entry.revision <= lastRevision) continue;
          lastRevision = entry.revision;
          options.onEntry(entry);
          if (entry.isUpdate) markLoaded();
        }
        if (!stopped) options.log.warn({ lastRevision }, "KV watch ended; watching again from the last revision");
      } catch (error) {
        if (stopped) break;
        options.log.warn({ err: error, lastRevision }, "KV watch failed; retrying");
      }
      if (stopped) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, options.retryMs ?? 1_000).unref();
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
    async stop() {
      stopped = true;
      current?.stop();
      wake?.();
      await running;
    },
  };
}
