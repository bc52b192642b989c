/**
 * Connects an xstate actor to the bus: every transition of its machine becomes a
 * `state` event, and a `heartbeat` says every few seconds that it is alive and in
 * which state. The link also keeps the latest state for the node's status reply.
 *
 * ```ts
 * const link = linkActorToBus({ bus, actorName: "dns", actor: dnsActor });
 * link.state;  // "serving"
 * link.stop();
 * ```
 */
import type { AnyActorRef } from "xstate";
import { systemClock, type Clock } from "../lib/clock.ts";
import type { Bus } from "./bus.ts";
import { nowIso } from "./events.ts";
import type { ActorName } from "./subjects.ts";

export interface ActorLinkOptions {
  bus: Bus;
  actorName: ActorName;
  actor: AnyActorRef;
  /** @default 5_000 — often enough that `leafmesh sub` shows a stopped actor within seconds, rare enough to stay quiet. */
  heartbeatMs?: number;
  clock?: Clock;
  /** Extra fields for the heartbeat (counters, sizes). */
  detail?: () => Record<string, unknown>;
}

export interface ActorLink {
  readonly actorName: ActorName;
  readonly state: string;
  readonly since: number;
  stop(): void;
}

/** "serving" for a flat machine, "online.syncing" for a nested one. */
export function stateName(value: unknown): string {
  if (typeof value === "string") return value;
  if (value && typeof value === "object") {
    return Object.entries(value as Record<string, unknown>)
      .map(([key, inner]) => {
        const innerName = stateName(inner);
        return innerName ? `${key}.${innerName}` : key;
      })
      .join(",");
  }
  return "";
}

export function linkActorToBus(options: ActorLinkOptions): ActorLink {
  const clock = options.clock ?? systemClock;
  const started = clock.now();
  const startedMonotonic = clock.monotonic();
  let state = stateName(options.actor.getSnapshot()?.value);
  let since = started;
  options.bus.publish(options.actorName, "state", { at: nowIso(clock.now), from: null, to: state });

  const subscription = options.actor.subscribe((snapshot: { value?: unknown }) => {
    const next = stateName(snapshot.value);
    if (next === state) return;
    options.bus.publish(options.actorName, "state", { at: nowIso(clock.now), from: state, to: next });
    state = next;
    since = clock.now();
  });

  const beat = () =>
    options.bus.publish(options.actorName, "heartbeat", {
      at: nowIso(clock.now),
      state,
      uptimeMs: clock.monotonic() - startedMonotonic,
      detail: options.detail?.(),
    });
  const timer = clock.setInterval(beat, options.heartbeatMs ?? 5_000);

  return {
    actorName: options.actorName,
    get state() {
      return state;
    },
    get since() {
      return since;
    },
    stop() {
      clock.clearInterval(timer);
      subscription.unsubscribe();
    },
  };
}

/**
 * Resolves with the actor's state name once `test` accepts it, or once the actor
 * has stopped (reached a final state): for start() and stop() methods that wait
 * for their machine.
 */
export function waitForState(actor: AnyActorRef, test: (state: string) => boolean): Promise<string> {
  return new Promise<string>((resolve) => {
    let subscription: { unsubscribe(): void } | undefined;
    const check = () => {
      const snapshot = actor.getSnapshot() as { value?: unknown; status?: string };
      const state = stateName(snapshot.value);
      if (!test(state) && snapshot.status !== "done") return false;
      subscription?.unsubscribe();
      resolve(state);
      return true;
    };
    if (!check()) subscription = actor.subscribe(() => void check());
  });
}
