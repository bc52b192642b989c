/**
 * Whether the node's catalog mirror still mirrors the stream its upstream holds. A hub that lost
 * its JetStream store (a rebuilt machine, a wiped disk, a new hub under the old name) makes
 * `KV_mesh-catalog` again and writes the catalog anew, from revision 1. A mirror keeps its origin's
 * sequence numbers and asks only for those after its last: it would ignore the new stream until its
 * revisions passed the old ones, then mirror the rest of it on top of the old catalog — an agent kept
 * a stale catalog without a word. Checked against the upstream's stream info (which a node's
 * credentials may read: trust/claims.ts):
 * - the mirror records in its description when the upstream stream it was made from was created;
 *   another creation time upstream is another stream;
 * - a mirror made before that record: an upstream holding fewer revisions than the mirror has
 *   mirrored cannot be the stream it mirrored.
 *
 * ```ts
 * const upstream = await upstreamCatalog(bus.connection, "hub");
 * const reason = upstream && lineageBroken(localInfo, upstream); // a sentence, or undefined
 * ```
 */
import { jetstreamManager, type StreamInfo } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { buckets } from "../../bus/subjects.ts";

export interface UpstreamCatalog {
  /** When the upstream's `KV_mesh-catalog` stream was created (its stream info). */
  created: string;
  lastSeq: number;
}

const recordPrefix = "mirrors the upstream stream created ";

/** The mirror's description: when the upstream stream it mirrors was created. */
export function describeUpstream(upstream: UpstreamCatalog | undefined): string | undefined {
  return upstream ? `${recordPrefix}${upstream.created}` : undefined;
}

/** The upstream's catalog stream as it is now, or undefined when it cannot be asked (the link is down). */
export async function upstreamCatalog(connection: NatsConnection, upstreamDomain: string, timeoutMs = 5_000): Promise<UpstreamCatalog | undefined> {
  try {
    const manager = await jetstreamManager(connection, { domain: upstreamDomain, checkAPI: false, timeout: timeoutMs });
    const info = await manager.streams.info(`KV_${buckets.catalog}`);
    return { created: info.created, lastSeq: info.state.last_seq };
  } catch {
    return undefined;
  }
}

/** Why `local` no longer mirrors `upstream` (a sentence for the log), or undefined while it does. */
export function lineageBroken(local: Pick<StreamInfo, "config" | "state">, upstream: UpstreamCatalog): string | undefined {
  const description = local.config.description ?? "";
  const recorded = description.startsWith(recordPrefix) ? description.slice(recordPrefix.length) : undefined;
  if (recorded !== undefined && recorded !== upstream.created) {
    return `the upstream's catalog stream was made again: created ${upstream.created}, where the one this mirror was made from was created ${recorded}`;
  }
  if (upstream.lastSeq < local.state.last_seq) {
    return `the upstream's catalog stream holds revisions up to ${upstream.lastSeq}, fewer than the ${local.state.last_seq} this mirror has mirrored: it was made again`;
  }
  return undefined;
}
