/**
 * What a hub's `leafmesh status` says of a mesh mid-upgrade (docs/operations.md): the other hubs on another
 * protocol level, heard from their relay-load records (bus/hub-levels.ts, which says each in this hub's log too),
 * and the nodes on another level, read from their records in mesh-nodes when status is asked. Read, not watched:
 * the hub process keeps no copy of the records, as every keep-alive of every node would reach it for a status
 * asked now and then. A record is read for its level only, its signature unchecked: status shows it, nothing
 * acts on it (the nodes themselves check their peers' records before they use them).
 *
 * ```ts
 * const versions = startHubVersions({ connection, kv, log, self: "hub-1" });
 * await versions.status(); // { versions: [...] }, and versionsRead when not every record was read in time
 * versions.stop();
 * ```
 */
import type { NatsConnection } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import { HubLevels } from "../bus/hub-levels.ts";
import { decodeNodeRecord } from "../bus/node-record.ts";
import { protocolOf, protocolSkew, type ProtocolSkew } from "../bus/protocol.ts";
import type { NodeStatus } from "../bus/status.ts";
import type { Clock } from "../lib/clock.ts";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";

/** @default 2_000 — how long a status waits for the node records: `leafmesh status` waits 5 s for the whole answer. */
export const nodeLevelsReadMs = 2_000;

/** The level in a value of mesh-nodes, a record or one signed by its node (node-identity.ts); undefined for anything else. */
export function storedRecordLevel(bytes: Uint8Array): number | undefined {
  try {
    const signed = (JSON.parse(new TextDecoder().decode(bytes)) as { signed?: { record?: unknown } } | null)?.signed?.record;
    return protocolOf(decodeNodeRecord(typeof signed === "string" ? Buffer.from(signed, "base64") : bytes));
  } catch {
    return undefined;
  }
}

/** Every node's level in `kv` (mesh-nodes), read within `timeoutMs`: `read` of `of` records (deletes included) when the time ran out. */
export async function readNodeLevels(kv: KV, timeoutMs = nodeLevelsReadMs): Promise<{ levels: Map<string, number>; read: number; of: number }> {
  const levels = new Map<string, number>();
  // The watch's first entries are the bucket's records; with none it would only wait for a put.
  const of = (await kv.status()).values;
  if (of === 0) return { levels, read: 0, of };
  const iterator = await kv.watch();
  const timer = setTimeout(() => iterator.stop(), timeoutMs);
  let read = 0;
  try {
    // Up to the entry with nothing pending after it: nats.js marks the last record of the start as an update already.
    for await (const entry of iterator) {
      read++;
      const level = entry.operation === "PUT" ? storedRecordLevel(entry.value) : undefined;
      if (level !== undefined) levels.set(entry.key, level);
      if (entry.delta === 0) break;
    }
  } finally {
    clearTimeout(timer);
    iterator.stop();
  }
  return { levels, read, of: Math.max(of, read) };
}

export function startHubVersions(options: { connection: NatsConnection; kv: KV; log: Logger; self: string; clock?: Pick<Clock, "monotonic"> }): {
  status(): Promise<Pick<NodeStatus, "versions" | "versionsRead">>;
  stop(): void;
} {
  const hubs = new HubLevels({ log: options.log, clock: options.clock, self: options.self });
  hubs.watch(options.connection);
  return {
    async status() {
      let nodes: ProtocolSkew[] = [];
      let read: NodeStatus["versionsRead"];
      try {
        const found = await readNodeLevels(options.kv);
        nodes = [...found.levels].map(([peer, level]) => protocolSkew({ peer, level })).filter((skew): skew is ProtocolSkew => skew !== undefined);
        nodes.sort((a, b) => a.peer.localeCompare(b.peer));
        if (found.read < found.of) read = { read: found.read, of: found.of };
      } catch (error) {
        read = { read: 0, of: 0, problem: describeError(error) };
      }
      return { versions: [...hubs.skews(), ...nodes], ...(read ? { versionsRead: read } : {}) };
    },
    stop: () => hubs.stop(),
  };
}
