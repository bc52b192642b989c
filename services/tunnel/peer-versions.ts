/**
 * Peers and hubs that run another leafmesh, as their node records and the hubs' relay-load records say
 * (bus/protocol.ts): each is logged once per level it shows, with which side must be upgraded (a hub first), and
 * listed in the tunnel's status (`leafmesh status`: OTHER LEAFMESH VERSIONS). While a peer or a hub from before
 * protocol levels is heard, this node keeps its own record alive more often (`keepaliveBeside`): such a peer drops
 * a record 30 s after it was written, and such a hub keeps records 30 s, where this node puts its own every 45-60 s.
 *
 * Hubs write no node record; every hub publishes `fabric-load.<hub>` every 5 s (roles/hub-load.ts), a subject every
 * node account imports, which only relay choice (agents with several upstreams) listened to: the tunnel listens too
 * (twelve messages of ~60 bytes a minute per hub, where N peers' keep-alives bring N a minute), as the tunnel is
 * what the hubs' node records bucket serves.
 *
 * ```ts
 * const versions = new PeerVersions({ log, clock });
 * versions.watchHubs(nats);                     // the hubs' levels, from their relay-load records
 * versions.saw(record);                         // a record arrived (NodeDirectory onRecord)
 * versions.skews(directory.all());              // for status: the peers and hubs on another level, and what to do
 * keepaliveBeside(60_000, [...directory.all(), ...versions.hubs()]); // 20_000 while a level-0 peer or hub is heard
 * ```
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { HubLevels } from "../../bus/hub-levels.ts";
import type { NodeRecord } from "../../bus/node-record.ts";
import { protocolOf, protocolSkew, type ProtocolSkew } from "../../bus/protocol.ts";
import type { Clock } from "../../lib/clock.ts";

export { meshProtocol, type ProtocolSkew } from "../../bus/protocol.ts";
import type { Logger } from "../../lib/log.ts";

/**
 * @default 20_000 — the keep-alive of this node's record while a peer from before protocol levels is listed. Such a
 * leafmesh (before 2026-12-05 17:00) counts a record as gone 30 s after the time written in it: a put every 20 s,
 * seen at the next look (5 s), arrives within 25 s, with 5 s left for the two clocks. Measured against a tree of
 * 8875959: at 45-60 s its `status --why` lost the newer node for 15-30 s of every minute. A hub of then keeps a
 * record in mesh-nodes 30 s after its put: a put every 15-20 s keeps it there.
 */
export const keepaliveBesideOlderMs = 20_000;

/** The keep-alive to use: `keepaliveMs`, or at most `keepaliveBesideOlderMs` while a level-0 peer or hub is among `records`. */
export function keepaliveBeside(keepaliveMs: number, records: Iterable<{ protocol?: number }>): number {
  for (const record of records) if (protocolOf(record) === 0) return Math.min(keepaliveMs, keepaliveBesideOlderMs);
  return keepaliveMs;
}

export class PeerVersions {
  readonly #log: Logger;
  /** The level last said per peer: a peer is logged again only when its level changes (an upgrade, a downgrade). */
  readonly #said = new Map<string, number>();
  /** The hubs' levels, from their relay-load records (bus/hub-levels.ts). */
  readonly hubLevels: HubLevels;

  constructor(options: { log: Logger; clock?: Pick<Clock, "monotonic"> }) {
    this.#log = options.log;
    this.hubLevels = new HubLevels({ log: options.log, clock: options.clock });
  }

  /** A peer's record arrived: said once per level it shows that is not this node's, and once more when it matches again. */
  saw(record: NodeRecord): void {
    const level = protocolOf(record);
    const said = this.#said.get(record.node);
    if (said === level) return;
    // Bounded by the directory: one entry per node that ever wrote a record here.
    this.#said.set(record.node, level);
    const skew = protocolSkew({ peer: record.node, level });
    if (skew) this.#log.warn({ peer: skew.peer, protocol: skew.level, upgrade: skew.upgrade }, skew.message);
    else if (said !== undefined) this.#log.info({ peer: record.node, protocol: level }, `node '${record.node}' now runs this node's leafmesh protocol (${level})`);
  }

  /** Listens to the hubs' relay-load records (`fabric-load.<hub>`) on `nats` until `stop`. */
  watchHubs(nats: NatsConnection): void {
    this.hubLevels.watch(nats);
  }

  /** The hubs heard lately, as records of their level (for `keepaliveBeside`). */
  hubs(): { node: string; protocol: number }[] {
    return this.hubLevels.heard();
  }

  /** For status: the hubs heard and the peers among `records` that run another protocol level, hubs first. */
  skews(records: Iterable<NodeRecord>): ProtocolSkew[] {
    return [...this.hubLevels.skews(), ...PeerVersions.skews(records)];
  }

  stop(): void {
    this.hubLevels.stop();
  }

  /** The peers among `records` that run another protocol level, for status. */
  static skews(records: Iterable<NodeRecord>): ProtocolSkew[] {
    const skews: ProtocolSkew[] = [];
    for (const record of records) {
      const skew = protocolSkew({ peer: record.node, level: protocolOf(record) });
      if (skew) skews.push(skew);
    }
    return skews.sort((a, b) => a.peer.localeCompare(b.peer));
  }
}
