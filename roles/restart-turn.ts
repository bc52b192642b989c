/**
 * One server of a cluster starts again at a time when new keys land on all of them at once (`keys hub-cert` copied to
 * every hub by one command, a site bundle issued again and copied to every server of the site): a turn, in the
 * cluster's restart-turns bucket (the hubs' in domain `hub`, a site's in the site's domain). A server that wants it
 * writes its claim (`hub-restart.hub-2`); the claim written first holds the turn, the others wait in the order they
 * wrote theirs. The holder stops and starts again in place, and its next process deletes its claim once it is ready
 * again (its nats-server answers /healthz, which on a cluster means JetStream current, and its parts started): the
 * next server goes then, woken by a watch on the claims. A claim lives for the bucket's TTL after its server last
 * renewed it, ten lease TTLs (60 s by default): a server that does not come back (it died while it restarted, its new
 * keys are refused) holds the others that long, no longer.
 *
 * Restarting together, the three lost their JetStream quorum at once, and a site's agents lost every server of their
 * site at once. With a turn that expired one lease TTL (6 s) after it was taken, a server slower than that to come
 * back (a slow disk replaying JetStream) let the next one stop beside it. The order comes from the stream's sequence
 * numbers, not from a compare-and-set on one key: on nats-server 2.9.10 a compare-and-set that expects a revision above
 * 0 is checked by the stream leader alone, before it is proposed, so two that reach a clustered stream within
 * milliseconds both succeed (nats-io/nats-server#4320; docs/nats-facts.md). A create on a key whose last message is a
 * delete marker is one of those, and two hubs woken by one give-back (a delete) both took it.
 *
 * ```ts
 * const turn = restartTurn({ connection, holder: "hub-2", key: leaseKeys.hubRestart, who: "hub", ttlMs: 6_000, replicas: 3, log });
 * turn.ready();                 // at every start, once ready: gives back the turn this server took before it restarted
 * turn.wait(() => restart());   // at once when no other server of the cluster is restarting
 * ```
 */
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, KvWatchInclude, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { buckets, restartTurnClaimKey } from "../bus/subjects.ts";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { within } from "../lib/within.ts";

export interface RestartTurnOptions {
  connection: NatsConnection;
  /** This server's name in the turn. */
  holder: string;
  /** The turn: leaseKeys.hubRestart or leaseKeys.siteRestart. */
  key: string;
  /** What the server is, for the log: "hub", "site server". */
  who: string;
  /** The cluster's lease TTL (`--lease-ttl` of a hub; a site's is the default): the bound below is counted in it. */
  ttlMs: number;
  replicas: number;
  log: Logger;
  /**
   * @default 30_000 — how long the cluster's restart-turns bucket is asked for again before this server starts again
   * without a turn. It does not answer while the cluster elects a leader, which it does just when another server is
   * restarting: the servers see new keys up to a poll (2 s) apart, and the later ones asked while the first was
   * stopping. Taken at the first failure for "no bucket", they restarted with it, two servers of three down at once.
   */
  giveUpMs?: number;
  /**
   * @default ttlMs × 10 (60 s with the default lease TTL) — how long a claim outlives its server's last renewal (the
   * TTL of the restart-turns bucket, set by the server that makes it): the time a server has to stop, start again and
   * be ready (its nats-server is given 20 s to answer /healthz). A server that never comes back holds the others this long.
   */
  boundMs?: number;
}

export interface RestartTurn {
  /** Waits for this server's turn and calls `proceed` once it holds it (the server then stops and starts again in place). */
  wait(proceed: () => void): void;
  /** This server is ready: gives back the turn it took before it started again (nothing when it holds none). */
  ready(): void;
  /** Stops waiting, and withdraws a claim not yet served. A turn held is kept: this server's next process gives it back. */
  stop(): void;
}

/** A server's claim: who, since when it waits, when it took the turn, and its place (the stream sequence of its first write). */
interface Claim {
  holder: string;
  since: string;
  took?: string;
  position: number;
}

/** The restart-turns bucket: a claim lives `boundMs` after it was last written, and only its last value is kept. */
export function restartTurnBucketOptions(boundMs: number, replicas: number) {
  return { history: 1, ttl: boundMs, replicas };
}

const stream = `KV_${buckets.restartTurns}`;
const claimSubject = (key: string) => `$KV.${buckets.restartTurns}.${key}`;

