/**
 * The record each node keeps in KV `mesh-nodes` (key = node name): who it is on
 * the libp2p side and how it can be reached. Written by the node's tunnel actor,
 * refreshed every few seconds, and expiring through the bucket's TTL when the node
 * stops refreshing it.
 *
 * ```ts
 * const bytes = encodeNodeRecord({ node: "edge-a", peerId, listen: [...], observed: [...], ... });
 * const record = decodeNodeRecord(bytes); // typed, or throws with the field path
 * ```
 */
import * as z from "../lib/schema/index.ts";

import { jetstreamManager } from "@nats-io/jetstream";
import { millis, nanos, type NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import { buckets } from "./subjects.ts";

/**
 * @default 5_000 — how often a node looks at its record: a changed one (a restart, a new address, a NAT
 * type measured) is put at once, so it is seen within seconds. An unchanged one is not put again until
 * its keep-alive is due.
 */
export const nodeRecordRefreshMs = 5_000;
/**
 * @default 60_000 — how often an unchanged record is put again, so that it does not expire (less by up
 * to a quarter, at random, so that nodes started together do not put together). Every put reaches every
 * node watching the bucket: N nodes cost N² / keep-alive deliveries a second at the hub, where a put
 * every 5 s had cost twelve times as many (docs/limits.md, wall 2).
 */
export const nodeRecordKeepaliveMs = 60_000;
/**
 * @default 150_000 — the `mesh-nodes` bucket's TTL (made by the hubs) and how long a peer's record counts
 * as fresh: a node that stopped disappears after two missed keep-alives and a half, so a busy node whose
 * put fails once (it is tried again at the next look, 5 s later) stays listed.
 */
export const nodeRecordTtlMs = 150_000;

/**
 * @default 65_536 — the largest value the `mesh-nodes` stream stores (its `max_msg_size`). A signed
 * record is about 3 KB (its certificate included); 64 KiB leaves room for a node with many addresses.
 * Unbounded, a stolen node's credentials stored a 100 MB record under its own key: every agent
 * watches the bucket, and a message over 64 MB makes a node's own nats-server cut the agent off as a
 * slow consumer, again at each reconnect while the record lives.
 */
export const maxNodeRecordBytes = 65_536;

/** NAT behaviour from the NAT table of docs/nat.md; "none" = a public address, "unknown" = not measured yet. */
export const natTypes = ["none", "full-cone", "restricted-cone", "port-restricted", "symmetric", "unknown"] as const;
export type NatType = (typeof natTypes)[number];

const hostPortSchema = z.object({ host: z.string().min(1), port: z.number().int().min(0).max(65535) });

/**
 * What a NAT type was concluded from (services/tunnel/nat.ts): the address the observer saw
 * from one local port on each of its two ports (different: a symmetric NAT), and what each
 * filtering probe met at the mapped address ("answered": the node echoed the probe's nonce;
 * "ECONNREFUSED": a router's own RST; "timeout": dropped; "EHOSTUNREACH": ICMP).
 */
export const natEvidenceSchema = z.object({
  mapping: z.tuple([hostPortSchema, hostPortSchema]),
  filtering: z.object({ otherAddress: z.string().max(64), otherPort: z.string().max(64) }).optional(),
});
export type NatEvidence = z.infer<typeof natEvidenceSchema>;

export const nodeRecordSchema = z.object({
  node: z.string().min(1),
  peerId: z.string().min(1),
  /** libp2p multiaddrs the node listens on (LAN addresses). */
  listen: z.array(z.string()),
  /** Addresses observers (hubs, peers) saw this node's connections come from. */
  observed: z.array(hostPortSchema),
  site: z.string().optional(),
  region: z.string().optional(),
  nat: z.enum(natTypes),
  /** What the NAT type was concluded from (peers show it in `leafmesh status --why`); absent before it was measured and from older agents. */
  natEvidence: natEvidenceSchema.optional(),
  /** The node accepts relayed channels over the NATS fabric. */
  relay: z.boolean(),
  /**
   * A short hash of the pre-shared key: lets a peer say "the keys differ" instead
   * of failing with a bare protocol error. Not a secret (a salted hash, 8 bytes).
   */
  pskFingerprint: z.string(),
  /** ISO time of the last refresh. */
  at: z.string(),
  /** The writer's mesh protocol level (bus/protocol.ts); absent from records of a leafmesh before levels (level 0). */
  protocol: z.number().int().min(0).max(65_535).optional(),
});

export type NodeRecord = z.infer<typeof nodeRecordSchema>;

export function encodeNodeRecord(record: NodeRecord): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(nodeRecordSchema.parse(record)));
}

