/**
 * Trailers through the gateway (http-trailers.ts), from real backends to real clients: an HTTP/1.1 backend's
 * chunked answer with a trailer section (written by hand: a digest, and fields trailers may not carry, and a line
 * that is not a field), and an HTTP/2 backend's answer with a Content-Length and trailing HEADERS; to HTTP/2
 * clients (trailing HEADERS), HTTP/1.1 clients that sent `TE: trailers` (the last chunk), over plain HTTP (the
 * gateway's own front end) and HTTPS (Node's server), and to clients that did not ask for them (none).
 */
import { connect as connectHttp2, createServer as createHttp2Server, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { connect as connectTcp, createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import { connect as connectTls } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { selfSignedCertificate, tlsSecretManifest } from "../../test/support/certificates.ts";
import { catalogFeed, prefixRoutes } from "../../test/support/gateway-fixture.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";
import type { AccessEntry } from "./http-message.ts";

const certificate = selfSignedCertificate(["trail.example.com"]);
const section = "X-Digest: sha-256=abc\r\nSet-Cookie: late=1\r\nConnection: close\r\nnot a field\r\nx-digest: second\r\n\r\n";

describe("trailers through the gateway", () => {
  const sockets = new Set<Socket>();
  const servers: (TcpServer | Http2Server)[] = [];
  const access: AccessEntry[] = [];
  let gateway: GatewayActor;
  const ports = { http: 0, https: 0 };

  const listen = async (server: TcpServer | Http2Server) => {
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return (server.address() as { port: number }).port;
  };

  beforeAll(async () => {
    // Answers every request head on a kept connection (requests without a body) with chunks and a trailer section.
    const h1Port = await listen(
      createTcpServer((socket) => {
        sockets.add(socket);
        socket.on("error", () => undefined);
        let text = "";
        socket.on("data", (chunk: Buffer) => {
          text += chunk.toString("latin1");
          for (let end = text.indexOf("\r\n\r\n"); end >= 0; end = text.indexOf("\r\n\r\n")) {
            text = text.slice(end + 4);
            socket.write(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Digest\r\n\r\n5\r\nhello\r\n0\r\n${section}`);
          }
        });
      }),
    );
    const h2 = createHttp2Server();
    h2.on("stream", (stream: ServerHttp2Stream) => {
      stream.on("error", () => undefined);
      stream.respond({ ":status": 200, "content-length": "5" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end("sized");
    });
    const h2Port = await listen(h2);
    ports.http = await freePort();
    ports.https = await freePort();
    const objects = prefixRoutes(ports.http, [{ name: "h1", portName: "http", port: h1Port }, { name: "sized", portName: "grpc", port: h2Port }], "198.19.84");
    (objects[0] as { spec: { servers: object[] } }).spec.servers.push({ port: { number: ports.https, name: "https", protocol: "HTTPS" }, hosts: ["trail.example.com"], tls: { mode: "SIMPLE", credentialName: "trail-cert" } });
    objects.push(tlsSecretManifest({ name: "trail-cert", namespace: "shop" }, certificate));
    gateway = createGatewayActor({ feed: catalogFeed(objects), log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: (entry) => void (entry.kind === "http" && access.push(entry)) });
    await gateway.start();
    expect(gateway.status().refused).toEqual([]);
  }, 30_000);

  afterAll(async () => {
    await gateway?.stop();
    for (const socket of sockets) socket.destroy();
    for (const server of servers) await new Promise((resolve) => server.close(resolve));
  });

  /** An HTTP/1.x request's whole answer as the client reads it (the connection closes after it). */
  const http1 = (tls: boolean, path: string, te: string, version = "1.1") =>
    new Promise<string>((resolve) => {
      const request = `GET ${path} HTTP/${version}\r\nHost: trail.example.com\r\n${te}Connection: close\r\n\r\n`;
      const socket = tls ? connectTls({ port: ports.https, host: "127.0.0.1", servername: "trail.example.com", ca: certificate.cert, ALPNProtocols: ["http/1.1"] }, () => socket.write(request)) : connectTcp(ports.http, "127.0.0.1", () => socket.write(request));
      let text = "";
      socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")));
      socket.on("error", (error) => (text += `\nerror: ${error.message}`));
      socket.on("close", () => resolve(text));
    });
  const counter = (reason: string) => gateway.stats().counters[reason] ?? 0;

  it("passes an HTTP/1.1 backend's trailer section to an HTTP/1.1 client that sent TE: trailers, without the fields trailers may not carry", async () => {
    const before = { invalid: counter("http trailers dropped: a field not valid HTTP"), forbidden: counter("http trailers dropped: a field trailers may not carry") };
    for (const tls of [false, true]) {
      const answer = await http1(tls, "/h1/x", "TE: trailers\r\n");
      expect(answer, `tls ${tls}`).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(answer.endsWith("\r\n5\r\nhello\r\n0\r\nx-digest: sha-256=abc\r\nx-digest: second\r\n\r\n"), JSON.stringify(answer)).toBe(true);
    }
    expect(counter("http trailers dropped: a field not valid HTTP")).toBe(before.invalid + 2);
    expect(counter("http trailers dropped: a field trailers may not carry")).toBe(before.forbidden + 2);
    await eventually(() => expect(access.filter((entry) => entry.path === "/h1/x" && entry.status === 200 && entry.reason === undefined)).toHaveLength(2));
  });

  it("gives no trailers to an HTTP/1.1 client that did not ask for them", async () => {
    for (const tls of [false, true]) {
      const answer = await http1(tls, "/h1/y", "");
      // Whole in one read, the plain front end sends it with its length; Node's, chunked.
      expect(answer, `tls ${tls}`).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\n(hello|5\r\nhello\r\n0\r\n\r\n)$/);
      expect(answer).not.toMatch(/digest/i);
    }
  });

  it("passes an HTTP/1.1 backend's trailer section to an HTTP/2 client as trailing HEADERS", async () => {
    const session = connectHttp2(`http://127.0.0.1:${ports.http}`);
    session.on("error", () => undefined);
    try {
      const stream = session.request({ ":path": "/h1/z", ":authority": "trail.example.com" }, { endStream: true });
      let body = "";
      stream.on("data", (chunk: Buffer) => (body += chunk.toString()));
      const trailers = await new Promise<IncomingHttpHeaders>((resolve, reject) => {
        stream.on("trailers", resolve);
        stream.on("end", () => reject(new Error("the stream ended without trailers")));
        stream.on("error", reject);
      });
      expect(body).toBe("hello");
      expect(trailers["x-digest"]).toBe("sha-256=abc, second");
      expect(trailers["set-cookie"]).toBeUndefined();
      expect(trailers.connection).toBeUndefined();
    } finally {
      session.close();
    }
  });

  it("says when an answer over HTTPS cannot carry its trailers (a Content-Length; an HTTP/1.0 client): Node's server dropped them without a word", async () => {
    const before = counter("http trailers dropped: the answer is not chunked");
    const sized = await http1(true, "/sized/x", "TE: trailers\r\n");
    expect(sized).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*content-length: 5\r\n[^]*\r\n\r\nsized$/i);
    expect(counter("http trailers dropped: the answer is not chunked")).toBe(before + 1);
    const old = await http1(true, "/h1/old", "TE: trailers\r\n", "1.0");
    expect(old).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nhello$/);
    expect(counter("http trailers dropped: the answer is not chunked")).toBe(before + 2);
  });
});