/** The claim stored under `subject`, unless deleted: read from the stream's leader, which holds every write it answered. */
async function claimAt(manager: JetStreamManager, subject: string): Promise<Claim | undefined> {
  const message = await manager.streams.getMessage(stream, { last_by_subj: subject });
  const operation = message?.header?.get("KV-Operation");
  if (!message || operation === "DEL" || operation === "PURGE") return undefined;
  let written: Partial<Claim> = {};
  try {
    written = message.json<Partial<Claim>>();
  } catch {
    // Not written by a server of this cluster: it holds its place all the same, until it expires.
  }
  return {
    holder: typeof written.holder === "string" ? written.holder : subject.slice(subject.lastIndexOf(".") + 1),
    since: typeof written.since === "string" ? written.since : "",
    took: typeof written.took === "string" ? written.took : undefined,
    position: typeof written.position === "number" ? written.position : message.seq,
  };
}

/** Every live claim on the turn `key`, in the order they were first written: the first holds the turn. */
async function claimsInOrder(manager: JetStreamManager, key: string): Promise<Claim[]> {
  const info = await manager.streams.info(stream, { subjects_filter: claimSubject(`${key}.>`) });
  const claims = await Promise.all(Object.keys(info.state.subjects ?? {}).map((subject) => claimAt(manager, subject)));
  return claims.filter((claim) => claim !== undefined).sort((a, b) => a.position - b.position);
}

