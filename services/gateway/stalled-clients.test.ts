/**
 * Clients of the gateway that start and then go quiet, on real sockets: each must cost its connection
 * only until a deadline, counted by reason, while the gateway serves on. HTTP/1's own deadlines (idle,
 * head, body, an answer not read) are http1-server.test.ts's; here the ones of HTTP/2 (h2c), of a terminated
 * TLS handshake, and of an answer not read over HTTPS (Node's HTTP server) and h2c.
 * The deadlines are shortened (a second or so) so that the test waits little.
 */
import { connect as connectHttp2, constants as http2 } from "node:http2";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { connect, createServer, type AddressInfo, type Socket } from "node:net";
import { connect as connectTls } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogKey } from "../../bus/catalog.ts";
import { silentLogger } from "../../lib/log.ts";
import { startGatewayBackends, type GatewayBackends } from "../../test/support/gateway-backends.ts";
import { backendManifests, certificateSecrets, ingressManifests } from "../../test/support/gateway-manifests.ts";
import { freePort } from "../../test/support/ports.ts";
import { normalizeObject } from "../controller/normalize.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";
import { frame } from "../../test/support/http2-frames.ts";

const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Sends `bytes`, then nothing; resolves with how the gateway ended the connection, or "open" after `ms`. */
function sendAndStall(port: number, bytes: Buffer, ms: number): Promise<{ ended: "closed" | "reset" | "open"; afterMs: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket: Socket = connect(port, "127.0.0.1", () => socket.write(bytes));
    let reset = false;
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ ended: "open", afterMs: Date.now() - started });
    }, ms);
    socket.on("data", () => undefined);
    socket.on("error", () => (reset = true));
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ ended: reset ? "reset" : "closed", afterMs: Date.now() - started });
    });
  });
}

/** A real ClientHello for `serverName`, as Node's TLS client sends it. */
async function clientHello(serverName: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => {
      socket.once("data", (hello: Buffer) => {
        socket.destroy();
        server.close();
        resolve(hello);
      });
    });
    server.listen(0, "127.0.0.1", () => {
      const client = connectTls({ host: "127.0.0.1", port: (server.address() as { port: number }).port, servername: serverName, rejectUnauthorized: false });
      client.on("error", () => undefined);
    });
    server.on("error", reject);
  });
}

