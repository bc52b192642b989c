/**
 * gRPC through the gateway: backends whose Service port speaks HTTP/2
 * (upstream-h2.ts) get h2c, with a real HTTP/2 server speaking gRPC's wire
 * format behind the gateway (length-prefixed messages, status in trailers) and
 * Node's HTTP/2 client in front, in both configurations. Unary calls with their
 * trailers, a trailers-only answer, a bidirectional stream passed message by
 * message, a backend's reset reaching the client as a reset, many calls on one
 * backend session, an HTTP/1.1 client to the same backend, and a port that
 * claims HTTP/2 but does not speak it refused with a reason.
 */
import { createServer as createHttp1Server, type Server as Http1Server } from "node:http";
import { connect as connectTcp } from "node:net";
import { joinStreams } from "../../lib/join-streams.ts";
import { replayed } from "./replayed.ts";
import { connect as connectTls, createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from "node:tls";
import { selfSignedCertificate } from "../../test/support/certificates.ts";
import type { StreamDialer } from "../../bus/streams.ts";
import { startGatewayBackends, type GatewayBackends } from "../../test/support/gateway-backends.ts";
import { grpcCall } from "../../test/support/gateway-clients.ts";
import { backendManifests, certificateSecrets, ingressManifests } from "../../test/support/gateway-manifests.ts";
import { connect, constants, createServer, type ClientHttp2Session, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogKey } from "../../bus/catalog.ts";
import { silentLogger } from "../../lib/log.ts";
import { freePort } from "../../test/support/ports.ts";
import { normalizeObject } from "../controller/normalize.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";
import { speaksHttp2 } from "./upstream-h2.ts";

/** A gRPC message: a flag byte (not compressed), its length, its bytes. */
const frame = (text: string) => {
  const body = Buffer.from(text);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
};
/** The messages of a gRPC body. */
function messages(bytes: Buffer): string[] {
  const found: string[] = [];
  for (let at = 0; at + 5 <= bytes.length; ) {
    const length = bytes.readUInt32BE(at + 1);
    found.push(bytes.subarray(at + 5, at + 5 + length).toString());
    at += 5 + length;
  }
  return found;
}

function manifests(style: "istio" | "gateway-api", port: number, grpcPort: number, liarPort: number): object[] {
  const namespace = "shop";
  const service = (name: string, ip: string, portSpec: object) => ({ apiVersion: "v1", kind: "Service", metadata: { name, namespace }, spec: { clusterIP: ip, ports: [{ port: 80, protocol: "TCP", ...portSpec }] } });
  const slice = (name: string, backendPort: number, portName: string) => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: `${name}-0`, namespace, labels: { "kubernetes.io/service-name": name } },
    addressType: "IPv4",
    endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true } }],
    ports: [{ name: portName, port: backendPort, protocol: "TCP" }],
  });
  // Istio's way (a port named grpc-*) for one, Kubernetes' appProtocol for the other.
  const grpcPort_ = style === "istio" ? { name: "grpc-api" } : { name: "api", appProtocol: "kubernetes.io/h2c" };
  const objects: object[] = [service("orders", "198.19.79.11", grpcPort_), slice("orders", grpcPort, grpcPort_.name), service("liar", "198.19.79.12", { name: "main", appProtocol: "grpc" }), slice("liar", liarPort, "main")];
  if (style === "istio") {
    const route = (prefix: string, host: string) => ({ match: [{ uri: { prefix } }], route: [{ destination: { host, port: { number: 80 } } }] });
    objects.push(
      { apiVersion: "networking.istio.io/v1beta1", kind: "Gateway", metadata: { name: "edge", namespace }, spec: { selector: {}, servers: [{ port: { number: port, name: "http", protocol: "HTTP" }, hosts: ["*"] }] } },
      { apiVersion: "networking.istio.io/v1beta1", kind: "VirtualService", metadata: { name: "api", namespace }, spec: { gateways: ["edge"], hosts: ["*"], http: [route("/shop.Liar/", "liar"), route("/", "orders")] } },
    );
  } else {
    const rule = (value: string, name: string) => ({ matches: [{ path: { type: "PathPrefix", value } }], backendRefs: [{ name, port: 80 }] });
    objects.push(
      { apiVersion: "gateway.networking.k8s.io/v1", kind: "Gateway", metadata: { name: "edge", namespace }, spec: { gatewayClassName: "leafmesh", listeners: [{ name: "http", port, protocol: "HTTP" }] } },
      { apiVersion: "gateway.networking.k8s.io/v1", kind: "HTTPRoute", metadata: { name: "api", namespace }, spec: { parentRefs: [{ name: "edge" }], rules: [rule("/shop.Liar/", "liar"), rule("/", "orders")] } },
    );
  }
  return objects;
}

