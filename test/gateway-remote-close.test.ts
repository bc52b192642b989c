/**
 * docs/gateway.md's agent, its backend on another node that closes its connection after each answer
 * (HTTP/1.0, as python's http.server does): real hub and agent processes with keys, the backend reached
 * through a direct TLS tunnel stream. The agent died after the first request through its gateway: the
 * gateway closed the tunnel stream from inside its 'data' handler, the stream's end frame then reached a
 * destroyed TLS socket, and Node 24 threw ERR_OUT_OF_RANGE from TLSWrap's read callback. And beside edge-b's,
 * endpoints on a node the tunnel cannot reach (edge-z: no record), for an HTTP/1.1 and an HTTP/2 backend: a connect
 * the tunnel fails is held against the endpoint alike for both (docs/gateway.md, Outlier ejection).
 */
import { request } from "node:http";
import { createServer, type Server } from "node:net";
import { createServer as createHttp2Server, type Http2Server } from "node:http2";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCliOk as cli, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess } from "./support/processes.ts";
import { eventually, freePort } from "./support/ports.ts";
import { requireTools } from "./support/trust-servers.ts";

let backend: Server;
let rpcBackend: Http2Server;
let gatewayNode: AgentProcess;
let gatewayPort: number;

beforeAll(async () => {
  requireTools();
  const base = tempDir("leafmesh-gateway-close-");
  const keys = join(base, "keys");
  await cli("keys", "init", "--dir", keys);
  for (const node of ["edge-a", "edge-b"]) await cli("keys", "issue", "--dir", keys, "--node", node);
  backend = createServer((socket) => {
    socket.once("data", () => socket.end("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"));
    socket.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
  const backendPort = (backend.address() as { port: number }).port;
  rpcBackend = createHttp2Server();
  rpcBackend.on("stream", (stream) => (stream.on("error", () => undefined), stream.respond({ ":status": 200 }), stream.end("h2 hello")));
  await new Promise<void>((resolve) => rpcBackend.listen(0, "127.0.0.1", resolve));
  const rpcPort = (rpcBackend.address() as { port: number }).port;
  gatewayPort = await freePort();
  const manifests = join(base, "shop.yaml");
  writeFileSync(
    manifests,
    `apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { clusterIP: 198.19.7.10, ports: [ { name: http, port: 80, targetPort: ${backendPort} } ] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: shop, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
endpoints: [ { addresses: ["127.0.0.1"], nodeName: edge-b, conditions: { ready: true } } ]
ports: [ { name: http, port: ${backendPort}, protocol: TCP } ]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: { name: edge, namespace: shop }
spec: { selector: { site: shop-7 }, servers: [ { port: { number: ${gatewayPort}, name: http, protocol: HTTP }, hosts: ["shop.example.com", "api.example.com", "rpc.example.com"] } ] }
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: shop, namespace: shop }
spec: { hosts: ["shop.example.com"], gateways: ["edge"], http: [ { route: [ { destination: { host: web, port: { number: 80 } } } ] } ] }
${[
  ["api", "http", backendPort, "198.19.7.11"],
  ["rpc", "grpc", rpcPort, "198.19.7.12"],
]
  .map(
    ([name, portName, port, clusterIP]) => `---
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: shop }
spec: { clusterIP: ${clusterIP}, ports: [ { name: ${portName}, port: 80 } ] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: ${name}-1, namespace: shop, labels: { kubernetes.io/service-name: ${name} } }
addressType: IPv4
endpoints: [ { addresses: ["127.0.0.1"], nodeName: edge-b, conditions: { ready: true } }, { addresses: ["198.18.0.77"], nodeName: edge-z, conditions: { ready: true } } ]
ports: [ { name: ${portName}, port: ${port}, protocol: TCP } ]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: ${name}, namespace: shop }
spec: { hosts: ["${name}.example.com"], gateways: ["edge"], http: [ { route: [ { destination: { host: ${name}, port: { number: 80 } } } ] } ] }
`,
  )
  .join("")}`,
  );
  const hub = await startHubProcess({ name: "hub-1", keys, manifests });
  await startAgentProcess({ node: "edge-b", hubs: [hub.leafUrl], keys: join(keys, "nodes", "edge-b"), extraArgs: ["--mdns", "off"] });
  gatewayNode = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], keys: join(keys, "nodes", "edge-a"), extraArgs: ["--mdns", "off", "--gateway", "127.0.0.1", "--node-labels", "site=shop-7"] });
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
  backend?.close();
  rpcBackend?.close();
});

const get = (host = "shop.example.com") =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const call = request({ host: "127.0.0.1", port: gatewayPort, path: "/", headers: { host }, agent: false, timeout: 10_000 }, (response) => {
      let body = "";
      response.on("data", (chunk: Buffer) => (body += chunk.toString()));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
    });
    call.on("error", reject);
    call.on("timeout", () => call.destroy(new Error("no answer within 10 s")));
    call.end();
  });

describe("the gateway with a backend on another node that closes after its answer", () => {
  it("answers request after request, and the agent lives on", { timeout: 90_000 }, async () => {
    // The first answer once the gateway listens and edge-b's record is known (a path to it).
    await eventually(async () => (await get().catch(() => undefined))?.body === "hello", 30_000, "the first answer through the gateway");
    for (let attempt = 0; attempt < 5; attempt++) {
      const answer = await get().catch((error: Error) => {
        throw new Error(`attempt ${attempt}: ${error.message}\n${gatewayNode.output().slice(-3000)}`);
      });
      expect(answer).toEqual({ status: 200, body: "hello" });
    }
    expect(gatewayNode.child.exitCode).toBeNull();
    expect(gatewayNode.output()).not.toContain("ERR_OUT_OF_RANGE");
  });
});

describe("the gateway with backends beside an endpoint on a node the tunnel cannot reach", () => {
  it("holds the unreachable node against its endpoints, HTTP/1.1 and HTTP/2 backends alike, every request answered from edge-b", { timeout: 60_000 }, async () => {
    for (const [host, body] of [["api.example.com", "hello"], ["rpc.example.com", "h2 hello"]]) {
      for (let attempt = 0; attempt < 8; attempt++) expect(await get(host)).toEqual({ status: 200, body });
    }
    const detail = (await gatewayNode.view()).status.actors.find((actor) => actor.name === "gateway")?.detail as { counters?: Record<string, number> } | undefined;
    expect(detail?.counters?.["endpoint ejected"], JSON.stringify(detail)).toBe(2);
    const ejected = gatewayNode.output().split("\n").filter((line) => line.includes("endpoint ejected") && line.includes("198.18.0.77"));
    expect(ejected.length).toBe(2);
    expect(ejected.join("\n")).toContain("unknown node 'edge-z'");
  });
});
