/**
 * HTTP/2 endpoints that leave the catalog while the gateway is making their sessions: each accepts and has not sent
 * its SETTINGS yet (a server starting, a slow path) when a rollout replaces it (127.0.0.2) with 127.0.0.1. One
 * exits then (its connection ends with a FIN), as a rollout's old pod does; one never closes its side (hung). The
 * session was closed gracefully, which Node ends only when the backend closes its side: the first's then failed as
 * if the endpoint "did not speak HTTP/2" (a warning, counted, held against the endpoint), the second's never ended,
 * and its request waited out the route's timeout (504). Now the session is ended at once, the log says the
 * endpoint left, and the request goes to the new endpoint.
 */
import { createServer as createHttp2Server, type Http2Server, type ServerHttp2Stream } from "node:http2";
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { catalogKey } from "../../bus/catalog.ts";
import type { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogFeed, prefixRoutes, type PrefixBackend } from "../../test/support/gateway-fixture.ts";
import { capturedLog } from "../../test/support/log-lines.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { normalizeObject } from "../controller/normalize.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";

describe("HTTP/2 endpoints that leave the catalog while their sessions are being made", () => {
  const { log, lines } = capturedLog("info");
  /** The connections each leaving endpoint accepted, by Service. */
  const accepted = new Map<string, Set<Socket>>();
  const servers: (TcpServer | Http2Server)[] = [];
  let gateway: GatewayActor;
  let gatewayPort = 0;
  let feed: IndexFeed;
  const backends: PrefixBackend[] = [];

  beforeAll(async () => {
    for (const name of ["leaving", "leaving-hung"]) {
      const port = await freePort();
      const sockets = new Set<Socket>();
      accepted.set(name, sockets);
      const slow = createTcpServer((socket) => {
        sockets.add(socket);
        socket.on("error", () => undefined);
      });
      const good = createHttp2Server();
      good.on("stream", (stream: ServerHttp2Stream) => {
        stream.on("error", () => undefined);
        stream.respond({ ":status": 200 });
        stream.end("from the new endpoint");
      });
      for (const [server, host] of [[slow, "127.0.0.2"], [good, "127.0.0.1"]] as const) {
        servers.push(server);
        await new Promise<void>((resolve) => server.listen(port, host, resolve));
      }
      backends.push({ name, portName: "grpc", port, addresses: ["127.0.0.2"], rule: { timeout: "4s" } });
    }
    gatewayPort = await freePort();
    feed = catalogFeed(prefixRoutes(gatewayPort, backends, "198.19.84"));
    gateway = createGatewayActor({ feed, log, node: "edge-a", listenHost: "127.0.0.1", access: () => undefined });
    await gateway.start();
  }, 30_000);

  afterAll(async () => {
    await gateway?.stop();
    for (const sockets of accepted.values()) for (const socket of sockets) socket.destroy();
    for (const server of servers) await new Promise((resolve) => server.close(resolve));
  });

  it("says each endpoint left the catalog (not that it did not speak HTTP/2), holds nothing against it, and answers from the new one", async () => {
    const answers = backends.map(({ name }) => fetch(`http://127.0.0.1:${gatewayPort}/${name}/Get`, { signal: AbortSignal.timeout(8_000) }));
    await eventually(() => [...accepted.values()].every((sockets) => sockets.size === 1), 5_000, "the gateway's connections to 127.0.0.2");
    // The rollout: 127.0.0.2 replaced by 127.0.0.1 (the EndpointSlices rewritten), before 127.0.0.2 sent its SETTINGS.
    const moved = prefixRoutes(gatewayPort, backends.map((backend) => ({ ...backend, addresses: ["127.0.0.1"] })), "198.19.84");
    const keys: string[] = [];
    for (const slice of moved.filter((object) => (object as { kind: string }).kind === "EndpointSlice")) {
      const result = normalizeObject(slice);
      if (result.status !== "ok") throw new Error(JSON.stringify(result));
      feed.reader.apply({ op: "put", key: catalogKey(result.object), object: result.object });
      keys.push(catalogKey(result.object));
    }
    feed.notify(keys);
    await gateway.settled();
    // The pod that left exits (a FIN), as a rollout's old pod does; the hung one never closes its side.
    for (const socket of accepted.get("leaving")!) socket.end();
    for (const answer of answers) {
      const response = await answer;
      expect(`${response.status} ${await response.text()}`).toBe("200 from the new endpoint");
    }
    await new Promise((resolve) => setImmediate(resolve));
    for (const { port } of backends) {
      const said = lines.filter((line) => line.endpoint === `127.0.0.2:${port}`);
      expect(said.map((line) => [line.level, line.msg])).toEqual([[30, expect.stringMatching(/^the endpoint left the catalog while its HTTP\/2 session was being made/)]]);
    }
    expect(gateway.stats().counters["http2 backend did not speak HTTP/2"]).toBeUndefined();
    expect(gateway.stats().counters["http2 session abandoned: endpoint left the catalog"]).toBe(2);
    expect(gateway.status().ejected).toEqual([]);
  });
});
