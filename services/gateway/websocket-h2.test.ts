/**
 * WebSocket over HTTP/2 through the gateway (RFC 8441 extended CONNECT, http-upgrade.ts and upgrade-clients.ts):
 * Node's HTTP/2 client opens a stream with `:method: CONNECT`, `:protocol: websocket`, as a browser does on a
 * connection whose server announced SETTINGS_ENABLE_CONNECT_PROTOCOL, over h2c and over TLS (ALPN h2); the backend
 * is a real WebSocket server (`ws`) reached with an HTTP/1.1 Upgrade. WebSocket frames are written and read by hand
 * on the client's stream (RFC 6455 §5.2: masked from the client, small ones only).
 */
import { randomBytes } from "node:crypto";
import type { Server } from "node:http";
import { connect, constants as http2, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { selfSignedCertificate, tlsSecretManifest } from "../../test/support/certificates.ts";
import { catalogFeed, prefixRoutes } from "../../test/support/gateway-fixture.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { echoWebSocketBackend, type EchoSession } from "../../test/support/ws.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";
import type { AccessEntry } from "./http-message.ts";

const certificate = selfSignedCertificate(["live.example.com"]);

/** A client's frame (RFC 6455 §5.2): FIN, the opcode, masked, a payload under 126 bytes. */
function clientFrame(payload: Buffer | string, opcode = 0x1): Buffer {
  const bytes = Buffer.from(payload);
  const mask = randomBytes(4);
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | bytes.length]), mask, bytes.map((byte, i) => byte ^ mask[i % 4])]);
}

interface Session {
  status: number;
  headers: IncomingHttpHeaders;
  stream: ClientHttp2Stream;
  /** Text messages from the backend, and the close frame's code when one came. */
  messages: string[];
  closeCode?: number;
  body: string;
  /** The stream's end: its RST_STREAM code (0: a clean end). */
  closed: Promise<number>;
}

/** An extended CONNECT for `path` on the session, and what comes back on it. */
function open(session: ClientHttp2Session, path: string, extra: Record<string, string> = {}): Promise<Session> {
  const stream = session.request({ ":method": "CONNECT", ":protocol": "websocket", ":scheme": "http", ":path": path, ":authority": "live.example.com", "sec-websocket-version": "13", ...extra });
  const result = { stream, messages: [] as string[], body: "", closed: new Promise<number>((resolve) => stream.on("close", () => resolve(stream.rstCode ?? -1))) } as Session;
  let pending = Buffer.alloc(0);
  stream.on("error", () => undefined);
  stream.on("data", (chunk: Buffer) => {
    if (result.status !== 200) return void (result.body += chunk.toString());
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 2 && pending.length >= 2 + (pending[1] & 0x7f)) {
      const length = pending[1] & 0x7f;
      const payload = pending.subarray(2, 2 + length);
      if ((pending[0] & 0x0f) === 0x1) result.messages.push(payload.toString());
      if ((pending[0] & 0x0f) === 0x8) result.closeCode = payload.readUInt16BE(0);
      pending = pending.subarray(2 + length);
    }
  });
  return new Promise((resolve, reject) => {
    stream.on("response", (headers) => {
      result.status = Number(headers[":status"]);
      result.headers = headers;
      resolve(result);
    });
    stream.on("close", () => reject(new Error(`the stream closed unanswered (code ${stream.rstCode})`)));
  });
}

