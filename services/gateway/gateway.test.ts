/**
 * The gateway actor on real sockets, with real clients (curl, openssl, socat)
 * and real backends (test/support/gateway-backends.ts) on this node, for both
 * configurations (Istio and the Gateway API) held to one contract: HTTP/1.1 and
 * h2c by host, path and header; HTTPS terminated with a Secret (HTTP/1.1 and
 * HTTP/2 by ALPN); TLS passed through by SNI; TLS terminated to TCP; TCP by port;
 * gRPC to an HTTP/2 backend and a WebSocket session; retries and timeouts; 90/10 weights; a dead endpoint ejected while requests
 * keep succeeding; bad routes refused with reasons while the rest serves.
 * Backends on other nodes, through the tunnel, are test/gateway-lab.test.ts.
 */
import { execFile } from "node:child_process";
import { Agent, request } from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogKey } from "../../bus/catalog.ts";
import { silentLogger } from "../../lib/log.ts";
import { normalizeObject } from "../controller/normalize.ts";
import { selfSignedCertificate } from "../../test/support/certificates.ts";
import { startGatewayBackends, type GatewayBackends } from "../../test/support/gateway-backends.ts";
import { grpcCall, webSocketSession } from "../../test/support/gateway-clients.ts";
import { backendManifests, certificateSecrets, ingressManifests, type IngressStyle } from "../../test/support/gateway-manifests.ts";
import { freePort } from "../../test/support/ports.ts";
import { catalogFeed } from "../../test/support/gateway-fixture.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";

function run(command: string, args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { timeout: 15_000 }, (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }));
    if (input !== undefined) child.stdin?.end(input);
  });
}

