/**
 * monitorGet / monitorJson against real HTTP servers on loopback: answers, and
 * every way a monitor port can fail to answer (refused, stalled, reset mid-body,
 * not JSON, another status) ends in undefined within the bound, never a throw.
 */
import { createServer, type Server } from "node:http";
import { createServer as createTcpServer, type Server as TcpServer } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "../test/support/ports.ts";
import { monitorGet, monitorJson } from "./monitor-http.ts";

const servers: (Server | TcpServer)[] = [];
afterAll(() => {
  for (const server of servers) server.close();
});

async function listen<T extends Server | TcpServer>(server: T): Promise<number> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as { port: number }).port;
}

describe("GET from a nats-server monitor port without fetch", () => {
  it("returns the status and body, and JSON for a 2xx answer only", async () => {
    const port = await listen(
      createServer((request, response) => {
        if (request.url === "/varz") response.end(JSON.stringify({ server_name: "hub-1", connections: 3 }));
        else if (request.url === "/healthz") response.writeHead(503).end('{"status":"unavailable"}');
        else response.end("not json");
      }),
    );
    expect(await monitorGet(`http://127.0.0.1:${port}/healthz`, 1_000)).toEqual({ status: 503, body: '{"status":"unavailable"}' });
    expect(await monitorJson(`http://127.0.0.1:${port}/varz`, 1_000)).toEqual({ server_name: "hub-1", connections: 3 });
    expect(await monitorJson(`http://127.0.0.1:${port}/healthz`, 1_000)).toBeUndefined();
    expect(await monitorJson(`http://127.0.0.1:${port}/other`, 1_000)).toBeUndefined();
  });

  it("ends in undefined within its bound for a refused port, a stalled server, a reset mid-body and a bad URL", async () => {
    const refused = await freePort();
    expect(await monitorGet(`http://127.0.0.1:${refused}/healthz`, 1_000)).toBeUndefined();

    // Accepts and never answers.
    const stalled = await listen(createTcpServer(() => undefined));
    const started = performance.now();
    expect(await monitorGet(`http://127.0.0.1:${stalled}/healthz`, 300)).toBeUndefined();
    expect(performance.now() - started).toBeLessThan(2_000);

    // A head and half a body, then a reset.
    const cut = await listen(
      createTcpServer((socket) => {
        socket.on("data", () => {
          socket.write("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"leafs\":");
          setTimeout(() => socket.resetAndDestroy(), 20);
        });
      }),
    );
    expect(await monitorJson(`http://127.0.0.1:${cut}/leafz`, 2_000)).toBeUndefined();
    expect(await monitorGet("http://[not an address/healthz", 1_000)).toBeUndefined();
  });
});
