/**
 * A client that asks for slow answers: its requests outlast their route's timeout (300 ms) while the same endpoint
 * answers other requests at once, for an HTTP/1.1 backend and an HTTP/2 one. Each timeout was held against the
 * endpoint, as Envoy holds one: four slow requests sent together timed out together, a run of four failures, and a
 * healthy endpoint was ejected. A timeout now counts only when the endpoint answered nothing else while the request
 * waited (a hung endpoint is still ejected: backend-faults.test.ts, "mute" and "stalling").
 */
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer as createHttp2Server, type Http2Server, type ServerHttp2Stream } from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { catalogFeed, prefixRoutes } from "../../test/support/gateway-fixture.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";

describe("a client whose requests outlast their route's timeout", () => {
  /** Slow requests each backend holds (never answered while the test runs), by Service. */
  const held = new Map<string, (() => void)[]>([
    ["plain", []],
    ["rpc", []],
  ]);
  let plain: HttpServer;
  let rpc: Http2Server;
  let gateway: GatewayActor;
  let gatewayPort = 0;

  beforeAll(async () => {
    plain = createHttpServer((request, response) => {
      if (request.url?.includes("/Slow")) return void held.get("plain")!.push(() => response.end("late"));
      response.end("quick");
    });
    rpc = createHttp2Server();
    rpc.on("stream", (stream: ServerHttp2Stream, headers) => {
      stream.on("error", () => undefined);
      if (String(headers[":path"]).includes("/Slow")) return void held.get("rpc")!.push(() => stream.close());
      stream.respond({ ":status": 200 });
      stream.end("quick");
    });
    const ports: number[] = [];
    for (const server of [plain, rpc]) {
      ports.push(await freePort());
      await new Promise<void>((resolve) => server.listen(ports.at(-1), "127.0.0.1", resolve));
    }
    gatewayPort = await freePort();
    const routes = prefixRoutes(
      gatewayPort,
      [
        { name: "plain", portName: "http", port: ports[0], rule: { timeout: "300ms" } },
        { name: "rpc", portName: "grpc", port: ports[1], rule: { timeout: "300ms" } },
      ],
      "198.19.85",
    );
    gateway = createGatewayActor({ feed: catalogFeed(routes), log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: () => undefined });
    await gateway.start();
  }, 30_000);

  afterAll(async () => {
    await gateway?.stop();
    for (const release of [...held.values()].flat()) release();
    plain?.closeAllConnections();
    for (const server of [plain, rpc]) await new Promise((resolve) => server?.close(resolve));
  });

  const status = (path: string) => fetch(`http://127.0.0.1:${gatewayPort}${path}`, { signal: AbortSignal.timeout(5_000) }).then(async (answer) => `${answer.status} ${await answer.text()}`);

  it.each(["plain", "rpc"])("ejects no %s endpoint that answers other requests while four slow ones time out together", async (name) => {
    const slow = Array.from({ length: 4 }, (_, index) => status(`/${name}/Slow${index}`));
    await eventually(() => held.get(name)!.length === 4, 5_000, "the four slow requests at the backend");
    expect(await status(`/${name}/Quick`)).toBe("200 quick");
    expect(await Promise.all(slow)).toEqual(Array(4).fill("504 request timed out\n"));
    expect(gateway.status().ejected).toEqual([]);
    expect(gateway.stats().counters["endpoint ejected"]).toBeUndefined();
    expect(gateway.stats().counters["http timeout not held against an endpoint that answered others"]).toBeGreaterThanOrEqual(4);
    expect(await status(`/${name}/Quick`)).toBe("200 quick");
  });
});
