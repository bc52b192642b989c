/**
 * WebSocket through the gateway (http-upgrade.ts), with real clients and a real
 * WebSocket server behind it, in both configurations (Istio and the Gateway
 * API): over plain HTTP/1.1 and over HTTPS terminated with a Secret, messages
 * both ways; routed by path like any request; a backend's refusal passed back
 * as it is; a backend cut mid-session reaching the client as a cut (1006), and
 * a client cut reaching the backend; an upgrade that is not WebSocket (h2c)
 * still answered as a plain request; one access-log line with 101.
 *
 * The server is `ws` (the WebSocket library @kubernetes/client-node depends on,
 * so it is installed wherever leafmesh is); the clients are Node's own
 * WebSocket (undici's, as in browsers) and `ws` for wss:// with a test CA.
 */
import type { Server } from "node:http";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogKey } from "../../bus/catalog.ts";
import { silentLogger } from "../../lib/log.ts";
import { selfSignedCertificate, tlsSecretManifest } from "../../test/support/certificates.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { normalizeObject } from "../controller/normalize.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";
import type { AccessEntry } from "./http-message.ts";
import { echoWebSocketBackend, ws, type EchoSession, type WsSocket } from "../../test/support/ws.ts";


const certificate = selfSignedCertificate(["live.example.com"]);

function manifests(style: "istio" | "gateway-api", ports: { http: number; https: number }, backendPort: number): object[] {
  const namespace = "shop";
  const service = { apiVersion: "v1", kind: "Service", metadata: { name: "live", namespace }, spec: { clusterIP: "198.19.79.1", ports: [{ name: "main", port: 80, protocol: "TCP" }] } };
  const slice = {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: "live-0", namespace, labels: { "kubernetes.io/service-name": "live" } },
    addressType: "IPv4",
    endpoints: [{ addresses: ["127.0.0.1"], conditions: { ready: true } }],
    ports: [{ name: "main", port: backendPort, protocol: "TCP" }],
  };
  const secret = tlsSecretManifest({ name: "live-cert", namespace }, certificate);
  if (style === "istio") {
    const servers = [
      // Any host on the plain port: Node's WebSocket (as a browser's) sends the address it dialled as Host.
      { port: { number: ports.http, name: "http", protocol: "HTTP" }, hosts: ["*"] },
      { port: { number: ports.https, name: "https", protocol: "HTTPS" }, hosts: ["live.example.com"], tls: { mode: "SIMPLE", credentialName: "live-cert" } },
    ];
    return [
      service,
      slice,
      secret,
      { apiVersion: "networking.istio.io/v1beta1", kind: "Gateway", metadata: { name: "edge", namespace }, spec: { selector: {}, servers } },
      { apiVersion: "networking.istio.io/v1beta1", kind: "VirtualService", metadata: { name: "live", namespace }, spec: { gateways: ["edge"], hosts: ["*"], http: [{ match: [{ uri: { prefix: "/ws/" } }], route: [{ destination: { host: "live", port: { number: 80 } } }] }] } },
    ];
  }
  const listeners = [
    // Any host on the plain port: Node's WebSocket (as a browser's) sends the address it dialled as Host.
    { name: "http", port: ports.http, protocol: "HTTP" },
    { name: "https", port: ports.https, protocol: "HTTPS", hostname: "live.example.com", tls: { mode: "Terminate", certificateRefs: [{ name: "live-cert" }] } },
  ];
  return [
    service,
    slice,
    secret,
    { apiVersion: "gateway.networking.k8s.io/v1", kind: "Gateway", metadata: { name: "edge", namespace }, spec: { gatewayClassName: "leafmesh", listeners } },
    { apiVersion: "gateway.networking.k8s.io/v1", kind: "HTTPRoute", metadata: { name: "live", namespace }, spec: { parentRefs: [{ name: "edge" }], rules: [{ matches: [{ path: { type: "PathPrefix", value: "/ws/" } }], backendRefs: [{ name: "live", port: 80 }] }] } },
  ];
}

/** Raw bytes to a port and everything that comes back until the connection closes, `until` matches, or 3 s. */
function raw(port: number, bytes: string, until?: RegExp): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(bytes));
    let text = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      text += chunk;
      if (until?.test(text)) socket.destroy();
    });
    socket.on("error", () => undefined);
    const timer = setTimeout(() => socket.destroy(), 3_000);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(text);
    });
  });
}