/** What a call got: its answer's headers, the messages, its trailers, and how it ended. */
async function call(session: ClientHttp2Session, path: string, sent: string[], options: { eachAnswer?: (text: string, write: (text: string) => void) => void } = {}) {
  const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
  const got: Buffer[] = [];
  let headers: IncomingHttpHeaders = {};
  let trailers: IncomingHttpHeaders = {};
  stream.on("response", (received) => (headers = received));
  stream.on("trailers", (received) => (trailers = received));
  stream.on("data", (chunk: Buffer) => {
    got.push(chunk);
    for (const text of messages(chunk)) options.eachAnswer?.(text, (next) => (next === "" ? stream.end() : stream.write(frame(next))));
  });
  if (!options.eachAnswer) stream.end(Buffer.concat(sent.map(frame)));
  else stream.write(frame(sent[0]));
  const ending = await new Promise<string>((resolve) => {
    stream.on("end", () => resolve("end"));
    stream.on("error", (error: Error) => resolve(`error: ${error.message}`));
  });
  await new Promise((resolve) => (stream.closed ? resolve(undefined) : stream.once("close", resolve)));
  return { headers, trailers, messages: messages(Buffer.concat(got)), ending, rstCode: stream.rstCode };
}

describe("which Service ports speak HTTP/2", () => {
  it("takes appProtocol first, then Istio's port names", () => {
    expect(speaksHttp2({ name: "web", appProtocol: "grpc" })).toBe(true);
    expect(speaksHttp2({ name: "web", appProtocol: "kubernetes.io/h2c" })).toBe(true);
    expect(speaksHttp2({ name: "grpc", appProtocol: "http" })).toBe(false);
    expect(speaksHttp2({ name: "grpc-orders" })).toBe(true);
    expect(speaksHttp2({ name: "http2" })).toBe(true);
    expect(speaksHttp2({ name: "grpcweb" })).toBe(false);
    expect(speaksHttp2({ name: "http" })).toBe(false);
  });
});

