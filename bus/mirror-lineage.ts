/**
 * Whether a node's mirror of a hub bucket (the catalog, the revocation list) still mirrors the stream
 * its upstream holds. A hub that lost its JetStream store (a rebuilt machine, a wiped disk, a new hub
 * under the old name) makes the bucket's stream again and writes it anew, from revision 1. A mirror
 * keeps its origin's sequence numbers and asks only for those after its last: it ignored the new
 * stream until its revisions passed the old ones, then mirrored the rest of it on top of the old
 * values — an agent kept a stale catalog, and missed the next revocations, without a word. Checked
 * against the upstream's stream info (which a node's credentials may read: trust/claims.ts):
 * - the mirror records in its description when the upstream stream it was made from was created;
 *   another creation time upstream is another stream;
 * - a mirror made before that record: an upstream holding fewer revisions than the mirror has
 *   mirrored cannot be the stream it mirrored.
 * When it differs the mirror is made again, and its follower reads it again from the start
 * (followBucket's restart).
 *
 * ```ts
 * await kvm.create(bucket, { mirror, ...(await upstreamRecord(connection, "hub", "KV_mesh-catalog")) });
 * const lineage = watchMirrorLineage({ connection, upstreamDomain: "hub", stream, remake, log, what: "catalog", onRemade: () => follower.restart(...) });
 * lineage.check(); // now (a link came up), besides every 30 s (intervalMs)
 * lineage.stop();
 * ```
 */
import { jetstreamManager, type StreamInfo } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../lib/log.ts";
import { lineageCheckMs } from "./lineage-check.ts";

export interface UpstreamStream {
  /** When the upstream's stream was created (its stream info). */
  created: string;
  lastSeq: number;
  /** When its last revision was written. */
  lastTime?: string;
}

const recordPrefix = "mirrors the upstream stream created ";

/** The mirror's description: when the upstream stream it mirrors was created. */
export function describeUpstream(upstream: UpstreamStream | undefined): string | undefined {
  return upstream ? `${recordPrefix}${upstream.created}` : undefined;
}

/** The mirror's description to make it with, recording its upstream stream (nothing when the upstream does not answer in 2 s). */
export async function upstreamRecord(connection: NatsConnection, upstreamDomain: string, stream: string): Promise<{ description?: string }> {
  const description = describeUpstream(await upstreamStream(connection, upstreamDomain, stream, 2_000));
  return description ? { description } : {};
}

/** The upstream's stream as it is now, or undefined when it cannot be asked (the link is down). */
export async function upstreamStream(connection: NatsConnection, upstreamDomain: string, stream: string, timeoutMs = 5_000): Promise<UpstreamStream | undefined> {
  try {
    const manager = await jetstreamManager(connection, { domain: upstreamDomain, checkAPI: false, timeout: timeoutMs });
    const info = await manager.streams.info(stream);
    return { created: info.created, lastSeq: info.state.last_seq, lastTime: info.state.last_ts };
  } catch {
    return undefined;
  }
}

/** Why `local` no longer mirrors `upstream` (a sentence for the log), or undefined while it does. */
export function lineageBroken(local: Pick<StreamInfo, "config" | "state">, upstream: UpstreamStream): string | undefined {
  const description = local.config.description ?? "";
  const recorded = description.startsWith(recordPrefix) ? description.slice(recordPrefix.length) : undefined;
  if (recorded !== undefined && recorded !== upstream.created) {
    return `the upstream's stream was made again: created ${upstream.created}, where the one this mirror was made from was created ${recorded}`;
  }
  if (upstream.lastSeq < local.state.last_seq) {
    return `the upstream's stream holds revisions up to ${upstream.lastSeq}, fewer than the ${local.state.last_seq} this mirror has mirrored: it was made again`;
  }
  return undefined;
}

/**
 * A hub's store restored from a backup keeps its streams' creation times, with fewer revisions than the
 * mirrors hold; once the restored hub has written as many again, the counts no longer tell it either, and the
 * mirror skipped every revision the restored stream wrote up to its own last (a revocation among them). What
 * does tell: the upstream's message at the mirror's last revision is not the one the mirror holds there.
 * Undefined when they are the same, or the upstream no longer holds that revision (a later write to its key).
 */