describe.each(["istio", "gateway-api"] as const)("WebSocket through the gateway (%s)", (style) => {
  let backend: Server;
  let gateway: GatewayActor;
  const ports = { http: 0, https: 0 };
  const access: AccessEntry[] = [];
  /** The backend's side of each session, to cut it or read what it saw. */
  const sessions: EchoSession[] = [];

  beforeAll(async () => {
    backend = echoWebSocketBackend(sessions);
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    ports.http = await freePort();
    ports.https = await freePort();
    const feed = new IndexFeed();
    for (const object of manifests(style, ports, (backend.address() as { port: number }).port)) {
      const result = normalizeObject(object);
      if (result.status !== "ok") throw new Error(`fixture object refused: ${JSON.stringify(result)}`);
      feed.reader.apply({ op: "put", key: catalogKey(result.object), object: result.object });
    }
    gateway = createGatewayActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: (entry) => void (entry.kind === "http" && access.push(entry)) });
    await gateway.start();
    expect(gateway.status().refused).toEqual([]);
  }, 30_000);

  afterAll(async () => {
    await gateway?.stop();
    backend?.closeAllConnections();
    await new Promise((resolve) => backend?.close(resolve));
  });

  /** A client session and the messages it got, in order; resolves once open. */
  async function open(url: string, client: WsSocket | WebSocket): Promise<{ messages: string[]; closed: Promise<number>; send(text: string): void; close(): void }> {
    const messages: string[] = [];
    let closed!: (code: number) => void;
    const closing = new Promise<number>((resolve) => (closed = resolve));
    if ("addEventListener" in client) {
      client.addEventListener("message", (event) => messages.push(String(event.data)));
      client.addEventListener("close", (event) => closed(event.code));
      await new Promise((resolve, reject) => {
        client.addEventListener("open", resolve);
        client.addEventListener("error", () => reject(new Error(`${url}: the WebSocket did not open`)));
      });
    } else {
      client.on("message", (data) => messages.push(data.toString()));
      client.on("close", (code) => closed(code));
      await new Promise((resolve, reject) => {
        client.on("open", resolve);
        client.on("error", (error) => reject(error as Error));
      });
    }
    return { messages, closed: closing, send: (text) => client.send(text), close: () => (client as WebSocket).close(1000, "done") };
  }

  it("carries a session both ways over plain HTTP/1.1 (a browser's WebSocket), routed by path, the backend seeing the client's request", async () => {
    const before = sessions.length;
    const session = await open("ws", new WebSocket(`ws://127.0.0.1:${ports.http}/ws/chat?room=7`));
    session.send("one");
    session.send("two");
    await eventually(() => expect(session.messages).toEqual(["hello", "echo one", "echo two"]));
    const seen = sessions[before];
    expect(seen.path).toBe("/ws/chat?room=7");
    expect(seen.headers.host).toBe(`127.0.0.1:${ports.http}`);
    expect(seen.headers["x-forwarded-for"]).toBe("127.0.0.1");
    expect(seen.headers["x-forwarded-proto"]).toBe("http");
    session.close();
    expect(await session.closed).toBe(1000);
    // One line per upgrade, written when it ended: 101, its route, the whole session.
    await eventually(() => expect(access.some((entry) => entry.path === "/ws/chat" && entry.status === 101 && entry.route !== undefined)).toBe(true));
    expect(gateway.stats().counters["http upgraded"]).toBeGreaterThan(0);
  });

  it("carries a session over HTTPS terminated with the Secret's certificate (wss://)", async () => {
    // The name is the gateway's (SNI and Host), the address this machine's: as a client whose DNS points at the gateway.
    const session = await open("wss", new ws.WebSocket(`wss://127.0.0.1:${ports.https}/ws/secure`, { ca: certificate.cert, servername: "live.example.com", headers: { host: "live.example.com" } }));
    session.send("tls");
    await eventually(() => expect(session.messages).toEqual(["hello", "echo tls"]));
    expect(sessions.at(-1)?.headers["x-forwarded-proto"]).toBe("https");
    session.close();
    expect(await session.closed).toBe(1000);
  });

  it("passes a backend's refusal back as it is and closes; a path no rule routes is 404", async () => {
    const key = "dGhlIHNhbXBsZSBub25jZQ==";
    const refused = await raw(ports.http, `GET /ws/refused HTTP/1.1\r\nHost: live.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`);
    expect(refused).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(refused).toMatch(/connection: close\r\n/i);
    expect(refused.endsWith("no, not\n")).toBe(true);
    const unrouted = await raw(ports.http, `GET /elsewhere HTTP/1.1\r\nHost: live.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`);
    expect(unrouted).toMatch(/^HTTP\/1\.1 404 Not Found\r\n/);
  });

  it("takes Firefox's 'Connection: keep-alive, Upgrade' and an upper-case 'WebSocket' for an upgrade too", async () => {
    const key = "dGhlIHNhbXBsZSBub25jZQ==";
    const answer = await raw(ports.http, `GET /ws/firefox HTTP/1.1\r\nHost: live.example.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`, /\r\n\r\n/);
    expect(answer).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
    // RFC 6455's own example: the backend's accept for this key, passed through.
    expect(answer).toMatch(/sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i);
  });

  it("answers an upgrade that is not WebSocket (h2c) as a plain request", async () => {
    const answer = await raw(ports.http, "GET /ws/plain HTTP/1.1\r\nHost: live.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
    expect(answer).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(answer.endsWith("plain\n")).toBe(true);
  });

  it("ends a session the backend cuts as a cut at the client (1006, no clean close), and one the client cuts at the backend", async () => {
    const dying = await open("ws", new WebSocket(`ws://127.0.0.1:${ports.http}/ws/die`));
    await eventually(() => expect(dying.messages).toEqual(["hello"]));
    dying.send("die");
    expect(await dying.closed).toBe(1006);
    await eventually(() => expect(gateway.stats().counters["http upgraded connection cut by backend"]).toBeGreaterThan(0));

    const before = sessions.length;
    const leaving = new ws.WebSocket(`ws://127.0.0.1:${ports.http}/ws/leave`, { headers: { host: "live.example.com" } });
    const session = await open("ws", leaving);
    await eventually(() => expect(session.messages).toEqual(["hello"]));
    leaving._socket.resetAndDestroy();
    // The backend hears of it (1006: no close frame came) rather than holding the session.
    await eventually(() => expect(sessions[before]?.closed).toBe(1006));
  });
});
