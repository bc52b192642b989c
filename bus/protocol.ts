/**
 * The mesh protocol level: one small integer that every leafmesh writes where nodes meet, so that a mesh in the
 * middle of an upgrade (hubs first, then sites, then agents, over weeks; some boxes never) says by name which node
 * runs a leafmesh the others cannot fully understand, and which side must be upgraded.
 *
 * Where it travels: in every node record (`protocol` in bus/node-record.ts). Every node reads every other node's
 * record before it opens a path or a stream to it, and the hubs' status reads them too, so the record is the one
 * place every pair of nodes meets; a stream header or a hub hello would say it again to the same peers. A record
 * without the field is level 0: every leafmesh before the level was written.
 *
 * The level goes up when a change makes an older node misread, ignore or refuse what a newer one sends; each level
 * says below what an older node gets wrong, which the status and log lines repeat. Additions that older nodes skip
 * harmlessly (zod drops unknown fields of a record or a catalog object) do not raise it.
 *
 * ```ts
 * const skew = protocolSkew({ peer: "edge-b", level: protocolOf(record) });   // undefined when both speak the same
 * if (skew) log.warn({ peer: skew.peer, protocol: skew.level, upgrade: skew.upgrade }, skew.message);
 * ```
 */

/** @default 2 — the level this leafmesh speaks (the last entry of `protocolLevels`). */
export const meshProtocol = 2;

/** The level from which a node reads a TCP stream's early bytes, sent behind its target header (lib/early-bytes.ts). */
export const earlyBytesProtocol = 2;

/** What an older node does wrong with a node at this level or above (the first entry: level 0, before levels). */
export const protocolLevels: readonly { level: number; since: string; olderNodesGetWrong: string }[] = [
  { level: 0, since: "before 2026-12-07", olderNodesGetWrong: "" },
  {
    level: 1,
    since: "2026-12-07",
    olderNodesGetWrong:
      // Both measured between trees of 2026-12-05 (8875959) and 2026-12-07 (docs/operations.md).
      "a leafmesh from before 2026-12-05 17:00 drops a node record 30 s after it was written (newer nodes keep theirs alive every 45-60 s), and one from before 2026-12-06 ignores a Service's internalTrafficPolicy: Local (its clients reach every node's endpoints)",
  },
  {
    level: 2,
    since: "2026-12-07",
    olderNodesGetWrong:
      // Seen with the serving end of a tree of 2026-12-07 (39e07c1): "\0\0\0\rfirst request" where the target should read "first request".
      "a leafmesh at protocol 1 or below writes the frame headers (4 bytes each) of a client's first bytes sent with a TLS stream's target header into the target's connection, so newer nodes open its streams as before: a client's first bytes wait one round trip for the answer",
  },
];

/** A record's protocol level; a record written before levels existed has none: level 0. */
export function protocolOf(record: { protocol?: number }): number {
  return record.protocol ?? 0;
}

export interface ProtocolSkew {
  peer: string;
  /** The peer's level. */
  level: number;
  /** Which side must be upgraded: the peer (it is older), or this node (the peer is newer). */
  upgrade: "peer" | "this node";
  /** One line for the log and status: who, which levels, what goes wrong, what to do. */
  message: string;
}

/** How a peer's level stands against this node's (`own`, default `meshProtocol`); undefined when they are the same. */
export function protocolSkew(options: { peer: string; level: number; own?: number }): ProtocolSkew | undefined {
  const own = options.own ?? meshProtocol;
  const { peer, level } = options;
  if (level === own) return undefined;
  if (level < own) {
    const wrong = protocolLevels
      .filter((entry) => entry.level > level && entry.level <= own && entry.olderNodesGetWrong)
      .map((entry) => entry.olderNodesGetWrong)
      .join("; ");
    const runs = level === 0 ? "a leafmesh from before protocol levels (2026-12-07)" : `an older leafmesh (protocol ${level})`;
    return { peer, level, upgrade: "peer", message: `node '${peer}' runs ${runs}; this node speaks protocol ${own}${wrong ? `: ${wrong}` : ""}. Upgrade '${peer}'` };
  }
  return {
    peer,
    level,
    upgrade: "this node",
    message: `node '${peer}' runs a newer leafmesh (protocol ${level}) than this node (protocol ${own}): this node may misread or ignore what it sends. Upgrade this node`,
  };
}
