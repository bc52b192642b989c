/**
 * Where the proxier learns traffic's listener ports. In the agent it reads them
 * from the bus (`mesh.<node>.traffic.listeners`, a full set in pages); any object
 * with `onListeners` works too (the traffic actor itself has one), which keeps the
 * proxier free of imports from services/traffic.
 */
import { rpcRequest, type Bus } from "../../bus/bus.ts";
import type { ListenerBinding } from "../../bus/events.ts";
import { rpc } from "../../bus/rpc.ts";

export interface ListenerSource {
  /** Called with the full set whenever it changes (or is published again). */
  onListeners(listener: (bindings: ListenerBinding[]) => void): () => void;
  /** The set known now, if the source already has one. */
  listeners?(): ListenerBinding[];
}

/** More pages than 500 listeners × 1,000 would be a broken publisher: ignored rather than allocated. */
const maxPages = 1_000;

/** Assembles the paged `listeners` events of this node's traffic actor into full sets. */
export function busListenerSource(bus: Bus): ListenerSource & { close(): void } {
  const subscribers = new Set<(bindings: ListenerBinding[]) => void>();
  let latest: ListenerBinding[] | undefined;
  let assembling: { generation: number; pages: (ListenerBinding[] | undefined)[] } | undefined;
  const unsubscribe = bus.subscribe({ actor: "traffic", event: "listeners" }, ({ payload }) => {
    // A new generation (or a restarted traffic actor counting from 1 again) starts over.
    if (!Number.isInteger(payload.pages) || payload.pages < 1 || payload.pages > maxPages) return;
    if (!assembling || assembling.generation !== payload.generation || assembling.pages.length !== payload.pages) {
      assembling = { generation: payload.generation, pages: new Array(payload.pages).fill(undefined) };
    }
    if (!Number.isInteger(payload.page) || payload.page < 0 || payload.page >= payload.pages) return;
    assembling.pages[payload.page] = payload.listeners;
    if (assembling.pages.some((page) => page === undefined)) return;
    latest = assembling.pages.flatMap((page) => page!);
    assembling = undefined;
    for (const subscriber of subscribers) subscriber(latest);
  });
  // Ask traffic to publish its current set now: a proxier that restarts need not wait for a change.
  // No answer is fine: a traffic actor that starts later publishes on its first reconcile.
  void rpcRequest(bus.connection, bus.node, rpc.trafficListeners, undefined, 2_000).catch(() => undefined);
  return {
    onListeners(listener) {
      subscribers.add(listener);
      return () => subscribers.delete(listener);
    },
    listeners: () => latest ?? [],
    close: unsubscribe,
  };
}
