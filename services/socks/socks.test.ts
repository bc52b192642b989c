import { describe, expect, it } from "vitest";
import { CatalogIndex } from "../../bus/catalog-index.ts";
import { catalogKey, type EndpointSlice, type Service } from "../../bus/catalog.ts";
import { parseGreeting, parseRequest, replyCodes } from "./protocol.ts";
import { resolveSocksTarget, serviceOfName } from "./resolve.ts";

const service: Service = {
  kind: "Service", namespace: "shop", name: "web", type: "ClusterIP", headless: false, clusterIPs: ["198.19.0.10"], ipFamilies: ["IPv4"],
  ports: [{ name: "http", protocol: "TCP", port: 80, targetPort: 8080 }], sessionAffinity: "None", sessionAffinityTimeoutSeconds: 10800, publishNotReadyAddresses: false, labels: {}, annotations: {},
};
const slice: EndpointSlice = {
  kind: "EndpointSlice", namespace: "shop", name: "web-1", serviceName: "web", addressType: "IPv4",
  endpoints: [
    { addresses: ["198.18.2.1"], nodeName: "edge-b", conditions: { ready: true, serving: true, terminating: false } },
    { addresses: ["198.18.2.2"], nodeName: "edge-c", conditions: { ready: false, serving: false, terminating: true } },
  ],
  ports: [{ name: "http", protocol: "TCP", port: 8081 }], labels: {}, annotations: {},
};
const catalog = new CatalogIndex();
for (const object of [service, slice]) catalog.apply({ op: "put", key: catalogKey(object), object });
const options = { clusterDomain: "cluster.local", node: "edge-a", knownNodes: new Set(["edge-a", "edge-b"]) };

describe("SOCKS5 wire format", () => {
  it("parses greetings and requests in pieces, and refuses what it does not speak", () => {
    expect(parseGreeting(Uint8Array.of(5))).toEqual({ status: "need", bytes: 1 });
    expect(parseGreeting(Uint8Array.of(5, 2, 0))).toEqual({ status: "need", bytes: 1 });
    expect(parseGreeting(Uint8Array.of(5, 2, 0, 2))).toEqual({ status: "ok", value: { methods: [0, 2] }, length: 4 });
    expect(parseGreeting(Uint8Array.of(4, 1, 0)).status).toBe("error");
    const name = new TextEncoder().encode("web.shop.svc.cluster.local");
    const request = Uint8Array.of(5, 1, 0, 3, name.length, ...name, 0, 80);
    expect(parseRequest(request.subarray(0, 10))).toEqual({ status: "need", bytes: request.length - 10 });
    expect(parseRequest(request)).toEqual({ status: "ok", value: { command: 1, host: "web.shop.svc.cluster.local", port: 80 }, length: request.length });
    expect(parseRequest(Uint8Array.of(5, 1, 0, 1, 198, 19, 0, 10, 0x1f, 0x90))).toMatchObject({ status: "ok", value: { host: "198.19.0.10", port: 8080 } });
    expect(parseRequest(Uint8Array.of(5, 2, 0, 1, 1, 2, 3, 4, 0, 80))).toMatchObject({ status: "error", reply: replyCodes.commandNotSupported });
    expect(parseRequest(Uint8Array.of(5, 1, 0, 9, 1, 2, 3, 4, 0, 80))).toMatchObject({ status: "error", reply: replyCodes.addressTypeNotSupported });
  });

  it("never throws on random bytes", () => {
    for (let round = 0; round < 20_000; round++) {
      const bytes = Uint8Array.from({ length: Math.floor(Math.random() * 40) }, () => Math.floor(Math.random() * 256));
      if (round % 2) bytes[0] = 5;
      expect(() => parseRequest(bytes)).not.toThrow();
      expect(() => parseGreeting(bytes)).not.toThrow();
    }
  });
});

describe("where a SOCKS CONNECT goes", () => {
  it("names a proxied Service by name or cluster IP, whose endpoint the node's cluster-IP path chooses", () => {
    for (const host of ["web.shop.svc.cluster.local", "web.shop.svc", "web.shop", "198.19.0.10"]) {
      expect(resolveSocksTarget(catalog, host, 80, options)).toEqual({ kind: "service", namespace: "shop", service: "web", port: 80 });
    }
    // internalTrafficPolicy, locality, ejection, affinity, the partition policy: the traffic actor's (cluster-ip-contract.test.ts).
    const local = new CatalogIndex();
    for (const object of [{ ...service, internalTrafficPolicy: "Local" as const }, slice]) local.apply({ op: "put", key: catalogKey(object), object });
    expect(resolveSocksTarget(local, "web.shop", 80, options)).toEqual({ kind: "service", namespace: "shop", service: "web", port: 80 });
  });

  it("sends a Service the node does not proxy where the node's own clients reach it", () => {
    const other = new CatalogIndex();
    const noproxy = { ...service, name: "legacy", clusterIPs: ["198.19.0.11"], labels: { "service.leafmesh.io/noproxy": "" } };
    const headless = { ...service, name: "db", headless: true, clusterIPs: [] };
    const external = { ...service, name: "mail", type: "ExternalName" as const, clusterIPs: [], externalName: "mail.example.org", ports: [] };
    for (const object of [noproxy, headless, external, { ...slice, serviceName: "db", name: "db-1" }]) other.apply({ op: "put", key: catalogKey(object), object });
    expect(resolveSocksTarget(other, "legacy.shop", 80, options)).toEqual({ kind: "direct", host: "198.19.0.11", port: 80 });
    expect(resolveSocksTarget(other, "db.shop", 80, options)).toEqual({ kind: "endpoint", service: "shop/db", node: "edge-b", host: "198.18.2.1", port: 8081 });
    expect(resolveSocksTarget(other, "mail.shop", 25, options)).toEqual({ kind: "direct", host: "mail.example.org", port: 25 });
    // Withheld under the partition policy, as DNS withholds the name.
    expect(resolveSocksTarget(other, "db.shop", 80, { ...options, withheld: () => "fail-closed while the node cannot reach its upstream" })).toEqual({ kind: "refused", reason: "Service shop/db: fail-closed while the node cannot reach its upstream" });
  });

  it("sends a node name to that node's own loopback through the tunnel", () => {
    expect(resolveSocksTarget(catalog, "edge-b", 22, options)).toEqual({ kind: "node", node: "edge-b", host: "127.0.0.1", port: 22 });
    expect(resolveSocksTarget(catalog, "edge-z.node", 22, options)).toEqual({ kind: "node", node: "edge-z", host: "127.0.0.1", port: 22 });
    expect(resolveSocksTarget(catalog, "edge-a", 22, options)).toEqual({ kind: "direct", host: "127.0.0.1", port: 22 });
    // The agent's known nodes are the tunnel's peers, without this node: its own name is its loopback all the same.
    const asTheAgentKnows = { ...options, knownNodes: new Set(["edge-b"]) };
    for (const name of ["edge-a", "EDGE-A", "edge-a.node"]) expect(resolveSocksTarget(catalog, name, 22, asTheAgentKnows)).toEqual({ kind: "direct", host: "127.0.0.1", port: 22 });
  });

  it("refuses a missing Service or port clearly, and dials anything else as given", () => {
    expect(resolveSocksTarget(catalog, "nope.shop.svc.cluster.local", 80, options)).toEqual({ kind: "refused", reason: "no Service shop/nope" });
    expect(resolveSocksTarget(catalog, "example.org", 443, options)).toEqual({ kind: "direct", host: "example.org", port: 443 });
    expect(serviceOfName("a.b.c.d", "cluster.local")).toBeUndefined();
  });
});
