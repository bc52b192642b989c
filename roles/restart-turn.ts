/**
 * One server of a cluster starts again at a time when new keys land on all of them at once (`keys hub-cert` copied to
 * every hub by one command, a site bundle issued again and copied to every server of the site): a lease in the
 * cluster's own lease bucket (the hubs' in domain `hub`, a site's in the site's domain), `hub-restart` or
 * `site-restart`, that a server takes before it restarts and does not give back. The key expires a TTL after the
 * server's last renewal, by which time it is back, and the next one takes it. Restarting together, the three lost
 * their JetStream quorum at once, and a site's agents lost every server of their site at once.
 *
 * ```ts
 * const turn = restartTurn({ connection, holder: "hub-2", key: leaseKeys.hubRestart, who: "hub", ttlMs: 6_000, replicas: 3, log });
 * turn.wait(() => restart());   // at once when no other server of the cluster is restarting
 * ```
 */
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { buckets } from "../bus/subjects.ts";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { KvLease, leaseBucketOptions } from "../services/controller/lease.ts";

export interface RestartTurnOptions {
  connection: NatsConnection;
  /** This server's name in the lease. */
  holder: string;
  /** The lease's key: leaseKeys.hubRestart or leaseKeys.siteRestart. */
  key: string;
  /** What the server is, for the log: "hub", "site server". */
  who: string;
  ttlMs: number;
  replicas: number;
  log: Logger;
  /**
   * @default 30_000 — how long the cluster's lease bucket is asked for again before this server starts again without a
   * turn. It does not answer while the cluster elects a leader, which it does just when another server is restarting:
   * the servers see new keys up to a poll (2 s) apart, and the later ones asked while the first was stopping. Taken
   * at the first failure for "no lease bucket", they restarted with it, two servers of three down at once.
   */
  giveUpMs?: number;
}

export function restartTurn(options: RestartTurnOptions): { wait(proceed: () => void): void; stop(): void } {
  let lease: KvLease | undefined;
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;
  return {
    wait(proceed) {
      options.log.info(`waiting for this ${options.who}'s turn to start again: one ${options.who} of a cluster at a time`);
      const giveUpAt = performance.now() + (options.giveUpMs ?? 30_000);
      let said = false;
      const attempt = () => {
        if (stopped) return;
        // Made as the publisher makes it: a hub without a catalog source has none yet, a site none at all.
        void new Kvm(options.connection)
          .create(buckets.leases, leaseBucketOptions(options.ttlMs, options.replicas))
          .then((kv) => {
            if (stopped) return;
            lease = new KvLease({ kv, key: options.key, holder: options.holder, ttlMs: options.ttlMs, log: options.log });
            lease.onChange((leading) => {
              if (leading && !stopped) proceed();
            });
            lease.start();
          })
          .catch((error: unknown) => {
            if (stopped) return;
            if (performance.now() < giveUpAt) {
              if (!said) options.log.info({ err: describeError(error) }, `the cluster's lease bucket ${buckets.leases} does not answer (another ${options.who} restarting?); asking again every second`);
              said = true;
              retry = setTimeout(attempt, 1_000);
              return;
            }
            // No lease bucket to take turns in: start again now rather than never.
            options.log.warn({ err: describeError(error) }, `cannot take a turn to start again (the cluster's lease bucket ${buckets.leases}); starting again now`);
            proceed();
          });
      };
      attempt();
    },
    stop() {
      stopped = true;
      clearTimeout(retry);
      // A turn taken is not given back: it expires after this server has started again, and the next one takes it then.
      if (lease && !lease.leading) void lease.stop();
    },
  };
}
