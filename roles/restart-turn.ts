/**
 * One hub of a cluster starts again at a time when new keys land on all of them at once (`keys hub-cert`, copied to
 * every hub by one command): a lease in the hubs' lease bucket, `hub-restart`, that a hub takes before it restarts
 * and does not give back. The key expires a TTL after the hub's last renewal, by which time the hub is back, and the
 * next one takes it. Restarting together, the three lost their JetStream quorum at once.
 *
 * ```ts
 * const turn = restartTurn({ connection, holder: "hub-2", ttlMs: 6_000, replicas: 3, log });
 * turn.wait(() => restart());   // at once when no other hub is restarting
 * ```
 */
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { buckets, leaseKeys } from "../bus/subjects.ts";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { KvLease, leaseBucketOptions } from "../services/controller/lease.ts";

export function restartTurn(options: { connection: NatsConnection; holder: string; ttlMs: number; replicas: number; log: Logger }): { wait(proceed: () => void): void; stop(): void } {
  let lease: KvLease | undefined;
  let stopped = false;
  return {
    wait(proceed) {
      options.log.info("waiting for this hub's turn to start again: one hub of a cluster at a time");
      // Made as the publisher makes it: a hub without a catalog source has none yet.
      void new Kvm(options.connection)
        .create(buckets.leases, leaseBucketOptions(options.ttlMs, options.replicas))
        .then((kv) => {
          if (stopped) return;
          lease = new KvLease({ kv, key: leaseKeys.hubRestart, holder: options.holder, ttlMs: options.ttlMs, log: options.log });
          lease.onChange((leading) => {
            if (leading && !stopped) proceed();
          });
          lease.start();
        })
        .catch((error: unknown) => {
          // No lease bucket to take turns in: start again now rather than never.
          options.log.warn({ err: describeError(error) }, "cannot take a turn to start again (the hubs' lease bucket); starting again now");
          if (!stopped) proceed();
        });
    },
    stop() {
      stopped = true;
      // A turn taken is not given back: it expires after this hub has started again, and the next hub takes it then.
      if (lease && !lease.leading) void lease.stop();
    },
  };
}