async function restoredBeneath(connection: NatsConnection, upstreamDomain: string, stream: string, lastSeq: number, upstream: UpstreamStream): Promise<string | undefined> {
  if (lastSeq === 0 || upstream.lastSeq < lastSeq) return undefined;
  const messageAt = async (domain: string | undefined) => {
    const manager = await jetstreamManager(connection, { ...(domain ? { domain } : {}), checkAPI: false, timeout: 5_000 });
    return manager.streams.getMessage(stream, { seq: lastSeq }).catch(() => null);
  };
  const mine = await messageAt(undefined);
  const theirs = await messageAt(upstreamDomain);
  if (!mine || !theirs) return undefined;
  const same = mine.subject === theirs.subject && Buffer.from(mine.data).equals(Buffer.from(theirs.data));
  return same ? undefined : `the upstream's stream holds another message at revision ${lastSeq} than this mirror does: it was restored from an older copy (or made again) and written since`;
}

/**
 * Compares the local mirror `stream` with its upstream; when the upstream was made again, deletes the
 * mirror, makes it again (`remake`, which records the new upstream) and waits (up to 2 minutes) until
 * it holds what the upstream held. Returns whether it did; false also when the upstream cannot be asked.
 */
interface LineageOptions {
  connection: NatsConnection;
  upstreamDomain: string;
  stream: string;
  /** Makes the mirror again (recording its upstream: upstreamRecord). */
  remake: () => Promise<unknown>;
  log: Logger;
  /** What the mirror holds, for the log: "catalog", "revocation list". */
  what: string;
  /** How often the mirror is checked besides at each `check()`. @default lineageCheckMs */
  intervalMs?: number;
}

async function remakeIfUpstreamRemade(options: LineageOptions & { stopped: () => boolean; seen: { upstream?: string } }): Promise<boolean> {
  const { connection, stream, log } = options;
  // The mirror first, then its upstream: a mirror only lags, so the upstream read after it holds at least
  // as much unless it was made again. Read the other way round, writes in between (a busy catalog) made the
  // mirror look ahead of its upstream, and it was deleted and read again whole.
  const manager = await jetstreamManager(connection);
  const local = await manager.streams.info(stream);
  const upstream = await upstreamStream(connection, options.upstreamDomain, stream);
  if (!upstream) return false;
  // The messages are compared only when the upstream was written since the last check (its last revision and
  // time): a quiet stream costs one stream info per check, as before.
  const mark = `${upstream.lastSeq}@${upstream.lastTime ?? ""}`;
  const written = options.seen.upstream !== mark;
  const reason = lineageBroken(local, upstream) ?? (written ? await restoredBeneath(connection, options.upstreamDomain, stream, local.state.last_seq, upstream) : undefined);
  options.seen.upstream = mark;
  if (!reason || options.stopped()) return false;
  log.warn({ stream, reason }, `the ${options.what}'s upstream stream was made again (a hub that lost its store, or restored it from a backup?): the mirror is made again and read again from it; until then the ${options.what} is used as it was`);
  await manager.streams.delete(stream);
  await options.remake();
  for (let waited = 0; waited < 120_000 && !options.stopped(); waited += 250) {
    if ((await manager.streams.info(stream)).state.last_seq >= upstream.lastSeq) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return true;
}

/**
 * Checks the mirror every `intervalMs` (lineageCheckMs) and at each `check()`, one check at a time; `onRemade` once
 * the mirror was made again and holds what the upstream held (its follower then reads it from the start).
 */
export function watchMirrorLineage(options: LineageOptions & { onRemade: () => void }): { check(): void; stop(): void } {
  let stopped = false;
  let checking = false;
  const seen: { upstream?: string } = {};
  const check = () => {
    if (checking || stopped) return;
    checking = true;
    remakeIfUpstreamRemade({ ...options, stopped: () => stopped, seen })
      .then((remade) => {
        if (remade && !stopped) options.onRemade();
      })
      .catch((error: unknown) => options.log.warn({ err: error, stream: options.stream }, `checking the ${options.what}'s mirror against its upstream failed; trying again later`))
      .finally(() => (checking = false));
  };
  const timer = setInterval(check, options.intervalMs ?? lineageCheckMs);
  timer.unref();
  return {
    check,
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}
