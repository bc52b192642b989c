/**
 * A server's turn to start again (roles/restart-turn.ts) when its cluster's lease bucket does not answer at first:
 * the cluster elects a leader just while another server restarts, and the servers see new keys up to a poll (2 s)
 * apart. Asked once and taken for "no lease bucket", the later servers restarted at once, beside the first
 * (trust/hub-cert-cluster.test.ts failed so in two full runs: two hubs 308 and 883 ms apart). They ask again now,
 * and start again without a turn only after `giveUpMs`.
 */
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, describe, expect, it } from "vitest";
import { leaseKeys } from "../bus/subjects.ts";
import { capturedLog } from "../test/support/log-lines.ts";
import { eventually } from "../test/support/ports.ts";
import { tempDir } from "../test/support/processes.ts";
import { startNatsServer, type TestServer } from "../test/support/trust-servers.ts";
import { restartTurn } from "./restart-turn.ts";

const servers: TestServer[] = [];
const connections: NatsConnection[] = [];
afterAll(async () => {
  for (const connection of connections) await connection.close();
  for (const server of servers) await server.stop();
});

/** A server without JetStream until `jetstream.on` is set and it is restarted: its lease bucket cannot be had until then. */
async function serverWithoutJetStream() {
  const dir = tempDir("leafmesh-restart-turn-");
  const jetstream = { on: false };
  const server = await startNatsServer({
    name: "hub-x",
    dir,
    config: ({ client, monitor }) => `listen: 127.0.0.1:${client}\nhttp: 127.0.0.1:${monitor}\n${jetstream.on ? `jetstream { store_dir: "${join(dir, "js")}" }\n` : ""}`,
  });
  servers.push(server);
  const connection = await connect({ servers: server.clientUrl, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  connections.push(connection);
  return { server, connection, jetstream };
}

describe("a turn to start again while the cluster's lease bucket does not answer", () => {
  it("is asked for again, and taken once the bucket answers", { timeout: 30_000 }, async () => {
    const { server, connection, jetstream } = await serverWithoutJetStream();
    const { log, lines } = capturedLog();
    const turn = restartTurn({ connection, holder: "hub-1", key: leaseKeys.hubRestart, who: "hub", ttlMs: 3_000, replicas: 1, log, giveUpMs: 20_000 });
    let proceededAt: number | undefined;
    const waitedAt = performance.now();
    turn.wait(() => (proceededAt = performance.now()));
    await eventually(() => lines.some((line) => String(line.msg).includes("does not answer")), 5_000, "the bucket said not to answer");
    // Before: "starting again now", at once.
    expect(proceededAt).toBeUndefined();
    jetstream.on = true;
    await server.restart();
    await eventually(() => proceededAt !== undefined, 15_000, "the turn taken once JetStream answers");
    expect(lines.some((line) => String(line.msg).includes("starting again now"))).toBe(false);
    expect(proceededAt! - waitedAt).toBeGreaterThan(0);
    turn.stop();
  });

  it("is given up on after giveUpMs: the server starts again without one, and says so", { timeout: 30_000 }, async () => {
    const { connection } = await serverWithoutJetStream();
    const { log, lines } = capturedLog();
    const turn = restartTurn({ connection, holder: "hub-2", key: leaseKeys.hubRestart, who: "hub", ttlMs: 3_000, replicas: 1, log, giveUpMs: 1_500 });
    let proceededAt: number | undefined;
    const waitedAt = performance.now();
    turn.wait(() => (proceededAt = performance.now()));
    await eventually(() => proceededAt !== undefined, 10_000, "the server to start again without a turn");
    // Before: at the first failure, milliseconds after it asked.
    expect(proceededAt! - waitedAt).toBeGreaterThanOrEqual(1_400);
    expect(lines.some((line) => line.level === 40 && String(line.msg).includes("starting again now"))).toBe(true);
    turn.stop();
  });
});