describe.each(["istio", "gateway-api"] as const)("gRPC through the gateway (%s)", (style) => {
  let backend: Http2Server;
  let liar: Http1Server;
  let gateway: GatewayActor;
  let port = 0;
  let backendSessions = 0;
  const seen: IncomingHttpHeaders[] = [];

  beforeAll(async () => {
    backend = createServer();
    backend.on("session", () => backendSessions++);
    backend.on("stream", (stream: ServerHttp2Stream, headers) => {
      seen.push(headers);
      stream.on("error", () => undefined);
      const path = headers[":path"];
      if (path === "/shop.Orders/Missing") return stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "12", "grpc-message": "unimplemented" }, { endStream: true });
      if (path === "/plain") return stream.respond({ ":status": 200, "content-type": "text/plain" }, { endStream: false }), stream.end("plain over h2\n");
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "grpc-message": "OK" }));
      if (path === "/shop.Orders/Empty") return void stream.end();
      if (path === "/shop.Orders/Die") {
        stream.write(frame("last words"));
        return void setTimeout(() => stream.close(constants.NGHTTP2_INTERNAL_ERROR), 50);
      }
      // Each message answered as it comes: a unary call's one, a stream's many.
      stream.on("data", (chunk: Buffer) => {
        for (const text of messages(chunk)) stream.write(frame(`got ${text}`));
      });
      stream.on("end", () => stream.end());
    });
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    liar = createHttp1Server((_request, response) => response.end("HTTP/1.1 only\n"));
    await new Promise<void>((resolve) => liar.listen(0, "127.0.0.1", resolve));
    port = await freePort();
    const feed = new IndexFeed();
    for (const object of manifests(style, port, (backend.address() as { port: number }).port, (liar.address() as { port: number }).port)) {
      const result = normalizeObject(object);
      if (result.status !== "ok") throw new Error(`fixture object refused: ${JSON.stringify(result)}`);
      feed.reader.apply({ op: "put", key: catalogKey(result.object), object: result.object });
    }
    gateway = createGatewayActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: () => undefined });
    await gateway.start();
    expect(gateway.status().refused).toEqual([]);
  }, 30_000);

  afterAll(async () => {
    await gateway?.stop();
    await new Promise((resolve) => backend?.close(resolve));
    liar?.closeAllConnections();
    await new Promise((resolve) => liar?.close(resolve));
  });

  const client = () => {
    const session = connect(`http://127.0.0.1:${port}`);
    session.on("error", () => undefined);
    return session;
  };

  it("answers a unary call with its message and its trailers (grpc-status), the backend seeing the gRPC request as sent", async () => {
    const session = client();
    const result = await call(session, "/shop.Orders/Get", ["order 7"]);
    expect(result.ending).toBe("end");
    expect(result.headers[":status"]).toBe(200);
    expect(result.headers["content-type"]).toBe("application/grpc");
    expect(result.messages).toEqual(["got order 7"]);
    expect(result.trailers["grpc-status"]).toBe("0");
    expect(result.trailers["grpc-message"]).toBe("OK");
    const request = seen.at(-1)!;
    expect(request.te).toBe("trailers");
    expect(request[":authority"]).toBe(`127.0.0.1:${port}`);
    expect(request["x-forwarded-for"]).toBe("127.0.0.1");
    session.close();
  });

  it("passes a trailers-only answer (a gRPC error) as it came", async () => {
    const session = client();
    const result = await call(session, "/shop.Orders/Missing", ["x"]);
    expect(result.ending).toBe("end");
    expect(result.headers["grpc-status"]).toBe("12");
    expect(result.messages).toEqual([]);
    session.close();
  });

  it("carries a bidirectional stream message by message: each answer comes before the client sends the next", async () => {
    const session = client();
    const sent = ["a"];
    const result = await call(session, "/shop.Orders/Chat", sent, {
      eachAnswer: (text, write) => {
        const next = String.fromCharCode(text.charCodeAt(text.length - 1) + 1);
        if (next <= "e") {
          sent.push(next);
          write(next);
        } else write("");
      },
    });
    expect(result.messages).toEqual(["got a", "got b", "got c", "got d", "got e"]);
    expect(result.trailers["grpc-status"]).toBe("0");
    session.close();
  });

  it("resets the client's stream when the backend resets its own mid-answer: never a clean end", async () => {
    const session = client();
    const result = await call(session, "/shop.Orders/Die", ["x"]);
    expect(result.ending).toMatch(/^error/);
    expect(result.rstCode).not.toBe(constants.NGHTTP2_NO_ERROR);
    expect(result.messages).toEqual(["last words"]);
    session.close();
  });

  it("multiplexes many calls on one backend session, and serves an HTTP/1.1 client from the same backend", async () => {
    const before = backendSessions;
    const session = client();
    const results = await Promise.all(Array.from({ length: 20 }, (_, index) => call(session, "/shop.Orders/Get", [`n${index}`])));
    expect(results.map((result) => result.messages[0]).sort()).toEqual(Array.from({ length: 20 }, (_, index) => `got n${index}`).sort());
    expect(backendSessions - before).toBeLessThanOrEqual(1);
    session.close();
    const plain = await fetch(`http://127.0.0.1:${port}/plain`);
    expect(await plain.text()).toBe("plain over h2\n");
  });

  it("sends the backend's trailers to an HTTP/1.1 client that sent TE: trailers, in the chunked body's end (RFC 9112 §7.1.2), and to no other", async () => {
    const answer = (te: string, path = "/shop.Orders/Get") =>
      new Promise<string>((resolve) => {
        const socket = connectTcp(port, "127.0.0.1");
        let text = "";
        socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")));
        socket.on("error", () => undefined);
        socket.on("close", () => resolve(text));
        socket.end(`POST ${path} HTTP/1.1\r\nHost: shop.example.com\r\nContent-Type: application/grpc\r\n${te}Content-Length: 10\r\nConnection: close\r\n\r\n${frame("hello").toString("latin1")}`);
      });
    const body = `\r\n${(9 + 5).toString(16)}\r\n${frame("got hello").toString("latin1")}\r\n0\r\n`;
    const withTe = await answer("TE: trailers\r\n");
    expect(withTe).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(withTe.endsWith(`${body}grpc-status: 0\r\ngrpc-message: OK\r\n\r\n`), JSON.stringify(withTe)).toBe(true);
    const without = await answer("");
    expect(without.endsWith(`${body}\r\n`), JSON.stringify(without)).toBe(true);
    // No message, then trailers: the answer goes chunked to carry them (a Content-Length: 0 had no place for them).
    expect(await answer("TE: trailers\r\n", "/shop.Orders/Empty")).toMatch(/\r\nTransfer-Encoding: chunked\r\n[^]*\r\n\r\n0\r\ngrpc-status: 0\r\ngrpc-message: OK\r\n\r\n$/);
  });

  it("refuses a port that claims HTTP/2 but answers HTTP/1.1, with a reason, and serves on", async () => {
    const session = client();
    const result = await call(session, "/shop.Liar/Get", ["x"]);
    expect(result.headers[":status"]).toBe(503);
    expect(gateway.stats().counters["http2 backend did not speak HTTP/2"]).toBeGreaterThan(0);
    expect((await call(session, "/shop.Orders/Get", ["still"])).messages).toEqual(["got still"]);
    session.close();
  });
});

