/**
 * An answer that streams (server-sent events, a long download) reaches the
 * client piece by piece through the gateway: nothing of it is held back until
 * the backend ends it. HTTP/2 streams a client resets as it opens them (a rapid
 * reset) are counted as such, not as requests on a connection without routes.
 */
import { createServer, request, type Server, type ServerResponse } from "node:http";
import { connect as connectHttp2, constants as http2 } from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogKey } from "../../bus/catalog.ts";
import { silentLogger } from "../../lib/log.ts";
import { freePort } from "../../test/support/ports.ts";
import { normalizeObject } from "../controller/normalize.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";

describe("the gateway with an answer that streams", () => {
  let backend: Server;
  let gateway: GatewayActor;
  let port = 0;
  let streaming: ServerResponse | undefined;

  beforeAll(async () => {
    backend = createServer((_request, response) => {
      response.writeHead(200, { "content-type": "text/event-stream" });
      response.write("data: first\n\n");
      streaming = response; // the rest comes when the test says
    });
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    const backendPort = (backend.address() as { port: number }).port;
    port = await freePort();
    const raws = [
      { apiVersion: "v1", kind: "Service", metadata: { name: "events", namespace: "shop" }, spec: { clusterIP: "198.19.78.1", ports: [{ name: "main", port: 80, protocol: "TCP" }] } },
      {
        apiVersion: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        metadata: { name: "events-0", namespace: "shop", labels: { "kubernetes.io/service-name": "events" } },
        addressType: "IPv4",
        endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true } }],
        ports: [{ name: "main", port: backendPort, protocol: "TCP" }],
      },
      { apiVersion: "gateway.networking.k8s.io/v1", kind: "Gateway", metadata: { name: "edge", namespace: "shop" }, spec: { gatewayClassName: "leafmesh", listeners: [{ name: "http", port, protocol: "HTTP" }] } },
      { apiVersion: "gateway.networking.k8s.io/v1", kind: "HTTPRoute", metadata: { name: "events", namespace: "shop" }, spec: { parentRefs: [{ name: "edge" }], rules: [{ backendRefs: [{ name: "events", port: 80 }] }] } },
    ];
    const feed = new IndexFeed();
    for (const raw of raws) {
      const result = normalizeObject(raw);
      if (result.status !== "ok") throw new Error(`fixture object refused: ${JSON.stringify(result)}`);
      feed.reader.apply({ op: "put", key: catalogKey(result.object), object: result.object });
    }
    gateway = createGatewayActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: () => undefined });
    await gateway.start();
  });

  afterAll(async () => {
    await gateway?.stop();
    backend?.closeAllConnections();
    await new Promise((resolve) => backend?.close(resolve));
  });

  it("passes each piece on as it comes, before the backend ends the answer", async () => {
    const pieces: string[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      const outgoing = request({ host: "127.0.0.1", port, path: "/events", headers: { host: "any.example.com" } }, (response) => {
        expect(response.statusCode).toBe(200);
        response.setEncoding("utf8");
        response.on("data", (piece: string) => {
          pieces.push(piece);
          // The first piece arrived while the backend still holds the answer open: now the rest.
          if (pieces.length === 1) {
            streaming!.write("data: second\n\n");
            streaming!.end();
          }
        });
        response.on("end", resolve);
      });
      outgoing.on("error", reject);
      outgoing.end();
    });
    await ended;
    expect(pieces[0]).toBe("data: first\n\n");
    expect(pieces.join("")).toBe("data: first\n\ndata: second\n\n");
  });

  it("takes HTTP/2 streams the client resets as it opens them for resets, not for a connection without routes", async () => {
    const session = connectHttp2(`http://127.0.0.1:${port}`);
    session.on("error", () => undefined);
    await new Promise((resolve) => session.once("connect", resolve));
    for (let index = 0; index < 50; index++) {
      const stream = session.request({ ":path": "/events", host: "any.example.com" });
      stream.on("error", () => undefined);
      stream.close(http2.NGHTTP2_CANCEL);
    }
    // The session serves on: a request that is not reset is answered.
    const status = await new Promise<number>((resolve, reject) => {
      const stream = session.request({ ":path": "/events", host: "any.example.com" });
      stream.on("response", (headers) => resolve(Number(headers[":status"])));
      stream.on("error", reject);
    });
    expect(status).toBe(200);
    session.destroy();
    const counters = gateway.stats().counters;
    expect(counters["http connection without routes"]).toBeUndefined();
    expect(counters["http2 stream reset by the client before its request"]).toBeGreaterThan(0);
  });
});
