/**
 * The mesh protocol level: one small integer that every leafmesh writes where nodes meet, so that a mesh in the
 * middle of an upgrade (hubs first, then sites, then agents, over weeks; some boxes never) says by name which node
 * runs a leafmesh the others cannot fully understand, and which side must be upgraded.
 *
 * Where it travels: in every node record (`protocol` in bus/node-record.ts). Every node reads every other node's
 * record before it opens a path or a stream to it, and the hubs' status reads them too, so the record is the one
 * place every pair of nodes meets; a stream header or a hub hello would say it again to the same peers. A record
 * without the field is level 0: every leafmesh before the level was written. Hubs write no node record: theirs
 * travels in the relay-load record each hub publishes every 5 s (`fabric-load.<hub>`, roles/hub-load.ts), which
 * every node account imports. Hubs publish that record since 2026-12-04 and their level in it since 2026-12-07
 * (`hubLevelSaidSince`): one without the field is a hub of level 2 or older, counted as level 0, the oldest it may
 * be, so that a node beside it keeps the pace such a hub may need; it is older than any hub that says its level.
 *
 * The level goes up when a change makes an older node misread, ignore or refuse what a newer one sends; each level
 * says below what an older node gets wrong, which the status and log lines repeat. Additions that older nodes skip
 * harmlessly (the schemas, zod's before lib/schema as ours, drop unknown fields of a record or a catalog object) do not raise it.
 *
 * ```ts
 * const skew = protocolSkew({ peer: "edge-b", level: protocolOf(record) });   // undefined when both speak the same
 * if (skew) log.warn({ peer: skew.peer, protocol: skew.level, upgrade: skew.upgrade }, skew.message);
 * ```
 */

/** @default 2 — the level this leafmesh speaks (the last entry of `protocolLevels`). */
export const meshProtocol = 2;

/** The level at which hubs began to say theirs (in `fabric-load.<hub>`): a hub record without it is this level or older. */
export const hubLevelSaidSince = 2;

/** The level from which a node reads a TCP stream's early bytes, sent behind its target header (lib/early-bytes.ts). */
export const earlyBytesProtocol = 2;

/** What an older node does wrong with a node at this level or above (the first entry: level 0, before levels). */
export const protocolLevels: readonly { level: number; since: string; olderNodesGetWrong: string; olderHubsGetWrong?: string }[] = [
  { level: 0, since: "before 2026-12-07", olderNodesGetWrong: "" },
  {
    level: 1,
    since: "2026-12-07",
    olderNodesGetWrong:
      // Both measured between trees of 2026-12-05 (8875959) and 2026-12-07 (docs/operations.md).
      "a leafmesh from before 2026-12-05 17:00 drops a node record 30 s after it was written (newer nodes keep theirs alive every 45-60 s), and one from before 2026-12-06 ignores a Service's internalTrafficPolicy: Local (its clients reach every node's endpoints)",
    // As a hub (it makes the mesh-nodes bucket): measured with a hub of 8875959 (docs/operations.md).
    olderHubsGetWrong:
      "a hub from before 2026-12-05 17:00 keeps node records 30 s where newer nodes put theirs every 45-60 s, so their records lapse from mesh-nodes between puts (this node puts its own every 20 s while it hears such a hub)",
  },
  {
    level: 2,
    since: "2026-12-07",
    olderNodesGetWrong:
      // Seen with the serving end of a tree of 2026-12-07 (39e07c1): "\0\0\0\rfirst request" where the target should read "first request".
      "a leafmesh at protocol 1 or below writes the frame headers (4 bytes each) of a client's first bytes sent with a TLS stream's target header into the target's connection, so newer nodes open its streams as before: a client's first bytes wait one round trip for the answer",
    // Streams run between nodes: a hub carries relayed ones sealed, without reading their headers.
    olderHubsGetWrong: "",
  },
];

/** A record's protocol level; a record written before levels existed has none: level 0. */
export function protocolOf(record: { protocol?: number }): number {
  return record.protocol ?? 0;
}

/** Which kind of node a skew is about: a hub must be upgraded first (hubs, then sites, then agents: docs/operations.md). */
export type ProtocolRole = "node" | "hub";

export interface ProtocolSkew {
  peer: string;
  /** A node (from its node record), or a hub (from its relay-load record); absent: a node. */
  role?: ProtocolRole;
  /** The peer's level. */
  level: number;
  /** Which side must be upgraded: the peer (it is older), or this node (the peer is newer). */
  upgrade: "peer" | "this node";
  /** One line for the log and status: who, which levels, what goes wrong, what to do. */
  message: string;
}

/** How a peer's level stands against this node's (`own`, default `meshProtocol`); undefined when they are the same. */
export function protocolSkew(options: { peer: string; level: number; own?: number; role?: ProtocolRole }): ProtocolSkew | undefined {
  const own = options.own ?? meshProtocol;
  const { peer, level } = options;
  const hub = options.role === "hub";
  if (level === own) return undefined;
  const who = hub ? `hub '${peer}'` : `node '${peer}'`;
  const role = hub ? { role: "hub" as const } : {};
  if (level < own) {
    const wrong = protocolLevels
      .filter((entry) => entry.level > level && entry.level <= own)
      .map((entry) => (hub ? (entry.olderHubsGetWrong ?? entry.olderNodesGetWrong) : entry.olderNodesGetWrong))
      .filter(Boolean)
      .join("; ");
    const runs =
      level > 0
        ? `an older leafmesh (protocol ${level})`
        : hub
          ? `a leafmesh from before hubs said their protocol level (2026-12-07; protocol ${hubLevelSaidSince} or older)`
          : "a leafmesh from before protocol levels (2026-12-07)";
    const upgrade = hub ? `Upgrade hub '${peer}' first: hubs, then sites, then agents` : `Upgrade '${peer}'`;
    return { peer, ...role, level, upgrade: "peer", message: `${who} runs ${runs}; this node speaks protocol ${own}${wrong ? `: ${wrong}` : ""}. ${upgrade}` };
  }
  return {
    peer,
    ...role,
    level,
    upgrade: "this node",
    message: `${who} runs a newer leafmesh (protocol ${level}) than this node (protocol ${own}): this node may misread or ignore what it sends. Upgrade this node`,
  };
}

/**
 * The level in a hub's relay-load record (`fabric-load.<hub>`, roles/hub-load.ts): its `protocol`, or 0 for a record
 * without one (a hub from before levels); undefined for anything that is no such record (not a JSON object, or a
 * `protocol` that is no level): a hub's word is not taken for a level it cannot have.
 */
export function hubRecordLevel(data: Uint8Array): number | undefined {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(data));
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const level = (value as { protocol?: unknown }).protocol;
  if (level === undefined) return 0;
  return typeof level === "number" && Number.isInteger(level) && level >= 0 && level <= 65_535 ? level : undefined;
}
