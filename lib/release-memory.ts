/**
 * One full garbage collection once a large catalog change has settled, so that
 * an edge process gives back the memory the change left behind.
 *
 * Loading a catalog decodes every object, and the actors rebuild what they derive from it (DNS answers,
 * traffic plans). Most of what that allocates is garbage a moment later, but much of it has been moved into
 * V8's old generation by then (the young one is capped at 4 MiB in edge processes, bin/leafmesh.js), and V8
 * collects the old generation only when it grows: a process that goes quiet after loading keeps the garbage
 * resident for good. Measured with bench/fabric's agent at 10,000 services: 176–200 MiB resident after
 * loading, unchanged 20 s later. V8's regular full collection frees the garbage (heap in use 102 → 82 MiB) but
 * gives back few pages (183 → 180 MiB resident: what lives is spread over them); its last-resort collection,
 * the one V8 runs before it gives up on memory, also moves what lives together and shrinks the young
 * generation: 200 → 163 and 178 → 155 MiB. It pauses the process once, after the change, for ~200 ms at
 * 10,000 services (logged, with the memory before and after).
 *
 * ```ts
 * const release = new ReleaseAfterChurn({ log });
 * feed.onChange((keys) => release.note(keys.length));
 * ```
 */
import { getHeapStatistics, setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { systemClock, type Clock } from "./clock.ts";
import type { Logger } from "./log.ts";

export interface ReleaseAfterChurnOptions {
  log: Logger;
  /** @default 1_000 — objects changed since the last collection before one is worth its pause. */
  threshold?: number;
  /** @default 2_000 — how long no change may arrive before collecting (the actors rebuild after each batch). */
  quietMs?: number;
  /** @default 15_000 — a change that goes on longer is collected during it: the wait for quiet is pushed back at most this long. */
  maxWaitMs?: number;
  clock?: Clock;
  /** @default fullCollection() */
  collect?: () => void;
}

export class ReleaseAfterChurn {
  readonly #options: ReleaseAfterChurnOptions;
  readonly #clock: Clock;
  #changed = 0;
  #timer: unknown;
  /** When the threshold was crossed: the collection is due by then + maxWaitMs. */
  #crossedAt: number | undefined;
  #stopped = false;
  /** Collections done (status and tests). */
  collections = 0;

  constructor(options: ReleaseAfterChurnOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
  }

  /** Counts `objects` changed; past the threshold, (re)starts the wait for quiet. */
  note(objects: number): void {
    if (this.#stopped) return;
    this.#changed += objects;
    if (this.#changed < (this.#options.threshold ?? 1_000)) return;
    const now = this.#clock.monotonic();
    this.#crossedAt ??= now;
    const due = Math.min(now + (this.#options.quietMs ?? 2_000), this.#crossedAt + (this.#options.maxWaitMs ?? 15_000));
    this.#clock.clearTimeout(this.#timer);
    this.#timer = this.#clock.setTimeout(() => this.#release(), Math.max(0, due - now));
  }

  stop(): void {
    this.#stopped = true;
    this.#clock.clearTimeout(this.#timer);
  }

  #release(): void {
    if (this.#stopped) return;
    const objects = this.#changed;
    this.#changed = 0;
    this.#crossedAt = undefined;
    const heapBefore = getHeapStatistics().used_heap_size;
    const rssBefore = process.memoryUsage.rss();
    const started = performance.now();
    try {
      (this.#options.collect ?? fullCollection())();
    } catch (error) {
      this.#options.log.warn({ err: error }, "a full garbage collection after a large catalog change failed; V8 collects on its own schedule");
      return;
    }
    this.collections++;
    const mib = (bytes: number) => Math.round(bytes / 104_857.6) / 10;
    this.#options.log.info(
      { objects, heapMiB: [mib(heapBefore), mib(getHeapStatistics().used_heap_size)], rssMiB: [mib(rssBefore), mib(process.memoryUsage.rss())], pauseMs: Math.round(performance.now() - started) },
      "gave back the memory a large catalog change left behind (one full garbage collection once it settled)",
    );
  }
}

let collector: (() => void) | undefined;

/**
 * V8's last-resort full collection (`gc({ flavor: "last-resort" })`: compacting, memory-reducing). Node exposes `gc` only under --expose-gc: the flag is set at run time and `gc` taken
 * from a fresh context, so this process's global scope gets no `gc` (no module can call it by chance).
 */
export function fullCollection(): () => void {
  if (!collector) {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as (options: { type: "major"; execution: "sync"; flavor: "last-resort" }) => void;
    collector = () => gc({ type: "major", execution: "sync", flavor: "last-resort" });
  }
  return collector;
}