describe("WebSocket over HTTP/2 through the gateway (RFC 8441)", () => {
  let backend: Server;
  let gateway: GatewayActor;
  const ports = { http: 0, https: 0 };
  const access: AccessEntry[] = [];
  /** The backend's side of each session. */
  const sessions: EchoSession[] = [];
  const clients: ClientHttp2Session[] = [];

  beforeAll(async () => {
    backend = echoWebSocketBackend(sessions);
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    ports.http = await freePort();
    ports.https = await freePort();
    const objects = prefixRoutes(ports.http, [{ name: "ws", portName: "http", port: (backend.address() as { port: number }).port }], "198.19.85");
    (objects[0] as { spec: { servers: object[] } }).spec.servers.push({ port: { number: ports.https, name: "https", protocol: "HTTPS" }, hosts: ["live.example.com"], tls: { mode: "SIMPLE", credentialName: "live-cert" } });
    objects.push(tlsSecretManifest({ name: "live-cert", namespace: "shop" }, certificate));
    gateway = createGatewayActor({ feed: catalogFeed(objects), log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: (entry) => void (entry.kind === "http" && access.push(entry)) });
    await gateway.start();
    expect(gateway.status().refused).toEqual([]);
  }, 30_000);

  afterAll(async () => {
    for (const client of clients) client.destroy();
    await gateway?.stop();
    backend?.closeAllConnections();
    await new Promise((resolve) => backend?.close(resolve));
  });

  /** An HTTP/2 connection to the gateway, once its SETTINGS came (they say whether extended CONNECT may be used). */
  async function client(tls = false): Promise<ClientHttp2Session> {
    const session = tls ? connect(`https://127.0.0.1:${ports.https}`, { ca: certificate.cert, servername: "live.example.com" }) : connect(`http://127.0.0.1:${ports.http}`);
    clients.push(session);
    session.on("error", () => undefined);
    await new Promise((resolve) => session.once("remoteSettings", resolve));
    return session;
  }

  it("announces extended CONNECT and carries a session both ways, routed by :authority and :path as a GET, closed cleanly by both", async () => {
    const session = await client();
    expect(session.remoteSettings.enableConnectProtocol).toBe(true);
    const before = sessions.length;
    const ws = await open(session, "/ws/chat?room=7", { "sec-websocket-protocol": "chat, superchat" });
    expect(ws.status).toBe(200);
    // The backend's choice of subprotocol reaches the client; the handshake's accept (for the gateway's key) does not.
    expect(ws.headers["sec-websocket-protocol"]).toBe("chat");
    expect(ws.headers["sec-websocket-accept"]).toBeUndefined();
    ws.stream.write(clientFrame("one"));
    await eventually(() => expect(ws.messages).toEqual(["hello", "echo one"]));
    const seen = sessions[before];
    expect(seen.path).toBe("/ws/chat?room=7");
    expect(seen.headers.host).toBe("live.example.com");
    expect(seen.headers["x-forwarded-proto"]).toBe("http");
    // A close frame (1000), answered by the backend's, then each side ends its stream: a clean end, no reset.
    ws.stream.write(clientFrame(Buffer.from([0x03, 0xe8]), 0x8));
    await eventually(() => expect(ws.closeCode).toBe(1000));
    ws.stream.end();
    expect(await ws.closed).toBe(http2.NGHTTP2_NO_ERROR);
    await eventually(() => expect(seen.closed).toBe(1000));
    await eventually(() => expect(access.find((entry) => entry.path === "/ws/chat")).toMatchObject({ method: "CONNECT", protocol: "HTTP/2.0", status: 200, route: expect.any(String), attempts: 1 }));
    expect(access.find((entry) => entry.path === "/ws/chat")?.reason).toBeUndefined();
    expect(gateway.stats().counters["http upgraded"]).toBeGreaterThan(0);
  });

  it("carries a session over TLS (ALPN h2), as a browser's wss:// on an HTTP/2 connection", async () => {
    const ws = await open(await client(true), "/ws/secure");
    expect(ws.status).toBe(200);
    ws.stream.write(clientFrame("tls"));
    await eventually(() => expect(ws.messages).toEqual(["hello", "echo tls"]));
    expect(sessions.at(-1)?.headers["x-forwarded-proto"]).toBe("https");
    ws.stream.close(http2.NGHTTP2_CANCEL);
  });

  it("gives the client the backend's refusal with its status and body, and 404 for a path no rule routes", async () => {
    const session = await client();
    const refused = await open(session, "/ws/refused");
    expect(refused.status).toBe(403);
    expect(await refused.closed).toBe(http2.NGHTTP2_NO_ERROR);
    expect(refused.body).toBe("no, not\n");
    expect((await open(session, "/elsewhere")).status).toBe(404);
    await eventually(() => expect(access.find((entry) => entry.path === "/ws/refused")).toMatchObject({ method: "CONNECT", status: 403 }));
  });

  it("resets the client's stream when the backend is cut (never a clean end), and cuts the backend when the client resets", async () => {
    const session = await client();
    const dying = await open(session, "/ws/die");
    await eventually(() => expect(dying.messages).toEqual(["hello"]));
    dying.stream.write(clientFrame("die"));
    expect(await dying.closed).not.toBe(http2.NGHTTP2_NO_ERROR);
    expect(dying.closeCode).toBeUndefined();
    await eventually(() => expect(gateway.stats().counters["http upgraded connection cut by backend"]).toBeGreaterThan(0));
    await eventually(() => expect(access.find((entry) => entry.path === "/ws/die")).toMatchObject({ status: 200, reason: expect.any(String) }));

    // A stream the client resets (Node's client ends its side first, then RST_STREAM(CANCEL)): a cut, said as one.
    const cancelled = await open(session, "/ws/cancel");
    await eventually(() => expect(cancelled.messages).toEqual(["hello"]));
    cancelled.stream.close(http2.NGHTTP2_CANCEL);
    await eventually(() => expect(sessions.at(-1)?.closed).toBe(1006));
    await eventually(() => expect(access.find((entry) => entry.path === "/ws/cancel")).toMatchObject({ status: 200, reason: expect.any(String) }));
    expect(gateway.stats().counters["http upgraded connection cut by client"]).toBeGreaterThan(0);

    // A client whose connection drops (Node ends the stream's reading side after its close): an RST at the backend.
    const dropping = await client();
    const leaving = await open(dropping, "/ws/leave");
    await eventually(() => expect(leaving.messages).toEqual(["hello"]));
    const seen = sessions.at(-1)!;
    dropping.destroy();
    // The backend hears of it as a cut (an RST; 1006: no close frame came), never as a FIN, a client that said goodbye.
    await eventually(() => expect(seen.closed).toBe(1006));
    expect(seen.tcp).toBe("ECONNRESET");
    await eventually(() => expect(access.find((entry) => entry.path === "/ws/leave")).toMatchObject({ status: 200, reason: expect.any(String) }));
  });
});
