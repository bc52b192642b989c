/**
 * A gateway port that cannot be had when it is planned (another process holds it for a while, or a burst of clients
 * took every descriptor) is tried again by itself, sooner at first, then up to every 30 s. Before, only a catalog
 * change re-planned it: on a quiet catalog the port stayed shut for good (test/fd-limit.test.ts met it in a full
 * run: its gateway's ports opened during another test's burst of 600 clients, failed for want of a descriptor, and
 * never served).
 */
import { createServer, type Server } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { catalogFeed, prefixRoutes } from "../../test/support/gateway-fixture.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";

let gateway: GatewayActor | undefined;
const servers: Server[] = [];
afterAll(async () => {
  await gateway?.stop();
  for (const server of servers) server.close();
});

const listen = (server: Server, port: number) => new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));

describe("a gateway port held by another process when planned", () => {
  it("is listened on once it is free, with no catalog change", { timeout: 20_000 }, async () => {
    const backend = createServer((socket) => socket.end("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"));
    servers.push(backend);
    const backendPort = await freePort();
    await listen(backend, backendPort);
    const gatewayPort = await freePort();
    const holder = createServer();
    await listen(holder, gatewayPort);

    const feed = catalogFeed(prefixRoutes(gatewayPort, [{ name: "web", portName: "http", port: backendPort }], "198.19.84"));
    gateway = createGatewayActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: () => undefined, listenRetryMs: 100 });
    await gateway.start();
    const listener = () => gateway!.status().listeners.find((row) => row.port === gatewayPort);
    expect(listener()).toMatchObject({ state: "failed" });
    expect((listener() as { error?: string }).error).toContain("in use");

    // Still held: tried again, and failed again, with no catalog change.
    await eventually(() => (gateway!.status().counters["listener failed"] ?? 0) >= 2, 5_000, "a second try while the port is held");
    await new Promise<void>((resolve) => holder.close(() => resolve()));
    // Before: failed for good, until the catalog changed.
    await eventually(() => listener()?.state === "listening", 10_000, "the gateway listening on the port once it is free");
    const answer = await fetch(`http://127.0.0.1:${gatewayPort}/web/index.html`, { signal: AbortSignal.timeout(5_000) });
    expect(answer.status).toBe(200);
    expect(await answer.text()).toBe("ok\n");
  });
});
