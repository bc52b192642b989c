/**
 * A server's turn to start again (roles/restart-turn.ts).
 *
 * When its cluster's bucket does not answer at first: the cluster elects a leader just while another server restarts,
 * and the servers see new keys up to a poll (2 s) apart. Asked once and taken for "no lease bucket", the later servers
 * restarted at once, beside the first (trust/hub-cert-cluster.test.ts failed so in two full runs: two hubs 308 and
 * 883 ms apart). They ask again now, and start again without a turn only after `giveUpMs`.
 *
 * When a restart takes longer than the lease TTL (a slow disk replaying JetStream): the turn expired one lease TTL
 * after the server's last renewal, and the next server stopped while the first was still down, two hubs of three at
 * once. The turn is held now until the restarted server gives it back, ready, or for its bound if it never does.
 */
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, describe, expect, it } from "vitest";
import { leaseKeys } from "../bus/subjects.ts";
import { capturedLog } from "../test/support/log-lines.ts";
import { startJetStreamCluster } from "../test/support/jetstream-cluster.ts";
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

const connectTo = async (server: TestServer) => {
  const connection = await connect({ servers: server.clientUrl, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  connections.push(connection);
  return connection;
};

/** One JetStream server, and a connection to it. */
async function serverWithJetStream() {
  const dir = tempDir("leafmesh-restart-turn-");
  const server = await startNatsServer({ name: "hub-y", dir, config: ({ client, monitor }) => `listen: 127.0.0.1:${client}\nhttp: 127.0.0.1:${monitor}\njetstream { store_dir: "${join(dir, "js")}" }\n` });
  servers.push(server);
  return { server, connection: await connectTo(server) };
}

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

describe("a turn to start again while the cluster's restart-turns bucket does not answer", () => {
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

/** Three JetStream servers clustered on loopback, as a hub cluster's nats-servers are. */
async function jetStreamCluster(names: string[]): Promise<TestServer[]> {
  const started = await startJetStreamCluster(names, "turns");
  servers.push(...started);
  return started;
}

/**
 * Moves the leadership of every stream off `server`: a request to a leader that stops (a stream's, or the metadata
 * leader's, which answers account info) waits out its client's 5 s timeout, whichever code asked. What is tested
 * here is the turn, not an election.
 */
async function leadNothing(server: string, connection: NatsConnection): Promise<void> {
  const manager = await jetstreamManager(connection);
  for await (const info of manager.streams.list()) {
    if (info.cluster?.leader !== server) continue;
    await connection.request(`$JS.API.STREAM.LEADER.STEPDOWN.${info.config.name}`, undefined, { timeout: 5_000 });
    await eventually(async () => (await manager.streams.info(info.config.name)).cluster?.leader !== server || undefined, 10_000, `${info.config.name} led by another server`);
  }
}

describe("a restart slower than the lease TTL", () => {
  it("keeps the turn until the restarted server is ready again, then passes it on at once, to one server", { timeout: 60_000 }, async () => {
    const ttlMs = 1_000;
    const cluster = await jetStreamCluster(["n1", "n2", "n3"]);
    // hub-1 runs on a server that leads nothing (the cluster's metadata here, its streams below): see leadNothing.
    const metaLeader = await eventually(async () => (await (await fetch(`http://127.0.0.1:${cluster[0].monitorPort}/jsz`)).json() as { meta_cluster?: { leader?: string } }).meta_cluster?.leader, 10_000, "a metadata leader");
    const own = cluster.find((server) => server.name !== metaLeader)!;
    const [other, third] = cluster.filter((server) => server !== own);
    const common = { key: leaseKeys.hubRestart, who: "hub", ttlMs, replicas: 3 };
    const times: { taken?: number; ready?: number } = {};
    const ownConnection = await connectTo(own);
    const firstTurn = restartTurn({ ...common, connection: ownConnection, holder: "hub-1", log: capturedLog().log });
    firstTurn.wait(() => (times.taken = performance.now()));
    await eventually(() => times.taken, 20_000, "hub-1 to take its turn");
    await leadNothing(own.name, await connectTo(other));
    // Four hubs wait behind it, on the two other servers.
    const waiting = await Promise.all(
      [
        { holder: "hub-2", server: other },
        { holder: "hub-3", server: third },
        { holder: "hub-4", server: other },
        { holder: "hub-5", server: third },
      ].map(async ({ holder, server }) => {
        const { log, lines } = capturedLog();
        const turn = restartTurn({ ...common, connection: await connectTo(server), holder, log });
        const hub = { holder, lines, turn, proceededAt: undefined as number | undefined };
        turn.wait(() => (hub.proceededAt = performance.now()));
        return hub;
      }),
    );

    // hub-1 starts again as runUntilSignal has it do: its watch (and turn) stopped, its connection and its nats-server
    // gone; it stays down four lease TTLs (a slow disk replaying JetStream), then comes back and is ready.
    firstTurn.stop();
    await ownConnection.close();
    await own.stop();
    await new Promise((resolve) => setTimeout(resolve, 4 * ttlMs));
    await own.restart();
    times.ready = performance.now();
    // Before: one of them took the turn one lease TTL after hub-1's last renewal, and started again while hub-1 was down.
    expect(waiting.map((hub) => hub.proceededAt), "a hub started again while hub-1 was still down").toEqual(waiting.map(() => undefined));
    // Each says who holds the turn: while hub-1 was down, or (a loaded machine, where the bucket did not answer within
    // its request timeout with one server of three gone) once it is back and still holds it.
    const holdsLine = (hub: (typeof waiting)[number]) => hub.lines.some((line) => String(line.msg).includes("hub-1 holds the turn"));
    await eventually(() => waiting.every(holdsLine), 20_000, "every waiting hub to say hub-1 holds the turn").catch((error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify(waiting.filter((hub) => !holdsLine(hub)).map((hub) => hub.lines))}`);
    });
    expect(waiting.map((hub) => hub.proceededAt), "a hub took the turn before hub-1 gave it back").toEqual(waiting.map(() => undefined));

    // The restarted process: its server ready, it gives the turn back.
    const again = capturedLog();
    const turnAgain = restartTurn({ ...common, connection: await connectTo(own), holder: "hub-1", log: again.log });
    turnAgain.ready();
    const next = await eventually(() => waiting.find((hub) => hub.proceededAt !== undefined), 20_000, "a hub to take the turn once hub-1 is ready");
    // Given back, not expired: hub-1's claim would have lived ten lease TTLs after it took the turn.
    expect(next.proceededAt! - times.taken!).toBeLessThan(10 * ttlMs);
    // Said once the give-back is answered, which the next hub may hear of first.
    await eventually(() => again.lines.some((line) => String(line.msg).includes("gave back the turn to start again")), 5_000, "hub-1 to say it gave its turn back");
    // The others wait for the next one. With one key taken by create, two hubs woken by one give-back both took it
    // (trust/hub-cert-cluster.test.ts, three processes): two creates that reach a clustered stream of nats-server
    // 2.9.10 within milliseconds both succeed. From one process, as here, that race is rare.
    for (const hub of waiting.filter((hub) => hub !== next)) {
      await eventually(() => hub.proceededAt !== undefined || hub.lines.some((line) => String(line.msg).includes(`${next.holder} holds the turn`)), 10_000, `${hub.holder} to wait for ${next.holder}`);
      expect(hub.proceededAt, `${hub.holder} started again beside ${next.holder}`).toBeUndefined();
    }
    for (const turn of [turnAgain, ...waiting.map((hub) => hub.turn)]) turn.stop();
  });

  it("is held no longer than its bound by a server that never comes back", { timeout: 30_000 }, async () => {
    const { connection: ownConnection, server } = await serverWithJetStream();
    const otherConnection = await connectTo(server);
    const common = { key: leaseKeys.hubRestart, who: "hub", ttlMs: 500, boundMs: 2_000, replicas: 1 };
    const times: { taken?: number; second?: number } = {};
    const firstTurn = restartTurn({ ...common, connection: ownConnection, holder: "hub-1", log: capturedLog().log });
    firstTurn.wait(() => (times.taken = performance.now()));
    await eventually(() => times.taken, 10_000, "hub-1 to take its turn");
    const second = capturedLog();
    const secondTurn = restartTurn({ ...common, connection: otherConnection, holder: "hub-2", log: second.log });
    secondTurn.wait(() => (times.second = performance.now()));
    // hub-1 stops and dies: its next process never says it is ready.
    firstTurn.stop();
    await ownConnection.close();
    await eventually(() => times.second, 10_000, "hub-2 to take the turn once hub-1's expired");
    // Not before the bucket's TTL after hub-1 took it (written just before it heard so), and without a give-back.
    expect(times.second! - times.taken!).toBeGreaterThan(common.boundMs - 200);
    expect(second.lines.some((line) => String(line.msg).includes("hub-1 holds the turn to start again"))).toBe(true);
    secondTurn.stop();
  });
});

