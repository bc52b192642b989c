/**
 * internalTrafficPolicy: Local, as kube-proxy honours it: a node's clients reach
 * only the endpoints on that node (a node-local agent or cache must never be
 * answered by another node's copy); when it runs none they are refused at once
 * (kube-proxy drops, which leaves a client to its timeout).
 * It was read from Kubernetes and dropped: clients were sent to any node.
 * The traffic actor over real loopback sockets; the Service comes through the
 * controller's normalisation, as from the API.
 */
import { createServer, type Server } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogKey, type CatalogObject } from "../../bus/catalog.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { listenerAddress, whoAnswers } from "../../test/support/traffic-catalog.ts";
import { normalizeObject } from "../controller/normalize.ts";
import { createTrafficActor, type TrafficActor } from "./actor.ts";

const localHost = "127.0.0.2"; // runs on edge-a, this node
const remoteHost = "127.0.0.3"; // runs on edge-b

function normalised(raw: object): CatalogObject {
  const result = normalizeObject(raw);
  if (result.status !== "ok") throw new Error(`not normalised: ${JSON.stringify(result)}`);
  return result.object;
}

function put(feed: IndexFeed, objects: CatalogObject[]): void {
  const keys = objects.map((object) => catalogKey(object)).filter((key, index) => feed.reader.apply({ op: "put", key, object: objects[index] }));
  feed.notify(keys);
}

describe("internalTrafficPolicy", () => {
  let port = 0;
  const servers: Server[] = [];
  let traffic: TrafficActor | undefined;

  const objects = (policy: "Cluster" | "Local" | undefined, endpoints: { ip: string; node: string }[]) => [
    normalised({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "agent", namespace: "lab" },
      spec: { clusterIP: "198.19.0.40", ...(policy ? { internalTrafficPolicy: policy } : {}), ports: [{ name: "main", port: 80, targetPort: port, protocol: "TCP" }] },
    }),
    normalised({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: "agent-1", namespace: "lab", labels: { "kubernetes.io/service-name": "agent" } },
      addressType: "IPv4",
      endpoints: endpoints.map((endpoint) => ({ addresses: [endpoint.ip], nodeName: endpoint.node, conditions: { ready: true } })),
      ports: [{ name: "main", port, protocol: "TCP" }],
    }),
  ];

  beforeAll(async () => {
    port = await freePort();
    for (const host of [localHost, remoteHost]) {
      const server = createServer((socket) => {
        socket.on("error", () => undefined);
        socket.end(`${host}\n`);
      });
      await new Promise<void>((resolve) => server.listen(port, host, resolve));
      servers.push(server);
    }
  });
  afterEach(async () => {
    await traffic?.stop();
    traffic = undefined;
  });
  afterAll(async () => {
    for (const server of servers) await new Promise((resolve) => server.close(resolve));
  });

  it("is kept from the Kubernetes object: Local, and absent for Cluster", () => {
    expect(objects("Local", [])[0]).toMatchObject({ kind: "Service", internalTrafficPolicy: "Local" });
    expect(objects("Cluster", [])[0]).not.toHaveProperty("internalTrafficPolicy");
    expect(normalizeObject({ apiVersion: "v1", kind: "Service", metadata: { name: "x" }, spec: { clusterIP: "198.19.0.41", internalTrafficPolicy: "Nearby", ports: [{ port: 80 }] } })).toMatchObject({
      status: "invalid",
      problems: [{ field: "spec.internalTrafficPolicy", message: "must be Cluster or Local" }],
    });
  });

  it("Local: only this node's endpoint answers; with none here, refused at once; Cluster reaches the other node's", async () => {
    const feed = new IndexFeed();
    put(feed, objects("Local", [{ ip: remoteHost, node: "edge-b" }]));
    traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", connectTimeoutMs: 1000 });
    await traffic.start();
    const listener = () => listenerAddress(traffic!.listeners().find((binding) => binding.key === "lab/agent:main/TCP"))!;
    // Only another node runs it: a reset, not the other node's copy.
    for (let i = 0; i < 3; i++) expect(await whoAnswers(listener())).toBe("ECONNRESET");
    expect(traffic.stats().counters["tcp refused: no endpoints"]).toBe(3);

    put(feed, objects("Local", [{ ip: remoteHost, node: "edge-b" }, { ip: localHost, node: "edge-a" }]));
    await eventually(async () => (await whoAnswers(listener())) === localHost, 5_000, "the local endpoint");
    for (let i = 0; i < 6; i++) expect(await whoAnswers(listener())).toBe(localHost);

    put(feed, objects("Cluster", [{ ip: remoteHost, node: "edge-b" }]));
    await eventually(async () => (await whoAnswers(listener())) === remoteHost, 5_000, "the other node's endpoint under Cluster");
  });
});
