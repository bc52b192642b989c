/**
 * docs/gateway.md's agent, its backend on another node that closes its connection after each answer
 * (HTTP/1.0, as python's http.server does): real hub and agent processes with keys, the backend reached
 * through a direct TLS tunnel stream. The agent died after the first request through its gateway: the
 * gateway closed the tunnel stream from inside its 'data' handler, the stream's end frame then reached a
 * destroyed TLS socket, and Node 24 threw ERR_OUT_OF_RANGE from TLSWrap's read callback.
 */
import { request } from "node:http";
import { createServer, type Server } from "node:net";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCliOk as cli, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess } from "./support/processes.ts";
import { eventually, freePort } from "./support/ports.ts";
import { requireTools } from "./support/trust-servers.ts";

let backend: Server;
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
spec: { selector: { site: shop-7 }, servers: [ { port: { number: ${gatewayPort}, name: http, protocol: HTTP }, hosts: ["shop.example.com"] } ] }
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: { name: shop, namespace: shop }
spec: { hosts: ["shop.example.com"], gateways: ["edge"], http: [ { route: [ { destination: { host: web, port: { number: 80 } } } ] } ] }
`,
  );
  const hub = await startHubProcess({ name: "hub-1", keys, manifests });
  await startAgentProcess({ node: "edge-b", hubs: [hub.leafUrl], keys: join(keys, "nodes", "edge-b"), extraArgs: ["--mdns", "off"] });
  gatewayNode = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], keys: join(keys, "nodes", "edge-a"), extraArgs: ["--mdns", "off", "--gateway", "127.0.0.1", "--node-labels", "site=shop-7"] });
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
  backend?.close();
});

const get = () =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const call = request({ host: "127.0.0.1", port: gatewayPort, path: "/", headers: { host: "shop.example.com" }, agent: false, timeout: 10_000 }, (response) => {
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