describe("the gateway with clients that go quiet", () => {
  let backends: GatewayBackends;
  let gateway: GatewayActor;
  let big: HttpServer;
  /** How each answer of the big backend ended. */
  const bigEndings: string[] = [];
  const ports = { http: 0, https: 0, tls: 0, tcp: 0 };

  beforeAll(async () => {
    backends = await startGatewayBackends({ host: "127.0.0.1", basePort: 0 });
    for (const key of Object.keys(ports) as (keyof typeof ports)[]) ports[key] = await freePort();
    const feed = new IndexFeed();
    // /api/…/big (HTTP) and secure.example.com/big (HTTPS) answer 64 MiB from the big backend, for the clients that read none of it.
    big = createHttpServer((request, response) => {
      if (!request.url?.endsWith("/big")) return void response.end("secure\n");
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      let left = 1024;
      response.once("close", () => bigEndings.push(response.writableFinished ? "finished" : "closed early"));
      response.writeHead(200, { "content-length": String(left * chunk.length) });
      const more = () => {
        while (left > 0) {
          left--;
          if (left === 0) return void response.end(chunk);
          if (!response.write(chunk)) return void response.once("drain", more);
        }
      };
      request.resume();
      request.on("end", more);
    });
    await new Promise<void>((resolve) => big.listen(0, "127.0.0.1", resolve));
    const endpoints = { ...backends.endpoints(), api: [{ ip: "127.0.0.1", port: (big.address() as AddressInfo).port }] };
    endpoints.secure = endpoints.api;
    for (const raw of [...ingressManifests("gateway-api", { ports }), ...backendManifests(endpoints), ...certificateSecrets()]) {
      const result = normalizeObject(raw);
      if (result.status !== "ok") throw new Error(`fixture object refused: ${JSON.stringify(result)}`);
      feed.reader.apply({ op: "put", key: catalogKey(result.object), object: result.object });
    }
    gateway = createGatewayActor({
      feed,
      log: silentLogger(),
      node: "edge-a",
      listenHost: "127.0.0.1",
      access: () => undefined,
      clientTimeouts: { handshakeTimeoutMs: 1_000, http2IdleMs: 1_000, http2RequestMs: 1_500, answerStallMs: 1_500 },
    });
    await gateway.start();
  }, 30_000);

  afterAll(async () => {
    await gateway?.stop();
    await backends?.close();
    big?.closeAllConnections();
    await new Promise((resolve) => big?.close(resolve));
  });

  const counter = (reason: string) => gateway.stats().counters[reason] ?? 0;

  it("closes an h2c session that opened and went quiet: after its preface, or halfway through a header block", async () => {
    const before = counter("http2 session idle");
    const quiet = await Promise.all([
      sendAndStall(ports.http, Buffer.concat([preface, frame(4, 0, 0)]), 8_000),
      sendAndStall(ports.http, preface, 8_000),
      // HEADERS without END_HEADERS: a CONTINUATION is owed, and never comes.
      sendAndStall(ports.http, Buffer.concat([preface, frame(4, 0, 0), frame(1, 0, 1, Buffer.from([0x82]))]), 8_000),
    ]);
    for (const outcome of quiet) expect(outcome.ended, JSON.stringify(quiet)).not.toBe("open");
    expect(counter("http2 session idle") - before).toBe(3);
  }, 15_000);

  it("counts each h2c session broken by its client once", async () => {
    const before = counter("http2 session error");
    // A frame header that announces a frame larger than the session's maximum: a protocol error of the session.
    const broken = Buffer.concat([preface, Buffer.from([0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]), Buffer.from("garbage")]);
    const outcomes = await Promise.all(Array.from({ length: 5 }, () => sendAndStall(ports.http, broken, 5_000)));
    for (const outcome of outcomes) expect(outcome.ended).not.toBe("open");
    expect(counter("http2 session error") - before).toBe(5);
  });

  it("resets an h2c request whose body stops halfway, and keeps its session for the next request", async () => {
    const session = connectHttp2(`http://127.0.0.1:${ports.http}`);
    session.on("error", () => undefined);
    try {
      const stalled = session.request({ ":method": "POST", ":path": "/upload", host: "shop.example.com" }, { endStream: false });
      stalled.write("the first half of the body");
      const code = await new Promise<number | string>((resolve) => {
        const timer = setTimeout(() => resolve("still open"), 8_000);
        stalled.on("response", () => undefined);
        stalled.on("data", () => undefined);
        stalled.on("error", () => undefined);
        stalled.on("close", () => {
          clearTimeout(timer);
          resolve(stalled.rstCode ?? "no code");
        });
      });
      expect(code).toBe(http2.NGHTTP2_CANCEL);
      expect(counter("http2 request body timed out")).toBeGreaterThanOrEqual(1);
      // The session itself was not the one cut: it answers the next request.
      const status = await new Promise<number>((resolve, reject) => {
        const next = session.request({ ":path": "/api/x", host: "shop.example.com" });
        next.on("response", (headers) => resolve(Number(headers[":status"])));
        next.on("data", () => undefined);
        next.on("error", reject);
      });
      expect(status).toBe(200);
    } finally {
      session.destroy();
    }
  }, 15_000);

  it("resets a TLS client that sent its ClientHello and then nothing, and still serves HTTPS", async () => {
    const before = counter("tls handshake timeout");
    const hello = await clientHello("secure.example.com");
    const outcome = await sendAndStall(ports.https, hello, 8_000);
    expect(outcome.ended).toBe("reset");
    expect(counter("tls handshake timeout") - before).toBe(1);
    const answer = await new Promise<string>((resolve, reject) => {
      const client = connectTls({ host: "127.0.0.1", port: ports.https, servername: "secure.example.com", rejectUnauthorized: false }, () => {
        client.write("GET / HTTP/1.1\r\nHost: secure.example.com\r\nConnection: close\r\n\r\n");
      });
      let text = "";
      client.on("data", (chunk: Buffer) => (text += chunk.toString()));
      client.on("end", () => resolve(text));
      client.on("error", reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(answer).toContain("\r\nsecure\n");
  }, 15_000);

  /** Waits for the big backend's next answer to end; how it ended. */
  async function nextBigEnding(before: number): Promise<string | undefined> {
    for (let i = 0; i < 200 && bigEndings.length === before; i++) await new Promise((resolve) => setTimeout(resolve, 40));
    return bigEndings[before];
  }

  it("cuts an HTTPS client (HTTP/1.1) that reads none of its answer, and the backend's answer with it", async () => {
    const before = counter("http answer not read by the client");
    const ended = bigEndings.length;
    const client = connectTls({ host: "127.0.0.1", port: ports.https, servername: "secure.example.com", rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] }, () => {
      client.write("GET /big HTTP/1.1\r\nHost: secure.example.com\r\n\r\n");
    });
    client.on("error", () => undefined);
    client.pause();
    try {
      expect(await nextBigEnding(ended)).toBe("closed early");
      expect(counter("http answer not read by the client") - before).toBe(1);
    } finally {
      client.destroy();
    }
  }, 15_000);

  it("resets an h2c stream whose client reads none of its answer", async () => {
    const before = counter("http answer not read by the client");
    const ended = bigEndings.length;
    const session = connectHttp2(`http://127.0.0.1:${ports.http}`);
    session.on("error", () => undefined);
    try {
      const stream = session.request({ ":path": "/api/big", host: "shop.example.com" });
      stream.on("error", () => undefined);
      // Never read: no WINDOW_UPDATE goes back, and the gateway's writes stop at the flow-control window.
      stream.pause();
      expect(await nextBigEnding(ended)).toBe("closed early");
      expect(counter("http answer not read by the client") - before).toBe(1);
    } finally {
      session.destroy();
    }
  }, 15_000);
});
