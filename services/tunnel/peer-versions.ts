/**
 * Peers that run another leafmesh, as their node records say (bus/protocol.ts): each is logged once per level it
 * shows, with which side must be upgraded, and listed in the tunnel's status (`leafmesh status`: OTHER LEAFMESH
 * VERSIONS). While a peer from before protocol levels is in the directory, this node keeps its own record alive
 * more often (`keepaliveBeside`), so that such a peer, which drops a record 30 s after it was written, keeps
 * seeing this node between keep-alives.
 *
 * ```ts
 * const versions = new PeerVersions({ log });
 * versions.saw(record);                         // a record arrived (NodeDirectory onRecord)
 * PeerVersions.skews(directory.all());         // for status: the peers on another level, and what to do
 * keepaliveBeside(60_000, directory.all());     // 20_000 while a level-0 peer is listed
 * ```
 */
import type { NodeRecord } from "../../bus/node-record.ts";
import { protocolOf, protocolSkew, type ProtocolSkew } from "../../bus/protocol.ts";

export { meshProtocol, type ProtocolSkew } from "../../bus/protocol.ts";
import type { Logger } from "../../lib/log.ts";

/**
 * @default 20_000 — the keep-alive of this node's record while a peer from before protocol levels is listed. Such a
 * leafmesh (before 2026-12-05 17:00) counts a record as gone 30 s after the time written in it: a put every 20 s,
 * seen at the next look (5 s), arrives within 25 s, with 5 s left for the two clocks. Measured against a tree of
 * 8875959: at 45-60 s its `status --why` lost the newer node for 15-30 s of every minute.
 */
export const keepaliveBesideOlderMs = 20_000;

/** The keep-alive to use: `keepaliveMs`, or at most `keepaliveBesideOlderMs` while a level-0 peer is among `records`. */
export function keepaliveBeside(keepaliveMs: number, records: Iterable<NodeRecord>): number {
  for (const record of records) if (protocolOf(record) === 0) return Math.min(keepaliveMs, keepaliveBesideOlderMs);
  return keepaliveMs;
}

export class PeerVersions {
  readonly #log: Logger;
  /** The level last said per peer: a peer is logged again only when its level changes (an upgrade, a downgrade). */
  readonly #said = new Map<string, number>();

  constructor(options: { log: Logger }) {
    this.#log = options.log;
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
