/**
 * Kept-alive backend connections (upstream-http.ts), on real sockets: the idle
 * pool alone (taken most recent first, left when the backend closes or talks
 * out of turn, ended when idle too long or past 32), and through the gateway
 * actor with a backend that closes a kept connection as the next request
 * arrives (the request goes again on a new connection, and succeeds).
 */
import { createServer, connect, type Server, type Socket } from "node:net";
import { request } from "node:http";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogKey } from "../../bus/catalog.ts";
import { silentLogger } from "../../lib/log.ts";
import { backendManifests, certificateSecrets, ingressManifests } from "../../test/support/gateway-manifests.ts";
import { freePort } from "../../test/support/ports.ts";
import { normalizeObject } from "../controller/normalize.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";
import { HttpConnection, IdleConnections } from "./upstream-http.ts";

/** What the backend does with the requests on one connection (by the request's number on it, from 1). */
type Behaviour = "answer" | "reset on the second request" | "talk while idle";

interface Backend {
  server: Server;
  port: number;
  /** Connections accepted, and the sockets still open. */
  accepted: number;
  open: Set<Socket>;
  ended: number;
  behaviour: Behaviour;
}

async function startBackend(): Promise<Backend> {
  const backend = { accepted: 0, open: new Set<Socket>(), ended: 0, behaviour: "answer" } as Backend;
  backend.server = createServer((socket) => {
    backend.accepted++;
    backend.open.add(socket);
    socket.on("close", () => backend.open.delete(socket));
    socket.on("end", () => {
      backend.ended++;
      socket.end();
    });
    socket.on("error", () => undefined);
    let buffered = "";
    let served = 0;
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("latin1");
      let end: number;
      while ((end = buffered.indexOf("\r\n\r\n")) >= 0) {
        buffered = buffered.slice(end + 4);
        served++;
        if (backend.behaviour === "reset on the second request" && served === 2) return void socket.resetAndDestroy();
        socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok");
        if (backend.behaviour === "talk while idle") setTimeout(() => socket.write("HTTP/1.1 200 OK\r\n\r\n"), 50);
      }
    });
  });
  await new Promise<void>((resolve) => backend.server.listen(0, "127.0.0.1", resolve));
  backend.port = (backend.server.address() as { port: number }).port;
  return backend;
}