const dir = mkdtempSync(join(tmpdir(), "leafmesh-gateway-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const caFile = (name: string, hosts: string[]) => {
  const path = join(dir, `${name}.pem`);
  writeFileSync(path, selfSignedCertificate(hosts).cert);
  return path;
};

describe.each(["istio", "gateway-api"] as IngressStyle[])("the gateway serving the %s configuration", (style) => {
  let backends: GatewayBackends;
  let gateway: GatewayActor;
  let feed: IndexFeed;
  const ports = { http: 0, https: 0, tls: 0, tcp: 0 };
  let deadPort = 0;
  const accessLog: object[] = [];

  beforeAll(async () => {
    backends = await startGatewayBackends({ host: "127.0.0.1", basePort: 0 });
    for (const key of Object.keys(ports) as (keyof typeof ports)[]) ports[key] = await freePort();
    deadPort = await freePort(); // nothing listens there: a dead endpoint
    const endpoints = backends.endpoints();
    // web-v1 has a second endpoint that is dead: it is ejected and requests keep succeeding.
    endpoints["web-v1"] = [...endpoints["web-v1"]!, { ip: "127.0.0.1", port: deadPort }];
    feed = catalogFeed([...ingressManifests(style, { ports, bad: true }), ...backendManifests(endpoints), ...certificateSecrets()]);
    gateway = createGatewayActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: (entry) => accessLog.push(entry) });
    await gateway.start();
  }, 60_000);

  afterAll(async () => {
    await gateway?.stop();
    await backends?.close();
  });

  const curl = (args: string[]) => run("curl", ["-s", "--max-time", "5", ...args]);
  const http = (host: string, path: string, extra: string[] = []) => curl(["-H", `Host: ${host}`, ...extra, `http://127.0.0.1:${ports.http}${path}`]);

  it("listens on every port of the plan and refuses the bad routes with their reasons", () => {
    const status = gateway.status();
    expect(status.listeners.map((listener) => `${listener.port} ${listener.kind} ${listener.state}`).sort()).toEqual(
      [`${ports.http} http listening`, `${ports.https} tls listening`, `${ports.tls} tls listening`, `${ports.tcp} tcp listening`].sort(),
    );
    expect(status.listeners).toHaveLength(4);
    expect(status.refused.map((refusal) => refusal.reason).sort()).toEqual(["bad regex", "missing secret", "unknown service"]);
    expect(status.refused.find((refusal) => refusal.reason === "unknown service")?.error).toContain("shop/nope");
    expect(status.counters["refused: bad regex"]).toBe(1);
  });

  it("routes HTTP/1.1 by host, path and header", async () => {
    expect((await http("shop.example.com", "/exact")).stdout).toBe("exact\n");
    expect((await http("shop.example.com", "/api/orders")).stdout).toBe("api\n");
    expect((await http("shop.example.com", "/items/42")).stdout).toBe("items\n");
    expect((await http("shop.example.com", "/", ["-H", "x-canary: yes"])).stdout).toBe("canary\n");
    expect((await http("a.wild.example.com", "/")).stdout).toBe("wild\n");
    // The backend sees the client's Host and path, and the client's address appended to what it said (the last one is the gateway's word).
    const seen = await http("shop.example.com", "/api/x?y=1", ["-D", "-"]);
    expect(seen.stdout).toMatch(/x-seen-host: shop\.example\.com/);
    expect(seen.stdout).toMatch(/x-seen-path: \/api\/x\?y=1/);
    expect(seen.stdout).toMatch(/x-seen-forwarded-for: 127\.0\.0\.1\r?\n/);
    expect(seen.stdout).toMatch(/x-seen-forwarded-proto: http\r?\n/);
    const spoofed = await http("shop.example.com", "/api/x", ["-D", "-", "-H", "X-Forwarded-For: 6.6.6.6"]);
    expect(spoofed.stdout).toMatch(/x-seen-forwarded-for: 6\.6\.6\.6, 127\.0\.0\.1\r?\n/);
  });

  it("keeps backend connections alive between requests (one curl, 20 requests: not 20 connections)", async () => {
    const before = backends.connections.exact;
    const urls = Array.from({ length: 20 }, () => `http://127.0.0.1:${ports.http}/exact`);
    const reply = await curl(["-H", "Host: shop.example.com", ...urls]);
    expect(reply.stdout).toBe("exact\n".repeat(20));
    expect(backends.connections.exact - before).toBeLessThanOrEqual(2);
  });

  it("answers 404 for a host or path nobody routes, and the bad routes' hosts get nothing", async () => {
    expect((await http("other.org", "/", ["-o", "/dev/null", "-w", "%{http_code}"])).stdout).toBe("404");
    expect((await http("bad-svc.example.com", "/", ["-o", "/dev/null", "-w", "%{http_code}"])).stdout).toBe("404");
  });

  it("routes a request in absolute form by its target, not Host, on its normalized path, and sends the backend that; refuses CONNECT", async () => {
    // What a client configured with the gateway as its HTTP proxy sends (RFC 9112 §3.2.2: the target's authority wins over Host).
    const absolute = await http("other.org", "", ["--request-target", "http://shop.example.com/api/x?y=1", "-D", "-"]);
    expect(absolute.stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(absolute.stdout).toMatch(/x-seen-host: shop\.example\.com/);
    expect(absolute.stdout).toMatch(/x-seen-path: \/api\/x\?y=1/);
    expect(absolute.stdout).toMatch(/\napi\n$/);
    expect((await http("other.org", "", ["--request-target", "HTTP://shop.example.com?q", "-D", "-"])).stdout).toMatch(/x-seen-path: \/\?q/);
    // Dot segments are routed as the backend will read them: "/exact/../api/x" is /api's, not /exact's.
    const dotted = await http("shop.example.com", "/exact/../api/x", ["--path-as-is", "-D", "-"]);
    expect(dotted.stdout).toMatch(/x-seen-path: \/api\/x\r?\n/);
    expect(dotted.stdout).toMatch(/\napi\n$/);
    expect((await http("shop.example.com", "/%2e/exact", ["--path-as-is"])).stdout).toBe("exact\n");
    const connect = await http("shop.example.com", "", ["-X", "CONNECT", "--request-target", "shop.example.com:80", "-o", "/dev/null", "-w", "%{http_code}"]);
    expect(connect.stdout).toBe("405");
    expect(accessLog.at(-1)).toMatchObject({ method: "CONNECT", status: 405, reason: "CONNECT is not served" });
  });

  it("speaks h2c with prior knowledge on the HTTP port", async () => {
    const reply = await http("shop.example.com", "/api/v2", ["--http2-prior-knowledge", "-w", " %{http_version}"]);
    expect(reply.stdout).toBe("api\n 2");
  });

  it("speaks HTTP/2 to a gRPC backend (messages one at a time, trailers back) and carries a WebSocket session", async () => {
    const call = await grpcCall(`http://127.0.0.1:${ports.http}`, "grpc.example.com", ["m1", "m2", "m3"]);
    expect(call).toEqual({ status: 200, backend: "grpc", answers: ["grpc:m1m2m3"], grpcStatus: "0", ending: "end" });
    expect(await webSocketSession(`ws://127.0.0.1:${ports.http}/socket`, "live.example.com", ["one", "two"])).toEqual({ received: ["live", "live one", "live two"], closeCode: 1000 });
  });

  it("streams a request body through", async () => {
    const body = join(dir, "body.bin");
    writeFileSync(body, Buffer.alloc(3 * 1024 * 1024, 7));
    expect((await http("shop.example.com", "/api/upload", ["--data-binary", `@${body}`])).stdout).toBe("api got 3145728 bytes\n");
  });

  it("terminates HTTPS with the Secret's certificate, HTTP/1.1 and HTTP/2 by ALPN", async () => {
    const ca = caFile("secure", ["secure.example.com"]);
    const base = ["--cacert", ca, "--resolve", `secure.example.com:${ports.https}:127.0.0.1`, `https://secure.example.com:${ports.https}/`, "-w", " %{http_version}"];
    expect((await curl(["--http1.1", ...base])).stdout).toBe("secure\n 1.1");
    expect((await curl(["--http2", ...base])).stdout).toBe("secure\n 2");
  });

  it("passes TLS through by SNI: the client sees the backend's own certificate", async () => {
    const ca = caFile("pass", ["pass.example.com"]);
    const reply = await curl(["--cacert", ca, "--resolve", `pass.example.com:${ports.tls}:127.0.0.1`, `https://pass.example.com:${ports.tls}/`]);
    expect(reply.stdout).toBe("tls-pass\n");
  });

  it("terminates TLS to a TCP backend (socat)", async () => {
    const reply = await run("socat", ["-t", "2", "-", `OPENSSL:127.0.0.1:${ports.tls},verify=0,snihost=term.example.com`], "hello over tls\n");
    expect(reply.stdout).toContain("hello over tls");
  });

  it("resets a TLS client whose server name nobody routes", async () => {
    const reply = await run("openssl", ["s_client", "-connect", `127.0.0.1:${ports.tls}`, "-servername", "nope.example.com"], "");
    expect(reply.code).not.toBe(0);
    expect(gateway.status().counters["tls no route for the server name"]).toBeGreaterThanOrEqual(1);
  });

  it("joins TCP by port (socat)", async () => {
    const reply = await run("socat", ["-t", "2", "-", `TCP:127.0.0.1:${ports.tcp}`], "hello over tcp\n");
    expect(reply.stdout).toBe("hello over tcp\n");
  });

  it("retries a 503 and times out a slow backend with 504", async () => {
    expect((await http("retry.example.com", "/")).stdout).toBe("flaky\n");
    expect((await http("slow.example.com", "/", ["-o", "/dev/null", "-w", "%{http_code}"])).stdout).toBe("504");
  });

  it("splits 90/10 within 3 % over 2,000 requests, and ejects the dead endpoint while every request succeeds", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 16 });
    const counts = new Map<string, number>();
    const one = () =>
      new Promise<void>((resolve, reject) => {
        const outgoing = request({ host: "127.0.0.1", port: ports.http, path: "/", headers: { host: "shop.example.com" }, agent }, (response) => {
          const backend = String(response.headers["x-backend"] ?? response.statusCode);
          counts.set(backend, (counts.get(backend) ?? 0) + 1);
          response.resume();
          response.on("end", resolve);
        });
        outgoing.on("error", reject);
        outgoing.end();
      });
    for (let batch = 0; batch < 100; batch++) await Promise.all(Array.from({ length: 20 }, one));
    agent.destroy();
    expect([...counts.keys()].sort()).toEqual(["web-v1", "web-v2"]);
    const share = counts.get("web-v1")! / 2_000;
    expect(share).toBeGreaterThan(0.87);
    expect(share).toBeLessThan(0.93);
    expect(gateway.status().counters, JSON.stringify(gateway.status().counters)).toHaveProperty("endpoint ejected");
    expect(gateway.status().routeStats[style === "istio" ? "VirtualService shop/shop" : "HTTPRoute shop/shop"]["2xx"]).toBeGreaterThanOrEqual(2_000);
  });

  it("survives what strangers send: garbage, half hellos, a broken h2 preface, resets mid-request; and keeps serving", async () => {
    const { connect } = await import("node:net");
    const send = (port: number, bytes: Buffer, reset: boolean) =>
      new Promise<void>((resolve) => {
        const socket = connect({ host: "127.0.0.1", port }, () => {
          socket.write(bytes);
          if (reset) setImmediate(() => socket.resetAndDestroy());
          else socket.end();
        });
        socket.on("error", () => resolve());
        socket.on("close", () => resolve());
        socket.resume();
      });
    const hello = Buffer.from([22, 3, 1, 0x02, 0x00, 1, 0, 0x01, 0xfc, 3, 3]);
    const cases: [number, Buffer][] = [
      [ports.tls, Buffer.from("GET / HTTP/1.1\r\n\r\n")],
      [ports.tls, hello],
      [ports.tls, Buffer.concat([hello, Buffer.alloc(600, 0xff)])],
      [ports.https, Buffer.alloc(64, 0x16)],
      [ports.http, Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\xff\x09garbage")],
      [ports.http, Buffer.from("GET / HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 99\r\n\r\nabc")],
      [ports.http, Buffer.from("\x00\x01\x02 not http at all\r\n\r\n")],
      [ports.tcp, Buffer.from("hello")],
    ];
    for (const [port, bytes] of cases) for (const reset of [false, true]) await send(port, bytes, reset);
    expect((await http("shop.example.com", "/api/still")).stdout).toBe("api\n");
    expect(gateway.status().counters["tls not a ClientHello"]).toBeGreaterThanOrEqual(1);
  });

  it("follows the catalog: a route removed stops being served, and a port that cannot be opened is a failed listener", async () => {
    const key = style === "istio" ? "vs.shop.wild" : "httproute.shop.wild";
    feed.reader.apply({ op: "delete", key });
    feed.notify([key]);
    await gateway.settled();
    expect((await http("a.wild.example.com", "/", ["-o", "/dev/null", "-w", "%{http_code}"])).stdout).toBe("404");

    // A Gateway on a port something else holds (a backend's): a failed listener with its reason; the rest serves.
    const busy = backends.ports.echo;
    const gatewayName = "busy";
    const raws =
      style === "istio"
        ? [
            { apiVersion: "networking.istio.io/v1beta1", kind: "Gateway", metadata: { name: gatewayName, namespace: "shop" }, spec: { selector: {}, servers: [{ port: { number: busy, name: "tcp", protocol: "TCP" }, hosts: ["*"] }] } },
            { apiVersion: "networking.istio.io/v1beta1", kind: "VirtualService", metadata: { name: "busy", namespace: "shop" }, spec: { hosts: ["*"], gateways: [gatewayName], tcp: [{ route: [{ destination: { host: "echo", port: { number: 80 } } }] }] } },
          ]
        : [
            { apiVersion: "gateway.networking.k8s.io/v1", kind: "Gateway", metadata: { name: gatewayName, namespace: "shop" }, spec: { gatewayClassName: "leafmesh", listeners: [{ name: "tcp", port: busy, protocol: "TCP" }] } },
            { apiVersion: "gateway.networking.k8s.io/v1alpha2", kind: "TCPRoute", metadata: { name: "busy", namespace: "shop" }, spec: { parentRefs: [{ name: gatewayName }], rules: [{ backendRefs: [{ name: "echo", port: 80 }] }] } },
          ];
    const keys: string[] = [];
    for (const raw of raws) {
      const result = normalizeObject(raw);
      if (result.status !== "ok") throw new Error(JSON.stringify(result));
      keys.push(catalogKey(result.object));
      feed.reader.apply({ op: "put", key: catalogKey(result.object), object: result.object });
    }
    feed.notify(keys);
    await gateway.settled();
    const failed = gateway.status().listeners.find((listener) => listener.port === busy);
    expect(failed).toMatchObject({ state: "failed" });
    expect((failed as { error?: string }).error).toContain("in use");
    expect(gateway.status().counters["listener failed"]).toBe(1);
    expect((await http("shop.example.com", "/exact")).stdout).toBe("exact\n");
  });
});