export function decodeNodeRecord(bytes: Uint8Array): NodeRecord {
  return nodeRecordSchema.parse(JSON.parse(new TextDecoder().decode(bytes)));
}

/** A record without its time (`at`), as a string: what tells a changed record from one kept alive. */
export function recordContent({ at: _at, ...content }: NodeRecord): string {
  return JSON.stringify(content);
}

/**
 * The `mesh-nodes` bucket as the hubs keep it: a KV bucket whose stream refuses
 * roll-up headers. Every node may write its own key, and on nats-server 2.9.10 a
 * `Nats-Rollup: all` header on any write purges every other key of the stream
 * (docs/nats-facts.md, "Found from outside"): a stolen node could wipe the whole directory
 * at each refresh. Subject permissions cannot look at headers, so the stream
 * itself says no ("rollup not permitted"). The mesh needs no roll-up there:
 * nodes put their record and let it expire through the bucket's TTL, or delete
 * it (a marker on their own key, not a purge) as they stop cleanly; nothing
 * purges a node's key.
 *
 * It also refuses a value over `maxNodeRecordBytes`: a node may write its own key
 * only, but nothing else bounds what it writes there.
 *
 * nats.js creates every KV stream with roll-ups allowed, and a hub may find a
 * bucket made before these rules, so the stream's config is checked and updated
 * at every start (an update may turn roll-ups off; JetStream keeps the data).
 *
 * ```ts
 * const { kv, changed } = await openNodeRecordsBucket(connection, { replicas: 3, ttlMs: 150_000 });
 * ```
 */
export async function openNodeRecordsBucket(connection: NatsConnection, options: { replicas: number; ttlMs: number }): Promise<{ kv: KV; changed: string[] }> {
  const jsm = await jetstreamManager(connection);
  const stream = `KV_${buckets.nodes}`;
  // nats.js makes a bucket that allows roll-ups: one made just now is set right here, and only an older one is "changed".
  const existed = await jsm.streams.info(stream).then(
    () => true,
    (error: unknown) => {
      if (error instanceof Error && /stream not found/i.test(error.message)) return false;
      throw error;
    },
  );
  const kv = await new Kvm(connection).create(buckets.nodes, { history: 1, ttl: options.ttlMs, replicas: options.replicas, maxValueSize: maxNodeRecordBytes });
  const { config } = await jsm.streams.info(stream);
  const changed: string[] = [];
  if (config.allow_rollup_hdrs) changed.push("allow_rollup_hdrs: true → false");
  if (config.max_msg_size !== maxNodeRecordBytes) changed.push(`max_msg_size: ${config.max_msg_size} → ${maxNodeRecordBytes}`);
  // nats.js opens an existing bucket as it is: a bucket made with another TTL (30 s before records were kept
  // alive every 60 s) would expire records between their keep-alives.
  const maxAge = nanos(options.ttlMs);
  if (config.max_age !== maxAge) changed.push(`max_age: ${millis(config.max_age) / 1000} s → ${options.ttlMs / 1000} s`);
  // JetStream refuses a duplicate window longer than max_age; nats.js makes it 2 minutes, or max_age if shorter.
  if (changed.length > 0) await jsm.streams.update(stream, { ...config, allow_rollup_hdrs: false, max_age: maxAge, duplicate_window: Math.min(nanos(120_000), maxAge), max_msg_size: maxNodeRecordBytes });
  return { kv, changed: existed ? changed : [] };
}
