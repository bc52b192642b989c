/**
 * A Service deleted (or its port renamed) while connections through it run:
 * under kube-proxy an established connection outlives its Service (conntrack
 * keeps its NAT); here every joined connection was reset the moment the
 * listener closed, so a `kubectl replace --force` or a chart that recreates
 * its Service cut every client's long-lived connection. Now new connections
 * are refused at once and the established ones go on; the agent's stop still
 * resets them (never a clean end that did not happen). A connection still
 * waiting for its turn is reset at once: it was left paused for ever, holding
 * the agent's stop with it. Real loopback sockets,
 * both with the shared TCP listener and with a socket per service port.
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { deleteService, listenerAddress, putService, whoAnswers, type ListenerAddress } from "../../test/support/traffic-catalog.ts";
import { createTrafficActor, type TrafficActor } from "./actor.ts";

/** A client that reads lines: the echo endpoint answers each line it is sent. */
function openClient(address: ListenerAddress) {
  const socket: Socket = connect(address);
  let text = "";
  let ended: string | undefined;
  socket.on("data", (data) => (text += data.toString()));
  socket.on("error", (error: NodeJS.ErrnoException) => (ended ??= error.code ?? "error"));
  socket.on("end", () => (ended ??= "clean end"));
  return {
    socket,
    lines: () => text.split("\n").filter(Boolean),
    ended: () => ended,
  };
}

describe.each([true, false])("a Service deleted under a running connection (shared TCP listener: %s)", (sharedTcpListener) => {
  let port = 0;
  let server: Server;
  const accepted = new Set<Socket>();
  let traffic: TrafficActor | undefined;

  beforeAll(async () => {
    port = await freePort();
    server = createServer((socket) => {
      accepted.add(socket);
      socket.on("close", () => accepted.delete(socket));
      socket.on("error", () => undefined);
      socket.write("hello\n");
      socket.on("data", (data) => socket.write(`echo ${data.toString()}`));
    });
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.2", resolve));
  });
  afterEach(async () => {
    // Bounded: a stop held by a connection left hanging is the failure under test, reported, not waited for.
    const stopping = traffic?.stop();
    traffic = undefined;
    await Promise.race([stopping, new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
  });
  afterAll(async () => {
    for (const socket of accepted) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it("keeps the established connection, refuses new ones at once, and resets the kept one when the agent stops", async () => {
    const feed = new IndexFeed();
    putService(feed, { name: "db", clusterIP: "198.19.0.50", ports: [{ name: "main", protocol: "TCP", port: 5432, targetPort: port }], endpoints: [{ ip: "127.0.0.2" }] });
    traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", sharedTcpListener });
    await traffic.start();
    const address = listenerAddress(traffic.listeners()[0]);
    const client = openClient(address);
    await eventually(() => client.lines()[0] === "hello", 5_000, "the greeting");

    deleteService(feed, "lab", "db");
    await eventually(() => traffic!.listeners().length === 0, 5_000, "the listener to go");
    expect(await whoAnswers(address)).toMatch(/^(ECONNRESET|ECONNREFUSED)$/); // nothing new through a Service that is gone
    client.socket.write("still there?\n");
    await eventually(() => client.lines().includes("echo still there?"), 5_000, "the echo over the kept connection");
    expect(client.ended()).toBeUndefined();
    expect(traffic.stats().connections).toBe(1);

    await traffic.stop();
    traffic = undefined;
    await eventually(() => client.ended() !== undefined, 5_000, "the kept connection to end");
    expect(client.ended()).toBe("ECONNRESET");
  });

  it("resets a connection still waiting for its turn when the Service goes, instead of leaving it hanging (and the agent's stop with it)", async () => {
    const feed = new IndexFeed();
    putService(feed, { name: "db", clusterIP: "198.19.0.51", ports: [{ name: "main", protocol: "TCP", port: 5432, targetPort: port }], endpoints: [{ ip: "127.0.0.2" }] });
    // One place: the first connection takes it, the second waits in line (a paused socket, not yet joined).
    traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", sharedTcpListener, capacity: { maxConnections: 1 } });
    await traffic.start();
    const address = listenerAddress(traffic.listeners()[0]);
    const first = openClient(address);
    await eventually(() => first.lines()[0] === "hello", 5_000, "the first connection joined");
    const waiting = openClient(address);
    await eventually(() => traffic!.stats().admission.waiting === 1, 5_000, "the second connection waiting");

    deleteService(feed, "lab", "db");
    await eventually(() => waiting.ended() !== undefined, 5_000, "the waiting connection to be reset");
    expect(waiting.ended()).toBe("ECONNRESET");
    expect(traffic.stats().counters["tcp reset: listener closed while connecting"]).toBe(1);
    expect(first.ended()).toBeUndefined(); // the joined one goes on

    const stopped = traffic.stop().then(() => "stopped");
    traffic = undefined;
    // It returns: nothing of the listener's holds it (a waiting connection left paused held the server's close).
    expect(await Promise.race([stopped, new Promise((resolve) => setTimeout(() => resolve("still stopping"), 5_000).unref())])).toBe("stopped");
    await eventually(() => first.ended() !== undefined, 5_000, "the kept connection to end");
  });
});
