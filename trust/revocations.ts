/**
 * The revocation list on the fabric: hubs keep the newest signed list in KV
 * `mesh-revocations` (from their keys directory at start, and from `leafmesh
 * keys revoke --hub` at once); every agent and site server mirrors it from its
 * upstream domain into its own, so it is enforced also while the node is cut
 * off, and checks the CA's signature before it believes a word of it.
 *
 * ```ts
 * // hub
 * await publishRevocationList({ connection, signed: readSignedRevocationList(keysDir), caCertPem, replicas, log });
 * // agent
 * const revocations = await followRevocations({ bus, caCertPem, upstreamDomain: "hub", log });
 * revocations.isRevoked(certificateFingerprint(peerCertPem));
 * revocations.onChange((list) => cutStreamsOf(list));
 * ```
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Bus } from "../bus/bus.ts";
import { followBucket, type BucketFollower } from "../bus/kv-follow.ts";
import { upstreamRecord, watchMirrorLineage } from "../bus/mirror-lineage.ts";
import { buckets, hubDomain, nodeInboxPrefix, revocationListKey } from "../bus/subjects.ts";
import { describeError, LeafmeshError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { retryUntilReady } from "../lib/retry.ts";
import { emptyRevocationList, verifyRevocationList, type RevocationList } from "./revocation-list.ts";

/** @default 1 MiB less 4 KiB — the hubs' max_payload (nats/render.ts) less room for the JetStream headers of a KV put. */
export const maxRevocationListBytes = 1_048_576 - 4_096;

/** The hubs' bucket: one key, the signed list; history 1 (only the newest matters). */
export async function openRevocationsBucket(connection: NatsConnection, replicas = 1): Promise<KV> {
  return new Kvm(connection).create(buckets.revocations, { history: 1, replicas });
}

/**
 * Puts `signed` into the bucket unless the bucket already holds a list of the same or a newer
 * version (several hubs, or a hub whose keys copy is older than a pushed revocation).
 * Returns the version the bucket holds afterwards.
 */
export async function publishRevocationList(options: { kv: KV; signed: Uint8Array; caCertPem: string; log: Logger }): Promise<number> {
  const offered = verifyRevocationList(options.signed, options.caCertPem);
  if (options.signed.length > maxRevocationListBytes) {
    throw new LeafmeshError(
      "TRUST_FAILED",
      `the signed revocation list (version ${offered.version}, ${offered.revoked.length} certificates) is ${options.signed.length} bytes, more than the ${maxRevocationListBytes} a hub takes in one message: agents keep the version they hold. Certificates leave the list 30 days after they end (825 days after their issue at the latest); the NATS credentials of revoked nodes stay revoked at the hubs regardless`,
    );
  }
  const current = await options.kv.get(revocationListKey);
  if (current?.value.length) {
    try {
      const held = verifyRevocationList(current.value, options.caCertPem);
      if (held.version >= offered.version) return held.version;
    } catch (error) {
      options.log.warn({ err: describeError(error) }, "the revocations bucket held a list that does not verify; replacing it");
    }
  }
  await options.kv.put(revocationListKey, options.signed);
  options.log.info({ version: offered.version, revoked: offered.revoked.map((entry) => entry.node) }, "revocation list published");
  return offered.version;
}

export interface RevocationWatch {
  /** The list in force (version 0 and empty until one arrives). */
  readonly list: RevocationList;
  isRevoked(certificateFingerprint: string): boolean;
  /** Called with every newer list that verifies. */
  onChange(listener: (list: RevocationList) => void): () => void;
  stop(): Promise<void>;
}

/** Where the node's revocations mirror has its deliveries sent (only its own account imports its inbox prefix). */
export function revocationsDeliverPrefix(node: string): string {
  return `${nodeInboxPrefix(node)}.revocations`;
}

/**
 * Mirrors the revocations bucket from `upstreamDomain` into this node's domain and follows it. A
 * list that does not verify is ignored (logged once): nobody but the CA's holder can revoke, nor
 * undo a revocation, by writing the bucket. A list older than the one in force is ignored too.
 */
export async function followRevocations(options: { bus: Bus; caCertPem: string; upstreamDomain?: string; log: Logger; replicas?: number; signal?: AbortSignal; lineageCheckMs?: number }): Promise<RevocationWatch> {
  const { bus, log } = options;
  let list = emptyRevocationList();
  let revoked = new Set<string>();
  const listeners = new Set<(list: RevocationList) => void>();
  const refusedReasons = new Set<string>();
  const ignoredVersions = new Set<number>();
  const upstreamDomain = options.upstreamDomain ?? hubDomain;
  const stream = `KV_${buckets.revocations}`;
  const external = { api: `$JS.${upstreamDomain}.API`, deliver: revocationsDeliverPrefix(bus.node) };
  const openMirror = async () => {
    try {
      const manager = await jetstreamManager(bus.connection);
      const existing = await manager.streams.info(stream).catch(() => undefined);
      const kept = existing?.config.mirror?.external?.api === external.api;
      if (existing && !kept) await manager.streams.delete(stream);
      // A mirror made here records which upstream stream it was made from (bus/mirror-lineage.ts).
      const record = kept ? {} : await upstreamRecord(bus.connection, upstreamDomain, stream);
      return await new Kvm(bus.connection).create(buckets.revocations, { mirror: { name: buckets.revocations, external }, replicas: options.replicas ?? 1, ...record });
    } catch (cause) {
      throw new LeafmeshError("NATS_SERVER_FAILED", `cannot mirror the revocation list into domain '${bus.node}'`, { cause });
    }
  };
  const kv = await retryUntilReady(openMirror, { what: "the node's JetStream (revocations mirror)", log, signal: options.signal });
  const follower: BucketFollower = followBucket({
    kv,
    log,
    onEntry: (entry) => {
      if (entry.key !== revocationListKey || entry.operation !== "PUT") return;
      let next: RevocationList;
      try {
        next = verifyRevocationList(entry.value, options.caCertPem);
      } catch (error) {
        const reason = describeError(error);
        if (!refusedReasons.has(reason)) log.warn({ reason }, "revocation list refused: its signature is not the mesh CA's");
        refusedReasons.add(reason);
        return;
      }
      if (next.version <= list.version) {
        if (!ignoredVersions.has(next.version)) log.info({ offered: next.version, inForce: list.version }, `revocation list version ${next.version} ignored: version ${list.version} is in force`);
        ignoredVersions.add(next.version);
        return;
      }
      list = next;
      revoked = new Set(next.revoked.map((entry) => entry.certificate));
      log.info({ version: next.version, revoked: next.revoked.map((entry) => entry.node) }, "revocation list in force");
      for (const listener of listeners) listener(next);
    },
  });
  // A hub that lost its store writes the list again from revision 1, which the mirror would ignore: the
  // next revocations would never reach this node. Made again, the mirror is read again from the start;
  // a list no newer than the one in force is ignored as ever.
  const lineage = watchMirrorLineage({
    connection: bus.connection, upstreamDomain, stream, remake: openMirror, log, what: "revocation list", intervalMs: options.lineageCheckMs,
    onRemade: () => follower.restart(() => log.info({ version: list.version }, "revocation list read again from the remade upstream")),
  });
  return {
    get list() {
      return list;
    },
    isRevoked: (fingerprint) => revoked.has(fingerprint),
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    stop: () => {
      lineage.stop();
      return follower.stop();
    },
  };
}
