/**
 * `leafmesh hub --replaces hub-3`: a hub of a cluster that is gone for good (its machine lost, the cluster moved)
 * stays a member of the cluster's JetStream group, and the streams keep a replica on it. A hub started in its
 * place joined as a fourth member: the streams stayed on the two that ran and the lost one, and losing one more
 * hub stopped JetStream although two of the three running hubs were up (measured on 2.9.10: the catalog could not
 * be written, "jetstream is not enabled"). The new hub asks the cluster to remove the lost one
 * (`$JS.API.SERVER.REMOVE`, system account); the streams then place their third replica on the hubs that run.
 *
 * Only a hub that does not answer is removed: a server of that name answering `$SYS.REQ.SERVER.PING` (the old
 * one back, or a new hub given that name) is left alone, and said. Once removed, the name is no member and
 * asking again at a later start changes nothing.
 *
 * ```ts
 * await removeDepartedHubs({ servers: [localClientUrl], connectOptions: security.systemConnectOptions, names: ["hub-3"], self: "hub-4", log });
 * ```
 */
import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";

/**
 * Which of `names` answer a ping through the system account, waiting up to `waitMs` for those that do not (a
 * hub that is gone never answers; a running one on a loaded machine may take more than a second: asked for one
 * second, a running hub named by mistake was sent to be removed). Returns as soon as all of them answered.
 */
async function answeringServers(connection: NatsConnection, names: readonly string[], waitMs: number): Promise<Set<string>> {
  const answered = new Set<string>();
  if (names.length === 0) return answered;
  const replies = await connection.requestMany("$SYS.REQ.SERVER.PING", "", { strategy: "timer", maxWait: waitMs });
  for await (const reply of replies) {
    const name = (reply.json<{ server?: { name?: string } }>()).server?.name;
    if (name && names.includes(name)) answered.add(name);
    if (answered.size === new Set(names).size) break;
  }
  return answered;
}

export async function removeDepartedHubs(options: { servers: string[]; connectOptions: Partial<ConnectionOptions>; names: string[]; self: string; log: Logger; timeoutMs?: number }): Promise<void> {
  const { log } = options;
  const timeout = options.timeoutMs ?? 5_000;
  let connection: NatsConnection;
  try {
    connection = await connect({ ...options.connectOptions, servers: options.servers, timeout, reconnect: false, name: "leafmesh hub --replaces" });
  } catch (error) {
    log.error({ err: describeError(error), replaces: options.names }, "--replaces: cannot reach this hub as the system user; the hubs it names were not removed from the cluster");
    return;
  }
  try {
    const answering = await answeringServers(connection, options.names.filter((name) => name !== options.self), timeout);
    for (const name of options.names) {
      if (name === options.self) {
        log.error({ replaces: name }, `--replaces names this hub itself ('${name}'): not removed`);
        continue;
      }
      if (answering.has(name)) {
        log.error({ replaces: name }, `--replaces ${name}: a server named '${name}' answers in this cluster, so it was not removed. Stop it for good first (or give this hub's --replaces only hubs that are gone)`);
        continue;
      }
      const reply = await connection.request("$JS.API.SERVER.REMOVE", JSON.stringify({ peer: name }), { timeout }).catch((error: unknown) => error as Error);
      if (reply instanceof Error) {
        log.error({ replaces: name, err: describeError(reply) }, `--replaces ${name}: the cluster did not answer the removal; it stays a member of the JetStream group (start this hub again to ask again)`);
        continue;
      }
      const body = reply.json<{ success?: boolean; error?: { description?: string } }>();
      if (body.success) {
        log.warn({ replaces: name }, `hub '${name}' removed from the cluster's JetStream group: the streams place their replicas on the hubs that run`);
      } else if (/not (a )?(member|found)|no peer|unknown/i.test(body.error?.description ?? "")) {
        log.info({ replaces: name, reason: body.error?.description }, `--replaces ${name}: no member of the cluster's JetStream group (removed already)`);
      } else {
        log.error({ replaces: name, reason: body.error?.description }, `--replaces ${name}: the cluster refused to remove it: ${body.error?.description ?? JSON.stringify(body)}`);
      }
    }
  } finally {
    await connection.close();
  }
}