export function restartTurn(options: RestartTurnOptions): RestartTurn {
  const boundMs = options.boundMs ?? options.ttlMs * 10;
  const boundText = `${Math.round(boundMs / 100) / 10} s`;
  const { log, who, key, holder } = options;
  const ownKey = restartTurnClaimKey(key, holder);
  /** The phase of this process's turn: a process waits once (it ends when it has had its turn). */
  let phase: "idle" | "opening" | "waiting" | "holding" | "stopped" = "idle";
  const timers = new Set<NodeJS.Timeout>();
  const later = (work: () => void, ms: number) => {
    const timer = setTimeout(() => (timers.delete(timer), work()), ms);
    timers.add(timer);
  };
  let bucket: Promise<{ kv: KV; manager: JetStreamManager }> | undefined;
  const openBucket = () =>
    (bucket ??= Promise.all([new Kvm(options.connection).create(buckets.restartTurns, restartTurnBucketOptions(boundMs, options.replicas)), jetstreamManager(options.connection)])
      .then(([kv, manager]) => ({ kv, manager }))
      .catch((error: unknown) => {
        bucket = undefined;
        throw error;
      }));
  /** This server's claim while it waits and holds, renewed meanwhile (until its connection closes as it stops). */
  let claim: { kv: KV; written: Claim; renewal: NodeJS.Timeout } | undefined;
  const write = (kv: KV, written: Omit<Claim, "position"> & { position?: number }) => kv.put(ownKey, new TextEncoder().encode(JSON.stringify(written)));
  const keepClaim = (kv: KV, written: Claim) => {
    const renewal = setInterval(() => {
      if (options.connection.isClosed()) return clearInterval(renewal);
      write(kv, written).catch((error: unknown) => {
        if (!options.connection.isClosed()) log.warn({ err: describeError(error), key: ownKey }, `this ${who}'s claim on the turn to start again was not renewed; it expires ${boundText} after its last renewal`);
      });
    }, Math.max(250, Math.floor(boundMs / 6)));
    renewal.unref();
    claim = { kv, written, renewal };
  };
  let watch: { stop(): void } | undefined;
  let givingBack: Promise<void> = Promise.resolve();

  return {
    wait(proceed) {
      if (phase !== "idle") return;
      phase = "opening";
      log.info(`waiting for this ${who}'s turn to start again: one ${who} of a cluster at a time`);
      const giveUpAt = performance.now() + (options.giveUpMs ?? 30_000);
      const checkMs = Math.max(250, Math.min(5_000, Math.floor(boundMs / 10)));
      let saidNoAnswer = false;
      let holderSaid: string | undefined;
      let busy = false;
      let again = false;

      const take = (kv: KV, written: Claim) => {
        phase = "holding";
        watch?.stop();
        for (const timer of timers) clearTimeout(timer);
        claim!.written = { ...written, took: new Date().toISOString() };
        write(kv, claim!.written).catch((error: unknown) => log.info({ err: describeError(error) }, "the time the turn was taken was not written"));
        log.info({ key: ownKey, bound: boundText }, `this ${who} holds the turn to start again: the other ${who}s of the cluster wait until it is ready again (or ${boundText} after its last renewal, if it does not come back)`);
        proceed();
      };

      /** One look: write this server's claim if it has none, and take the turn if its claim is the first. */
      const attempt = async (kv: KV, manager: JetStreamManager) => {
        if (phase !== "waiting") return;
        if (busy) return void (again = true);
        busy = true;
        try {
          let claims = await claimsInOrder(manager, key);
          if (phase !== "waiting") return;
          const own = claims.find((found) => found.holder === holder);
          if (!own) {
            // Its first claim (or its claim expired, unrenewed): its place is the stream sequence of this write.
            if (claim) clearInterval(claim.renewal);
            const written = { holder, since: new Date().toISOString() };
            keepClaim(kv, { ...written, position: await write(kv, written) });
            claims = await claimsInOrder(manager, key);
            if (phase !== "waiting") return;
          } else if (!claim) keepClaim(kv, own); // its own from before: a turn taken, and new keys again before it was given back
          const first = claims[0];
          if (first?.holder === holder) return take(kv, claim!.written);
          if (first && first.holder !== holderSaid) {
            holderSaid = first.holder;
            const since = first.took ?? first.since;
            log.info({ key, holder: first.holder, since, waiting: claims.length - 1 }, `${first.holder} holds the turn to start again (since ${since}): this ${who} waits until ${first.holder} is ready again`);
          }
        } catch (error) {
          if (!saidNoAnswer) log.info({ err: describeError(error) }, `the cluster's restart-turns bucket ${buckets.restartTurns} does not answer; asking again`);
          saidNoAnswer = true;
        } finally {
          busy = false;
        }
        if (again) {
          again = false;
          return attempt(kv, manager);
        }
      };

      /** Wakes at once when a claim is withdrawn (its server ready); an expiry is silent on 2.9.10, so it also looks every `checkMs`. */
      const watchClaims = (kv: KV, manager: JetStreamManager) => {
        let ended = false;
        watch = { stop: () => void (ended = true) };
        void kv
          .watch({ key: `${key}.>`, include: KvWatchInclude.UpdatesOnly })
          .then(async (entries) => {
            watch = { stop: () => ((ended = true), entries.stop()) };
            if (ended) return entries.stop();
            for await (const entry of entries) if (entry.operation !== "PUT") void attempt(kv, manager);
          })
          .catch((error: unknown) => {
            if (!ended) log.info({ err: describeError(error) }, `cannot watch the turn to start again; looking every ${checkMs / 1000} s`);
          });
        const look = () => {
          if (phase !== "waiting") return;
          void attempt(kv, manager).finally(() => later(look, checkMs));
        };
        look();
      };

      const open = () => {
        if (phase !== "opening") return;
        // Made by the first server that asks: a hub or a site has no other use for it.
        openBucket().then(
          ({ kv, manager }) => {
            if (phase !== "opening") return;
            phase = "waiting";
            watchClaims(kv, manager);
          },
          (error: unknown) => {
            if (phase !== "opening") return;
            if (performance.now() < giveUpAt) {
              if (!saidNoAnswer) log.info({ err: describeError(error) }, `the cluster's restart-turns bucket ${buckets.restartTurns} does not answer (another ${who} restarting?); asking again every second`);
              saidNoAnswer = true;
              return later(open, 1_000);
            }
            // No bucket to take turns in: start again now rather than never.
            phase = "holding";
            log.warn({ err: describeError(error) }, `cannot take a turn to start again (the cluster's restart-turns bucket ${buckets.restartTurns}); starting again now`);
            proceed();
          },
        );
      };
      // After a give-back under way: its delete must not land on the claim this wait writes.
      void givingBack.then(open);
    },

    ready() {
      const deadline = performance.now() + boundMs;
      let said = false;
      const giveBack = async (): Promise<void> => {
        if (phase !== "idle") return;
        try {
          const { kv, manager } = await openBucket();
          const own = await claimAt(manager, claimSubject(ownKey));
          if (!own || phase !== "idle") return;
          await kv.delete(ownKey);
          const took = own.took ?? own.since;
          log.info({ key: ownKey, took }, `ready again: this ${who} gave back the turn to start again it took${took ? ` at ${took}` : ""}; the next ${who} of the cluster may start again now`);
        } catch (error) {
          if (phase !== "idle") return;
          if (performance.now() < deadline) {
            if (!said) log.info({ err: describeError(error) }, `cannot look yet for a turn to start again that this ${who} took and must give back (the cluster's restart-turns bucket ${buckets.restartTurns}); asking again every second`);
            said = true;
            await new Promise((resolve) => later(() => resolve(undefined), 1_000));
            return giveBack();
          }
          log.warn({ err: describeError(error) }, `could not give back the turn to start again: it expires by itself, ${boundText} after it was last renewed`);
        }
      };
      givingBack = giveBack();
    },

    stop() {
      watch?.stop();
      for (const timer of timers) clearTimeout(timer);
      // A turn held stays held: its renewals end with this process's connection, and its next process gives it back.
      if (phase === "holding") return;
      phase = "stopped";
      if (!claim) return;
      // A claim not served yet is withdrawn: left, it would come first and hold the others for its bound.
      clearInterval(claim.renewal);
      void within(claim.kv.delete(ownKey), 1_000).catch((error: unknown) => log.warn({ err: describeError(error), key: ownKey }, `this ${who}'s claim on the turn to start again was not withdrawn; it expires ${boundText} after its last renewal`));
    },
  };
}