async function until(check: () => boolean, what: string): Promise<void> {
  // Bounded: 100 polls of 20 ms.
  for (let i = 0; i < 100; i++) {
    if (check()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`not reached within 2 s: ${what}`);
}

describe("the idle pool of backend connections", () => {
  let backend: Backend;
  const counts = new Map<string, number>();
  const count = (reason: string) => counts.set(reason, (counts.get(reason) ?? 0) + 1);
  let pool: IdleConnections;

  beforeAll(async () => {
    backend = await startBackend();
  });
  afterEach(() => {
    pool?.closeAll();
    counts.clear();
  });
  afterAll(async () => {
    for (const socket of backend.open) socket.destroy();
    await new Promise((resolve) => backend.server.close(resolve));
  });

  const dial = async (endpoint = "e") => {
    const socket = connect({ host: "127.0.0.1", port: backend.port });
    await new Promise((resolve) => socket.once("connect", resolve));
    return new HttpConnection(socket, endpoint, pool);
  };

  it("gives back the connection parked last first, and nothing for an endpoint it has none of", async () => {
    pool = new IdleConnections({ count });
    const first = await dial();
    const second = await dial();
    pool.park(first);
    pool.park(second);
    expect(pool.take("other")).toBeUndefined();
    expect(pool.take("e")).toBe(second);
    expect(pool.take("e")).toBe(first);
    expect(pool.take("e")).toBeUndefined();
    expect(pool.size).toBe(0);
    first.stream.destroy();
    second.stream.destroy();
  });

  it("lets go of a connection its backend closed, and of one that talks while idle (counted)", async () => {
    pool = new IdleConnections({ count });
    const closed = await dial();
    pool.park(closed);
    for (const socket of backend.open) socket.end();
    await until(() => pool.size === 0, "the closed connection left the pool");
    expect(pool.take("e")).toBeUndefined();

    const chatty = await dial();
    pool.park(chatty);
    for (const socket of backend.open) socket.write("HTTP/1.1 200 OK\r\n\r\n");
    await until(() => chatty.stream.destroyed, "the chatty connection was closed");
    expect(pool.size).toBe(0);
    expect(counts.get("idle backend connection sent data")).toBe(1);
  });

  it("ends a connection idle too long, and one parked past 32 for its endpoint", async () => {
    pool = new IdleConnections({ count, idleMs: 150 });
    const endedBefore = backend.ended;
    const connections = await Promise.all(Array.from({ length: 33 }, () => dial()));
    for (const connection of connections) pool.park(connection);
    expect(pool.size).toBe(32);
    await until(() => backend.ended === endedBefore + 1, "the 33rd was ended at once");
    await until(() => pool.size === 0 && backend.ended === endedBefore + 33, "the idle ones were ended by the sweep");
    await until(() => connections.every((connection) => connection.stream.destroyed), "every connection closed");
  });

  it("hands a held connection's events to its holder, not to the pool", async () => {
    pool = new IdleConnections({ count });
    const held = await dial();
    const heard: string[] = [];
    held.attach({ data: (chunk) => heard.push(chunk.toString()), end: () => heard.push("end"), close: () => heard.push("close"), error: () => undefined, drain: () => undefined });
    held.stream.write("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    await until(() => heard.join("").includes("ok"), "the answer reached the holder");
    expect(counts.size).toBe(0);
    held.detach();
    held.stream.destroy();
  });
});

/** The gateway actor with the shared manifests' routes, `/api/…` of shop.example.com sent to the backend. */
async function startGateway(backendPort: number): Promise<{ gateway: GatewayActor; port: number }> {
  const port = await freePort();
  const ports = { http: port, https: await freePort(), tls: await freePort(), tcp: await freePort() };
  const feed = new IndexFeed();
  for (const raw of [...ingressManifests("gateway-api", { ports }), ...backendManifests({ api: [{ ip: "127.0.0.1", port: backendPort }] }), ...certificateSecrets()]) {
    const result = normalizeObject(raw);
    if (result.status !== "ok") throw new Error(`fixture object refused: ${JSON.stringify(result)}`);
    feed.reader.apply({ op: "put", key: catalogKey(result.object), object: result.object });
  }
  const gateway = createGatewayActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: () => undefined });
  await gateway.start();
  return { gateway, port };
}

function get(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const sent = request({ host: "127.0.0.1", port, path: "/api/x", headers: { host: "shop.example.com" }, agent: false }, (response) => {
      let body = "";
      response.on("data", (chunk: Buffer) => (body += chunk.toString()));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
      response.on("error", reject);
    });
    sent.on("error", reject);
    sent.end();
  });
}

describe("the gateway with kept-alive backend connections", () => {
  const started: { backend: Backend; gateway: GatewayActor }[] = [];
  /** A backend and a gateway of their own: no connection kept from another test. */
  const fresh = async () => {
    const backend = await startBackend();
    const { gateway, port } = await startGateway(backend.port);
    started.push({ backend, gateway });
    return { backend, gateway, port };
  };

  afterAll(async () => {
    for (const { backend, gateway } of started) {
      await gateway.stop();
      for (const socket of backend.open) socket.destroy();
      await new Promise((resolve) => backend.server.close(resolve));
    }
  });

  it("carries requests one after another on one backend connection", async () => {
    const { backend, port } = await fresh();
    for (let i = 0; i < 20; i++) expect(await get(port)).toEqual({ status: 200, body: "ok" });
    expect(backend.accepted).toBe(1);
  });

  it("sends a request again on a new connection when a kept one is closed as it arrives, and drops one that talks while idle", async () => {
    const { backend, gateway, port } = await fresh();
    backend.behaviour = "reset on the second request";
    expect(await get(port)).toEqual({ status: 200, body: "ok" });
    expect(await get(port)).toEqual({ status: 200, body: "ok" });
    expect(backend.accepted).toBe(2);
    expect(gateway.status().counters["http idle connection was closed"]).toBe(1);

    backend.behaviour = "talk while idle";
    expect(await get(port)).toEqual({ status: 200, body: "ok" });
    await until(() => gateway.status().counters["idle backend connection sent data"] === 1, "the chatty connection was dropped, counted");
    backend.behaviour = "answer";
    expect(await get(port)).toEqual({ status: 200, body: "ok" });
    expect(backend.accepted).toBe(3);
  });
});
