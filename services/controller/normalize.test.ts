import { describe, expect, it } from "vitest";
import { normalizeObject, fieldPath } from "./normalize.ts";

const service = (spec: object, metadata: object = { name: "web", namespace: "shop" }) => ({ apiVersion: "v1", kind: "Service", metadata, spec });
const problemsOf = (raw: unknown) => {
  const result = normalizeObject(raw);
  return result.status === "invalid" ? result.problems : [];
};

describe("normalizeObject", () => {
  it("normalises a ClusterIP Service with defaults", () => {
    const result = normalizeObject(service({ clusterIP: "198.19.0.1", ports: [{ port: 80 }] }));
    expect(result).toEqual({
      status: "ok",
      object: {
        kind: "Service",
        namespace: "shop",
        name: "web",
        type: "ClusterIP",
        headless: false,
        clusterIPs: ["198.19.0.1"],
        ipFamilies: ["IPv4"],
        externalName: undefined,
        ports: [{ name: "", protocol: "TCP", port: 80, targetPort: 80 }],
        sessionAffinity: "None",
        sessionAffinityTimeoutSeconds: 10_800,
        publishNotReadyAddresses: false,
        labels: {},
        annotations: {},
      },
    });
  });

  it("reads headless, dual-stack, NodePort, ExternalName, named target ports, UDP/SCTP and affinity", () => {
    const headless = normalizeObject(service({ clusterIP: "None", ports: [{ name: "dns", port: 53, protocol: "UDP", targetPort: "dns-port" }] }));
    expect(headless.status === "ok" && headless.object.kind === "Service" && headless.object.headless).toBe(true);
    const dual = normalizeObject(service({ clusterIPs: ["198.19.0.2", "fd00::2"], ports: [{ port: 80, protocol: "SCTP" }] }));
    expect(dual.status === "ok" && dual.object.kind === "Service" && dual.object.ipFamilies).toEqual(["IPv4", "IPv6"]);
    const nodePort = normalizeObject(service({ type: "NodePort", clusterIP: "198.19.0.3", ports: [{ port: 80, nodePort: 30080 }] }));
    expect(nodePort.status === "ok" && nodePort.object.kind === "Service" && nodePort.object.ports[0].nodePort).toBe(30080);
    const external = normalizeObject(service({ type: "ExternalName", externalName: "Example.COM." }));
    expect(external.status === "ok" && external.object.kind === "Service" && external.object.externalName).toBe("example.com");
    const affinity = normalizeObject(service({ clusterIP: "198.19.0.4", ports: [{ port: 80 }], sessionAffinity: "ClientIP", sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } }));
    expect(affinity.status === "ok" && affinity.object.kind === "Service" && affinity.object.sessionAffinityTimeoutSeconds).toBe(60);
  });

  it.each([
    ["a Service without a name", service({ ports: [{ port: 80 }] }, { namespace: "shop" }), "metadata.name"],
    ["a port out of range", service({ clusterIP: "198.19.0.1", ports: [{ port: 70000 }] }), "spec.ports[0].port"],
    ["a negative target port", service({ clusterIP: "198.19.0.1", ports: [{ port: 80, targetPort: -1 }] }), "spec.ports[0].targetPort"],
    ["a bad cluster IP", service({ clusterIP: "300.1.2.3", ports: [{ port: 80 }] }), "spec.clusterIP"],
    ["a bad name", service({ ports: [{ port: 80 }] }, { name: "Web_1" }), "metadata.name"],
    ["a bad namespace", service({ ports: [{ port: 80 }] }, { name: "web", namespace: "Shop" }), "metadata.namespace"],
    ["unnamed ports when there are two", service({ clusterIP: "198.19.0.1", ports: [{ port: 80 }, { port: 81 }] }), "spec.ports[0].name"],
    ["a duplicate port", service({ clusterIP: "198.19.0.1", ports: [{ name: "a", port: 80 }, { name: "b", port: 80 }] }), "spec.ports[1]"],
    ["an unknown protocol", service({ clusterIP: "198.19.0.1", ports: [{ port: 80, protocol: "HTTP" }] }), "spec.ports[0].protocol"],
    ["an ExternalName without a name", service({ type: "ExternalName" }), "spec.externalName"],
    ["a ClusterIP Service without ports", service({ clusterIP: "198.19.0.1" }), "spec.ports"],
    ["two IPv4 cluster IPs", service({ clusterIPs: ["198.19.0.1", "198.19.0.2"], ports: [{ port: 80 }] }), "spec.clusterIPs[1]"],
    ["an unknown kind", { apiVersion: "v1", kind: "Sevrice", metadata: { name: "web" } }, "kind"],
    ["no kind", { apiVersion: "v1", metadata: { name: "web" } }, "kind"],
    ["a slice without its service label", { apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice", metadata: { name: "s" }, addressType: "IPv4", endpoints: [] }, 'metadata.labels["kubernetes.io/service-name"]'],
    ["a slice with an IPv6 address in an IPv4 slice", { apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice", metadata: { name: "s", labels: { "kubernetes.io/service-name": "web" } }, addressType: "IPv4", endpoints: [{ addresses: ["fd00::1"] }] }, "endpoints[0].addresses[0]"],
    ["a slice port out of range", { apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice", metadata: { name: "s", labels: { "kubernetes.io/service-name": "web" } }, addressType: "IPv4", endpoints: [], ports: [{ port: 0 }] }, "ports[0].port"],
  ])("rejects %s, naming the field", (_what, raw, field) => {
    const problems = problemsOf(raw);
    expect(problems.map((problem) => problem.field)).toContain(field);
    for (const problem of problems) expect(problem.message.length).toBeGreaterThan(3);
  });

  it("says what type a field needed and what it got", () => {
    expect(problemsOf(service({ clusterIP: "198.19.0.1", ports: [{ port: "eighty" }] }))).toEqual([{ field: "spec.ports[0].port", message: "must be a number (got string)" }]);
    expect(problemsOf(service({}, { namespace: "shop" }))).toContainEqual({ field: "metadata.name", message: "is required" });
    expect(problemsOf(service({ clusterIP: "198.19.0.1", ports: [{ port: 80.5 }] }))).toEqual([{ field: "spec.ports[0].port", message: "must be a whole number (got 80.5)" }]);
    expect(problemsOf(service({ clusterIP: "198.19.0.1", selector: ["app"] }))).toEqual([{ field: "spec.selector", message: "must be a mapping (got a list)" }]);
  });

  it("refuses a field of the wrong type once, for its type, not for checks that only fit the right type", () => {
    // zod 4 also ran the list's length check on the text and added "needs at least one address".
    const slice = { apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice", metadata: { name: "s", labels: { "kubernetes.io/service-name": "web" } }, addressType: "IPv4", endpoints: [{ addresses: "" }] };
    expect(problemsOf(slice)).toEqual([{ field: "endpoints[0].addresses", message: "must be a list (got string)" }]);
  });

  it("ignores known workload kinds and reads EndpointSlice conditions as the API defines them", () => {
    expect(normalizeObject({ apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" } })).toEqual({ status: "ignored", kind: "Deployment" });
    const slice = normalizeObject({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: "web-1", namespace: "shop", labels: { "kubernetes.io/service-name": "web" } },
      addressType: "IPv4",
      endpoints: [
        { addresses: ["198.18.0.1"] },
        { addresses: ["198.18.0.2"], conditions: { ready: false, terminating: true } },
        { addresses: ["198.18.0.3"], conditions: { ready: false, serving: true }, hostname: "pod-3", nodeName: "edge-b", zone: "z1" },
      ],
      ports: [{ name: "http", port: 8080 }],
    });
    expect(slice.status).toBe("ok");
    if (slice.status !== "ok" || slice.object.kind !== "EndpointSlice") return;
    expect(slice.object.endpoints.map((endpoint) => endpoint.conditions)).toEqual([
      { ready: true, serving: true, terminating: false },
      { ready: false, serving: false, terminating: true },
      { ready: false, serving: true, terminating: false },
    ]);
    expect(slice.object.endpoints[2]).toMatchObject({ hostname: "pod-3", nodeName: "edge-b", zone: "z1" });
    expect(slice.object.ports).toEqual([{ name: "http", protocol: "TCP", port: 8080 }]);
  });

  it("reads an Istio DestinationRule's load balancer", () => {
    const rule = normalizeObject({
      apiVersion: "networking.istio.io/v1beta1",
      kind: "DestinationRule",
      metadata: { name: "web", namespace: "shop" },
      spec: { host: "web.shop.svc.cluster.local", trafficPolicy: { loadBalancer: { simple: "LEAST_CONN" } } },
    });
    expect(rule.status === "ok" && rule.object).toMatchObject({ kind: "DestinationRule", host: "web.shop.svc.cluster.local", loadBalancer: { simple: "LEAST_CONN" } });
  });

  it("takes IPv6 cluster IPs and endpoint addresses, and refuses one with a zone, naming the field", () => {
    expect(normalizeObject(service({ clusterIPs: ["198.19.0.1", "fd00:99::1"], ports: [{ port: 80 }] })).status).not.toBe("invalid");
    expect(problemsOf(service({ clusterIPs: ["fe80::1%eth0"], ports: [{ port: 80 }] }))).toEqual([
      { field: "spec.clusterIPs[0]", message: "'fe80::1%eth0' carries a zone ('%eth0'): an address of the cluster cannot name one node's interface (leave the zone out)" },
    ]);
    const slice = (address: string) => ({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: "web-a", namespace: "shop", labels: { "kubernetes.io/service-name": "web" } },
      addressType: "IPv6",
      endpoints: [{ addresses: [address] }],
      ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    });
    expect(normalizeObject(slice("fd00:1::11")).status).not.toBe("invalid");
    expect(problemsOf(slice("fd00:1::11%2"))).toEqual([{ field: "endpoints[0].addresses[0]", message: expect.stringContaining("carries a zone ('%2')") }]);
  });

  it("writes field paths the way kubectl does", () => {
    expect(fieldPath(["spec", "ports", 0, "port"])).toBe("spec.ports[0].port");
    expect(fieldPath([])).toBe("");
  });
});
