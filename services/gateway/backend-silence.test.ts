/**
 * HTTP/2 backends that go quiet, behind routes with a 200 ms timeout, one gateway with the SETTINGS wait at its
 * default (10 s) and a 300 ms PING wait: an endpoint that accepts and never sends SETTINGS, and one whose path
 * goes silent under an open session (a relay on loopback that stops carrying bytes both ways, as a cut cable or a
 * node without power leaves a connection: no FIN, no RST). And a session of its own to the silent endpoint, whose
 * idle time (300 ms) comes before its SETTINGS wait (60 s).
 */
import { createServer as createHttp2Server, type Http2Server, type ServerHttp2Stream } from "node:http2";
import { connect as connectTcp, createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { catalogFeed, prefixRoutes } from "../../test/support/gateway-fixture.ts";
import { freePort } from "../../test/support/ports.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";
import { Http2Sessions } from "./upstream-h2.ts";

describe("HTTP/2 backends that go quiet", () => {
  const sockets = new Set<Socket>();
  const servers: (TcpServer | Http2Server)[] = [];
  /** The relay's client sides whose bytes it no longer carries. */
  const frozen = new Set<Socket>();
  let gateway: GatewayActor;
  let gatewayPort = 0;
  let silentPort = 0;

  const listen = async (server: TcpServer | Http2Server, host = "127.0.0.1") => {
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    return (server.address() as { port: number }).port;
  };

  beforeAll(async () => {
    // Accepts, and never says a word (127.0.0.2; 127.0.0.1 on the same port refuses).
    silentPort = await listen(createTcpServer((socket) => (sockets.add(socket), socket.on("error", () => undefined))), "127.0.0.2");
    const backend = createHttp2Server();
    backend.on("stream", (stream: ServerHttp2Stream) => {
      stream.on("error", () => undefined);
      stream.respond({ ":status": 200 });
      stream.end("alive");
    });
    const backendPort = await listen(backend);
    const relayPort = await listen(
      createTcpServer((client) => {
        const server = connectTcp(backendPort, "127.0.0.1");
        for (const socket of [client, server]) {
          sockets.add(socket);
          socket.on("error", () => undefined);
        }
        client.on("data", (chunk: Buffer) => frozen.has(client) || server.write(chunk));
        server.on("data", (chunk: Buffer) => frozen.has(client) || client.write(chunk));
      }),
    );
    gatewayPort = await freePort();
    const feed = catalogFeed(
      prefixRoutes(
        gatewayPort,
        [
          { name: "waiting", portName: "grpc", port: silentPort, addresses: ["127.0.0.1", "127.0.0.2"], rule: { timeout: "200ms" } },
          { name: "relayed", portName: "grpc", port: relayPort, rule: { timeout: "200ms" } },
        ],
        "198.19.82",
      ),
    );
    gateway = createGatewayActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: () => undefined, backendTimeouts: { http2PingTimeoutMs: 300 } });
    await gateway.start();
  }, 30_000);

  afterAll(async () => {
    await gateway?.stop();
    for (const socket of sockets) socket.destroy();
    for (const server of servers) await new Promise((resolve) => server.close(resolve));
  });

  const status = (path: string) =>
    fetch(`http://127.0.0.1:${gatewayPort}${path}`, { signal: AbortSignal.timeout(5_000) }).then(
      (answer) => answer.status,
      (error: Error) => `no answer: ${error.message}`,
    );

  it("answers 504 at the route's deadline, not once the backend's SETTINGS wait (10 s) is over", async () => {
    expect(await status("/waiting/Get")).toBe(504);
  });

  it("ends a session whose path went silent (its PING unanswered), and answers from a new one", async () => {
    expect(await status("/relayed/Get")).toBe(200);
    for (const socket of sockets) frozen.add(socket);
    // Each request on the silent session waits out its 200 ms; once its PING went unanswered, a new connection.
    const statuses: unknown[] = [];
    for (let index = 0; index < 30 && statuses.at(-1) !== 200; index++) statuses.push(await status(`/relayed/Get${index}`));
    expect(statuses.at(-1), JSON.stringify(statuses)).toBe(200);
    expect(statuses[0]).toBe(504);
    expect(gateway.stats().counters["http2 backend session silent"]).toBe(1);
  });

  it("ends at its idle time a session never ready, when the SETTINGS wait is longer (closed gracefully, it waited for the backend)", async () => {
    const counts: string[] = [];
    const sessions = new Http2Sessions((reason) => counts.push(reason), 300);
    const socket = connectTcp(silentPort, "127.0.0.2");
    await new Promise((resolve) => socket.once("connect", resolve));
    const entry = sessions.add(`127.0.0.2:${silentPort}`, socket, 60_000);
    const outcome = await Promise.race([entry.ready.then(() => "ready", (error: Error) => error.message), new Promise((resolve) => setTimeout(resolve, 3_000, "still waiting after 3 s"))]);
    expect(outcome).toMatch(/no HTTP\/2 SETTINGS from 127\.0\.0\.2:\d+ within 300 ms \(the session's idle time\)/);
    expect(socket.destroyed).toBe(true);
    expect(sessions.size).toBe(0);
    expect(counts).toEqual(["http2 backend session error"]);
  });
});
