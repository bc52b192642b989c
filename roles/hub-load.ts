/**
 * A hub's relay load, published for relay choice (roles/relay-choice.ts) as its
 * record `mesh.<hub>.fabric.load` every few seconds: the relay channels open
 * through it and the bytes per second through its leaf connections. Cheap by
 * design: the channels are counted from the `mesh.<node>.tunnel.relay` events
 * the nodes already publish (open, closed, reset), kept only for the nodes whose
 * leaf is attached to this hub (a node's leaf carries its `relay.<node>.>`
 * interest, which /leafz?subs=1 lists: 2.9.10's /leafz has no remote server
 * name); the bytes are the
 * difference of /leafz's in+out byte counters between two polls. No relayed byte
 * passes through this process. The record carries the hub's mesh protocol level too
 * (bus/protocol.ts): it is what every node hears of its hubs, so a node upgraded
 * before its hub says which hub to upgrade (services/tunnel/peer-versions.ts).
 *
 * ```ts
 * const load = startHubLoad({ bus, monitor: { host, port }, log });
 * load.current(); // { channels: 3, bytesPerSecond: 1048576, leafs: 2 }
 * load.stop();
 * ```
 */
import type { Bus } from "../bus/bus.ts";
import { nowIso } from "../bus/events.ts";
import { hubLoadSubject } from "../bus/subjects.ts";
import { meshProtocol } from "../bus/protocol.ts";
import type { Logger } from "../lib/log.ts";
import type { HostPort } from "../nats/render.ts";
import { monitorBase, monitorJson } from "../nats/monitor-http.ts";

/** @default 5_000 — what agents' relay choice sees is at most 5 s old; one small message per hub per period. */
export const hubLoadIntervalMs = 5_000;

/**
 * @default 10_000 — channels counted open at most per node: a node's events are trusted only so far
 * (a node that never says "closed" must not make its hub look busier than 10,000 channels).
 */
const maxChannelsPerNode = 10_000;

interface LeafzEntry {
  in_bytes?: number;
  out_bytes?: number;
  subscriptions_list?: string[];
}

/** The nodes a leaf connection carries relays for: its `relay.<node>.>` interests. */
function relayNodesOf(leaf: LeafzEntry): string[] {
  return (leaf.subscriptions_list ?? []).map((subject) => /^relay\.([^.]+)\.>$/.exec(subject)?.[1]).filter((node): node is string => node !== undefined);
}

export interface HubLoadReport {
  channels: number;
  bytesPerSecond: number;
  leafs: number;
}

export function startHubLoad(options: { bus: Bus; monitor: HostPort; log: Logger; intervalMs?: number }): { current(): HubLoadReport; stop(): void } {
  const { bus, monitor, log } = options;
  /** Open channel ids by the node that reported them. */
  const open = new Map<string, Set<string>>();
  const unsubscribe = bus.subscribe({ node: "*", actor: "tunnel", event: "relay" }, (event) => {
    const channels = open.get(event.node) ?? new Set<string>();
    if (event.payload.status === "open") {
      if (channels.size < maxChannelsPerNode) channels.add(event.payload.stream);
    } else channels.delete(event.payload.stream);
    if (channels.size === 0) open.delete(event.node);
    else open.set(event.node, channels);
  });
  let last: { at: number; bytes: number } | undefined;
  let report: HubLoadReport = { channels: 0, bytesPerSecond: 0, leafs: 0 };
  let polling = false;
  const poll = async () => {
    if (polling) return;
    polling = true;
    try {
      const leafz = await monitorJson<{ leafs?: LeafzEntry[] }>(`${monitorBase(monitor)}/leafz?subs=1`, 2_000);
      if (!leafz) return;
      const leafs = leafz.leafs ?? [];
      const names = new Set(leafs.flatMap(relayNodesOf));
      // Forget nodes no longer attached here: their channels, if any, go through another hub now.
      for (const node of open.keys()) if (!names.has(node)) open.delete(node);
      // A channel between two nodes of this hub is reported by both ends under one id: counted once.
      const channels = new Set<string>();
      for (const ids of open.values()) for (const id of ids) channels.add(id);
      const bytes = leafs.reduce((sum, leaf) => sum + (leaf.in_bytes ?? 0) + (leaf.out_bytes ?? 0), 0);
      const now = performance.now();
      // Counters restart with a leaf connection: a drop is no negative rate.
      const bytesPerSecond = last && now > last.at ? Math.max(0, Math.round(((bytes - last.bytes) * 1000) / (now - last.at))) : 0;
      last = { at: now, bytes };
      report = { channels: channels.size, bytesPerSecond, leafs: leafs.length };
      bus.publish("fabric", "load", { at: nowIso(), ...report });
      // For the nodes' relay choice: a subject every node account imports (a node of a secured mesh
      // never sees the event above, which stays in the mesh account).
      bus.connection.publish(hubLoadSubject(bus.node), JSON.stringify({ channels: report.channels, bytesPerSecond: report.bytesPerSecond, protocol: meshProtocol }));
    } catch (error) {
      log.debug({ err: error }, "hub load not measured this time");
    } finally {
      polling = false;
    }
  };
  void poll();
  const timer = setInterval(() => void poll(), options.intervalMs ?? hubLoadIntervalMs);
  timer.unref();
  return {
    current: () => report,
    stop: () => {
      clearInterval(timer);
      unsubscribe();
    },
  };
}
