/**
 * Issue 19 for every kind of backend the gateway serves: a bad endpoint is ejected and requests keep succeeding on
 * the good one. Each Service here has a good endpoint (127.0.0.1) and a bad one (127.0.0.2, same port), real
 * servers on loopback, behind one gateway: an h2c endpoint that accepts and never sends SETTINGS, one that resets
 * every stream, one that refuses every stream (REFUSED_STREAM), an HTTP/1.1 endpoint that accepts and closes every
 * connection unanswered, one that refuses connections; an h2c backend whose connection closes mid-answer, which must
 * reach the client as a cut; and an EndpointSlice that changes under a stream in flight.
 */
import { connect, constants, createServer as createHttp2Server, type ClientHttp2Session, type Http2Server, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { connect as connectTcp, createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogKey } from "../../bus/catalog.ts";
import { capturedLog } from "../../test/support/log-lines.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { normalizeObject } from "../controller/normalize.ts";
import { Registry } from "prom-client";
import { createGatewayActor, type GatewayActor } from "./actor.ts";
import { registerGatewayMetrics } from "./metrics.ts";
import type { AccessEntry } from "./http-proxy.ts";

const namespace = "shop";
type Fault = "silent" | "reset" | "refuse" | "close" | "dead" | "stall";
/** One Service per case: its route's path prefix, its port's name (grpc-* speaks h2c), the bad endpoint's fault, the route's retries and timeout. */
interface Case {
  name: string;
  portName: string;
  fault?: Fault;
  retryOn?: string;
  timeout?: string;
  perTryTimeout?: string;
}
const cases: Case[] = [
  { name: "silent", portName: "grpc-api", fault: "silent" },
  { name: "resetting", portName: "grpc-api", fault: "reset", retryOn: "reset" },
  // Istio's default retryOn when a route names attempts only: connect-failure, refused-stream, 503.
  { name: "refusing", portName: "grpc-api", fault: "refuse", retryOn: "" },
  { name: "closing", portName: "http", fault: "close", retryOn: "reset" },
  { name: "cut", portName: "grpc-api" },
  // The bad endpoint is dead (nothing listens: refused); later the slice changes (the last test).
  { name: "moving", portName: "grpc-api", fault: "dead" },
  // Endpoints that take requests and never answer (a hung process: the kernel still accepts for it).
  { name: "mute", portName: "http", fault: "silent", retryOn: "5xx", perTryTimeout: "200ms" },
  { name: "stalling", portName: "grpc-api", fault: "stall", timeout: "200ms" },
  // A backend that pushes (PUSH_PROMISE) 100 kB streams with each answer, if let.
  { name: "pushing", portName: "grpc-api" },
  // A backend that allows one stream at a time (SETTINGS_MAX_CONCURRENT_STREAMS 1).
  { name: "limited", portName: "grpc-api" },
];

function slice(name: string, portName: string, port: number | undefined, addresses: string[]): object {
  return { apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice", metadata: { name: `${name}-0`, namespace, labels: { "kubernetes.io/service-name": name } }, addressType: "IPv4", endpoints: addresses.map((address) => ({ addresses: [address], conditions: { ready: true } })), ports: [{ name: portName, port, protocol: "TCP" }] };
}

function manifests(gatewayPort: number, ports: Map<string, number>, list: Case[] = cases): object[] {
  const objects: object[] = [{ apiVersion: "networking.istio.io/v1beta1", kind: "Gateway", metadata: { name: "edge", namespace }, spec: { selector: {}, servers: [{ port: { number: gatewayPort, name: "http", protocol: "HTTP" }, hosts: ["*"] }] } }];
  const http: object[] = [];
  for (const [index, { name, portName, fault, retryOn, timeout, perTryTimeout }] of list.entries()) {
    const addresses = fault ? ["127.0.0.1", "127.0.0.2"] : ["127.0.0.1"];
    objects.push(
      { apiVersion: "v1", kind: "Service", metadata: { name, namespace }, spec: { clusterIP: `198.19.80.${10 + index}`, ports: [{ port: 80, protocol: "TCP", name: portName }] } },
      slice(name, portName, ports.get(name), addresses),
    );
    http.push({ match: [{ uri: { prefix: `/${name}/` } }], ...(timeout ? { timeout } : {}), ...(retryOn === undefined ? {} : { retries: { attempts: 2, ...(retryOn ? { retryOn } : {}), ...(perTryTimeout ? { perTryTimeout } : {}) } }), route: [{ destination: { host: name, port: { number: 80 } } }] });
  }
  objects.push({ apiVersion: "networking.istio.io/v1beta1", kind: "VirtualService", metadata: { name: "api", namespace }, spec: { gateways: ["edge"], hosts: ["*"], http } });
  return objects;
}

/**
 * A good h2c backend: each stream answered with its path and grpc-status 0; `/cut/Die` gets a message, then the
 * connection closes under it; `.../Slow` a message, and the rest once `slow` settles.
 */
function goodHttp2(slow?: Promise<void>, maxConcurrentStreams?: number): Http2Server {
  const server = createHttp2Server({ settings: { maxConcurrentStreams } });
  const sockets = new Map<number, Socket>();
  server.on("connection", (socket: Socket) => sockets.set(socket.remotePort!, socket));
  server.on("stream", (stream: ServerHttp2Stream, headers) => {
    stream.on("error", () => undefined);
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    if (String(headers[":path"]).startsWith("/cut/Die")) {
      stream.write("first message");
      // The server's connection ends (a process that exits closes its sockets with a FIN), no GOAWAY, no END_STREAM.
      setTimeout(() => sockets.get(stream.session!.socket.remotePort!)?.destroy(), 30);
      return;
    }
    if (String(headers[":path"]).startsWith("/pushing/") && stream.pushAllowed) {
      for (let index = 0; index < 50; index++) {
        stream.pushStream({ ":path": `/pushed/${index}` }, (error, pushed) => {
          if (error) return;
          pushed.on("error", () => undefined);
          pushed.respond({ ":status": 200 });
          pushed.end(Buffer.alloc(100_000));
        });
      }
    }
    if (slow && String(headers[":path"]).endsWith("/Slow")) {
      stream.write("first message, ");
      return void slow.then(() => stream.end("last message"));
    }
    stream.end(`good ${headers[":path"]}`);
  });
  return server;
}

function badEndpoint(fault: Exclude<Fault, "dead">, held: Set<Socket>): TcpServer | Http2Server {
  if (fault === "silent" || fault === "close") {
    return createTcpServer((socket) => {
      socket.on("error", () => undefined);
      if (fault === "close") socket.destroy();
      else held.add(socket);
    });
  }
  const server = createHttp2Server();
  server.on("stream", (stream: ServerHttp2Stream) => {
    stream.on("error", () => undefined);
    if (fault !== "stall") stream.close(fault === "reset" ? constants.NGHTTP2_INTERNAL_ERROR : constants.NGHTTP2_REFUSED_STREAM);
  });
  return server;
}

describe("bad endpoints of every kind of HTTP backend", () => {
  const servers: (HttpServer | Http2Server | TcpServer)[] = [];
  const held = new Set<Socket>();
  const access: AccessEntry[] = [];
  const { log, lines } = capturedLog("warn");
  const ports = new Map<string, number>();
  let gateway: GatewayActor;
  let gatewayPort = 0;
  let client: ClientHttp2Session;
  let feed: IndexFeed;
  /** Per Service, what lets its slow answers end. */
  const slowGates = new Map<string, { open: Promise<void>; release: () => void }>();
  const slowGate = (name: string) => {
    let release = () => undefined as void;
    const open = new Promise<void>((resolve) => (release = resolve));
    slowGates.set(name, { open, release });
    return open;
  };
  const releaseSlow = (name: string) => slowGates.get(name)!.release();
  /** The sessions open at the moving Service's first endpoint (127.0.0.1). */
  const movingSessions = new Set<ServerHttp2Session>();
  /** Streams open at the limited Service's backend. */
  let limitedStreams = 0;

  const listen = async (server: HttpServer | Http2Server | TcpServer, host: string, port: number) => {
    servers.push(server);
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, host, () => resolve()));
  };

  beforeAll(async () => {
    for (const { name, portName, fault } of cases) {
      const port = await freePort();
      ports.set(name, port);
      const good = portName === "http" ? createHttpServer((request, response) => response.end(`good ${request.url}`)) : goodHttp2(slowGate(name), name === "limited" ? 1 : undefined);
      if (name === "limited") good.on("stream", (stream: ServerHttp2Stream) => (limitedStreams++, stream.once("close", () => limitedStreams--)));
      if (name === "moving") good.on("session", (session: ServerHttp2Session) => (movingSessions.add(session), session.once("close", () => movingSessions.delete(session))));
      await listen(good, "127.0.0.1", port);
      if (fault && fault !== "dead") await listen(badEndpoint(fault, held), "127.0.0.2", port);
    }
    gatewayPort = await freePort();
    feed = new IndexFeed();
    for (const object of manifests(gatewayPort, ports)) {
      const result = normalizeObject(object);
      if (result.status !== "ok") throw new Error(`fixture object refused: ${JSON.stringify(result)}`);
      feed.reader.apply({ op: "put", key: catalogKey(result.object), object: result.object });
    }
    // SETTINGS awaited 300 ms instead of 10 s: the silent endpoint's failures come quickly. An ejection lasts 2 min:
    // an endpoint taken back in the last test was taken back for leaving the catalog, not for its time being up.
    gateway = createGatewayActor({ feed, log, node: "edge-a", listenHost: "127.0.0.1", access: (entry) => entry.kind === "http" && access.push(entry), backendTimeouts: { http2SettingsTimeoutMs: 300 }, outliers: { baseEjectionMs: 120_000 } });
    await gateway.start();
    expect(gateway.status().refused).toEqual([]);
    client = connect(`http://127.0.0.1:${gatewayPort}`);
    client.on("error", () => undefined);
  }, 30_000);

  afterAll(async () => {
    client?.close();
    await gateway?.stop();
    for (const socket of held) socket.destroy();
    for (const server of servers) {
      (server as HttpServer).closeAllConnections?.();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  /** One request through the gateway over HTTP/2: its status, body, how it ended, and its access-log line. */
  async function request(path: string) {
    const stream = client.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" }, { endStream: true });
    let status = 0;
    let body = "";
    let grpcStatus: unknown;
    stream.on("response", (headers) => (status = Number(headers[":status"])));
    stream.on("trailers", (trailers) => (grpcStatus = trailers["grpc-status"]));
    stream.on("data", (chunk: Buffer) => (body += chunk.toString()));
    const ending = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve("timed out"), 10_000);
      stream.on("end", () => (clearTimeout(timer), resolve("end")));
      stream.on("error", (error: Error) => (clearTimeout(timer), resolve(`error: ${error.message}`)));
    });
    await new Promise((resolve) => setImmediate(resolve));
    return { status, body, grpcStatus, ending, entry: access.findLast((entry) => entry.path === path) };
  }

  /** Requests until the bad endpoint is ejected (at most 20): every one answered by the good endpoint when `allAnswered`. */
  async function untilEjected(name: string, allAnswered: boolean) {
    const bad = `127.0.0.2:${ports.get(name)}`;
    const ejectedBefore = gateway.stats().counters["endpoint ejected"] ?? 0;
    const statuses: number[] = [];
    for (let index = 0; index < 20 && (gateway.stats().counters["endpoint ejected"] ?? 0) === ejectedBefore; index++) {
      const result = await request(`/${name}/Get${index}`);
      statuses.push(result.status);
      if (allAnswered) expect(result.body).toBe(`good /${name}/Get${index}`);
    }
    expect(gateway.stats().counters["endpoint ejected"] ?? 0).toBe(ejectedBefore + 1);
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines.some((line) => line.endpoint === bad && String(line.msg).startsWith("endpoint ejected"))).toBe(true);
    // Shown where an operator looks: the gateway's status and its metrics.
    expect(gateway.status().ejected).toContain(bad);
    const registry = new Registry();
    registerGatewayMetrics(registry, gateway);
    const ejectedNow = Number(/^leafmesh_gateway_ejected_endpoints (\d+)$/m.exec(await registry.metrics())?.[1]);
    expect(ejectedNow).toBe(gateway.status().ejected.length);
    expect(ejectedNow).toBeGreaterThan(0);
    // Ejected: the next requests go to the good endpoint alone, at the first attempt.
    for (let index = 0; index < 4; index++) {
      const result = await request(`/${name}/After${index}`);
      expect(result).toMatchObject({ status: 200, body: `good /${name}/After${index}`, ending: "end" });
      expect(result.entry).toMatchObject({ endpoint: `127.0.0.1:${ports.get(name)}`, attempts: 1 });
    }
    return statuses;
  }

  it("ejects an h2c endpoint that accepts and never sends SETTINGS, every request answered by the other meanwhile", async () => {
    const statuses = await untilEjected("silent", true);
    expect(statuses.every((status) => status === 200)).toBe(true);
    expect(gateway.stats().counters["http2 backend did not speak HTTP/2"]).toBeGreaterThan(0);
  });

  it("ejects an h2c endpoint that resets every stream, the route's retries answering every request meanwhile", async () => {
    expect((await untilEjected("resetting", true)).every((status) => status === 200)).toBe(true);
  });

  it("sends a refused stream again (Istio's default refused-stream) and ejects the endpoint that refuses them all", async () => {
    expect((await untilEjected("refusing", true)).every((status) => status === 200)).toBe(true);
  });

  it("ejects an HTTP/1.1 endpoint that accepts and closes every connection unanswered", async () => {
    expect((await untilEjected("closing", true)).every((status) => status === 200)).toBe(true);
  });

  it("ejects an HTTP/1.1 endpoint that never answers, the route's per-try timeout and retries answering every request meanwhile", async () => {
    expect((await untilEjected("mute", true)).every((status) => status === 200)).toBe(true);
  });

  it("ejects an h2c endpoint whose streams are never answered, after requests answered 504 at the route's timeout", async () => {
    expect(await untilEjected("stalling", false)).toContain(504);
  });

  it("cuts the client's stream when the backend's connection closes mid-answer, and the next call is answered", async () => {
    const cut = await request("/cut/Die");
    expect(cut.body).toBe("first message");
    expect(cut.ending).toMatch(/^error/);
    expect(cut.grpcStatus).toBeUndefined();
    expect(gateway.stats().counters["http answer cut by backend"]).toBeGreaterThan(0);
    expect(await request("/cut/Get")).toMatchObject({ status: 200, body: "good /cut/Get", grpcStatus: "0", ending: "end" });
  });

  it("answers 400 to a request HTTP/2 cannot carry (a User-Agent twice), and holds it against no endpoint", async () => {
    const ejectedBefore = gateway.stats().counters["endpoint ejected"] ?? 0;
    const statusLine = () =>
      new Promise<string>((resolve) => {
        const socket = connectTcp(gatewayPort, "127.0.0.1");
        let got = "";
        socket.on("data", (chunk: Buffer) => (got += chunk.toString("latin1")));
        socket.on("error", () => undefined);
        socket.on("close", () => resolve(got.split("\r\n")[0]));
        socket.end("GET /cut/Get HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: one\r\nUser-Agent: two\r\nConnection: close\r\n\r\n");
      });
    for (let index = 0; index < 4; index++) expect(await statusLine()).toBe("HTTP/1.1 400 Bad Request");
    expect(gateway.stats().counters["endpoint ejected"] ?? 0).toBe(ejectedBefore);
    expect(await request("/cut/Get")).toMatchObject({ status: 200, body: "good /cut/Get", ending: "end" });
  });

  it("takes no server push from a backend: every answer comes whole", async () => {
    const failedBefore = gateway.stats().counters["http backend failed"] ?? 0;
    for (let index = 0; index < 10; index++) expect(await request(`/pushing/Get${index}`)).toMatchObject({ status: 200, body: `good /pushing/Get${index}`, ending: "end" });
    expect(gateway.stats().counters["http backend failed"] ?? 0).toBe(failedBefore);
  });

  it("opens another session to an endpoint whose streams are at the backend's limit: a call is not held behind a long one", async () => {
    const slowCall = request("/limited/Slow");
    await eventually(() => limitedStreams === 1, 5_000, "the slow call's stream open at the backend");
    const quick = await request("/limited/Get");
    releaseSlow("limited");
    expect(quick).toMatchObject({ status: 200, body: "good /limited/Get", ending: "end" });
    expect(await slowCall).toMatchObject({ status: 200, body: "first message, last message", ending: "end" });
  });

  it("lets a stream on an endpoint that left the catalog finish, then closes its session; one that left ejected and came back is taken at once", async () => {
    const port = ports.get("moving")!;
    // 127.0.0.2 refuses (nothing listens): ejected, each request answered by 127.0.0.1.
    await untilEjected("moving", true);
    const slowCall = request("/moving/Slow");
    await eventually(() => movingSessions.size === 1, 5_000, "the slow call's session at 127.0.0.1");
    let asked = 0;
    const endpoints = async (addresses: string[], awaited: string) => {
      const result = normalizeObject(slice("moving", "grpc-api", port, addresses));
      if (result.status !== "ok") throw new Error(JSON.stringify(result));
      feed.reader.apply({ op: "put", key: catalogKey(result.object), object: result.object });
      const seen = new Set<string>();
      feed.notify([catalogKey(result.object)]);
      await eventually(async () => seen.add(String((await request(`/moving/Now${asked++}`)).entry?.endpoint)).has(`${awaited}:${port}`), 5_000, `a request answered by ${awaited}:${port}`);
      return seen;
    };
    // Both leave for 127.0.0.3; then 127.0.0.2 (serving now) comes back beside it, and is taken at once: had its
    // ejection been kept, it was out for 2 min.
    for (const host of ["127.0.0.2", "127.0.0.3"]) await listen(goodHttp2(), host, port);
    await endpoints(["127.0.0.3"], "127.0.0.3");
    expect(await endpoints(["127.0.0.2", "127.0.0.3"], "127.0.0.2")).not.toContain(`127.0.0.1:${port}`);
    // The stream on the endpoint that left goes on, and ends whole; its session closes then (not 15 s idle later).
    expect(movingSessions.size).toBe(1);
    releaseSlow("moving");
    expect(await slowCall).toMatchObject({ status: 200, body: "first message, last message", grpcStatus: "0", ending: "end" });
    await eventually(() => movingSessions.size === 0, 5_000, "the session to 127.0.0.1 closed once its stream ended");
  });
});
