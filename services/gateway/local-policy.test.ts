/**
 * A Service with internalTrafficPolicy Local, behind the gateway: its endpoints on other nodes serve clients on their
 * own node only (services/traffic/local-only.ts refuses the gateway's streams to them), so the gateway balances over
 * this node's endpoints alone, as the cluster IP does (balance/endpoints.ts slicesServedTo), and never opens a stream
 * that would only be refused and counted against the endpoint. The real gateway actor and a real backend; the other
 * node's endpoints sit behind a dialer that records each open and refuses it, as that node would.
 */
import { createServer, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StreamDialer } from "../../bus/streams.ts";
import { silentLogger } from "../../lib/log.ts";
import { catalogFeed, getWithHost } from "../../test/support/gateway-fixture.ts";
import { backendManifests, certificateSecrets, ingressManifests } from "../../test/support/gateway-manifests.ts";
import { freePort } from "../../test/support/ports.ts";
import { createGatewayActor, type GatewayActor } from "./actor.ts";

let backend: Server;
let gateway: GatewayActor;
const ports = { http: 0, https: 0, tls: 0, tcp: 0 };
/** The streams the gateway asked for to another node: node and target. */
const opens: string[] = [];

beforeAll(async () => {
  backend = createServer((socket) => {
    socket.on("error", () => undefined);
    socket.on("data", (chunk: Buffer) => {
      if (chunk.includes("\r\n\r\n")) socket.write("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nlocal");
    });
  });
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
  const backendPort = (backend.address() as { port: number }).port;
  for (const key of Object.keys(ports) as (keyof typeof ports)[]) ports[key] = await freePort();
  const remote = [{ ip: "198.18.90.5", port: 8080, node: "edge-b" }, { ip: "198.18.90.6", port: 8080, node: "edge-c" }];
  const objects = [
    ...ingressManifests("istio", { ports }),
    // wild: one endpoint on this node (edge-a), two elsewhere; flaky: only elsewhere.
    ...backendManifests({ wild: [remote[0], { ip: "127.0.0.1", port: backendPort, node: "edge-a" }, remote[1]], flaky: remote }),
    ...certificateSecrets(),
  ];
  for (const object of objects as { kind: string; metadata: { name: string }; spec: Record<string, unknown> }[]) {
    if (object.kind === "Service" && (object.metadata.name === "wild" || object.metadata.name === "flaky")) object.spec.internalTrafficPolicy = "Local";
  }
  const dialer: StreamDialer = {
    async openStream(node, to) {
      opens.push(`${node} ${to.host}:${to.port}`);
      throw new Error(`${node} refused: target served to its own node only (internalTrafficPolicy Local)`);
    },
  };
  gateway = createGatewayActor({ feed: catalogFeed(objects), log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", access: () => undefined, dialer });
  await gateway.start();
}, 30_000);

afterAll(async () => {
  await gateway?.stop();
  await new Promise((resolve) => backend?.close(resolve));
});

const get = (host: string) => getWithHost(ports.http, host);

describe("the gateway and a Service whose internalTrafficPolicy is Local", () => {
  it("balances over this node's endpoints alone: no stream is opened to the endpoints on other nodes", async () => {
    const answers = [];
    for (let i = 0; i < 9; i++) answers.push(await get(`a${i}.wild.example.com`));
    expect(answers.map((answer) => `${answer.status} ${answer.body}`)).toEqual(Array(9).fill("200 local"));
    expect(opens).toEqual([]);
  });

  it("with no endpoint on this node, answers 503 at once and opens no stream", async () => {
    const answer = await get("retry.example.com");
    expect(answer.status).toBe(503);
    expect(opens).toEqual([]);
  });
});