/**
 * The same backend behind a relayed tunnel stream: TLS over a JavaScript stream (the relay channel: whole reads
 * handed over as they come), to a TLS end that joins it with the backend. Two ways the agent died there: Node's
 * HTTP/2 on such a TLS socket failed a native assertion (is_write_in_progress); and Node emits an HTTP/2 answer's
 * head a tick after a DATA frame of the same read, so the body's first bytes found no head written yet.
 */
describe("gRPC through the gateway to a backend on another node (a tunnel stream)", () => {
  let backends: GatewayBackends;
  let gateway: GatewayActor;
  let far: TlsServer;
  const farSockets = new Set<TLSSocket>();
  const ports = { http: 0, https: 0, tls: 0, tcp: 0 };

  beforeAll(async () => {
    backends = await startGatewayBackends({ host: "127.0.0.1", basePort: 0 });
    for (const key of Object.keys(ports) as (keyof typeof ports)[]) ports[key] = await freePort();
    const feed = new IndexFeed();
    for (const raw of [...ingressManifests("istio", { ports }), ...backendManifests(backends.endpoints("edge-b")), ...certificateSecrets()]) {
      const result = normalizeObject(raw);
      if (result.status !== "ok") throw new Error(`fixture object refused: ${JSON.stringify(result)}`);
      feed.reader.apply({ op: "put", key: catalogKey(result.object), object: result.object });
    }
    // The serving node's end: TLS, each connection joined to the target its server name carries (as the tunnel's
    // header does), here in this process.
    far = createTlsServer(selfSignedCertificate(["far.example.com"]), (secure) => {
      farSockets.add(secure);
      secure.once("close", () => farSockets.delete(secure));
      const port = Number(/^port-(\d+)\./.exec((secure as TLSSocket & { servername?: string }).servername ?? "")?.[1]);
      // Joined as the serving agent joins a stream with its target: a cut or a reset on one side reaches the other
      // as a reset (pipe() left the other side open, and a backend that reset held the tunnel stream for ever).
      joinStreams(secure, connectTcp(port, "127.0.0.1"));
    });
    await new Promise<void>((resolve) => far.listen(0, "127.0.0.1", resolve));
    const farPort = (far.address() as { port: number }).port;
    const dialer: StreamDialer = {
      async openStream(_node, target) {
        const socket = connectTcp(farPort, "127.0.0.1");
        await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
        // The relay channel: a JavaScript stream, whole reads handed over as they come (the socket as a plain Duplex).
        const channel = replayed(socket, Buffer.alloc(0));
        // TLS over it, as a relayed tunnel stream is.
        const stream = connectTls({ socket: channel, servername: `port-${target.port}.far.example.com`, rejectUnauthorized: false });
        await new Promise((resolve, reject) => stream.once("secureConnect", resolve).once("error", reject));
        return stream;
      },
    };
    gateway = createGatewayActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: () => undefined, dialer });
    await gateway.start();
  }, 30_000);

  afterAll(async () => {
    await gateway?.stop();
    await backends?.close();
    for (const socket of farSockets) socket.destroy();
    await new Promise((resolve) => far?.close(resolve));
  });

  it("answers each call whole, its head first, 30 at once of 100 kB each too, and the agent lives on", async () => {
    const big = "x".repeat(100_000);
    const many = await Promise.all(Array.from({ length: 30 }, (_, index) => grpcCall(`http://127.0.0.1:${ports.http}`, "grpc.example.com", [`a${index}${big}`, `b${index}`])));
    for (const [index, one] of many.entries()) expect(one.answers).toEqual([`grpc:a${index}${big}b${index}`]);
    for (let index = 0; index < 3; index++) expect(await grpcCall(`http://127.0.0.1:${ports.http}`, "grpc.example.com", ["m1", "m2"])).toEqual({ status: 200, backend: "grpc", answers: ["grpc:m1m2"], grpcStatus: "0", ending: "end" });
  });
});
