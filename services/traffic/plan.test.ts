import { describe, expect, it } from "vitest";
import { CatalogIndex } from "../../bus/catalog-index.ts";
import { catalogKey, type CatalogObject, type DestinationRule } from "../../bus/catalog.ts";
import { affectedServices, choosePolicy, planServicePorts } from "./plan.ts";
import { testService } from "../../test/support/traffic-catalog.ts";

const rule = (loadBalancer: DestinationRule["loadBalancer"], host = "web"): DestinationRule => ({
  kind: "DestinationRule",
  namespace: "lab",
  name: "web-rule",
  host,
  loadBalancer,
  labels: {},
  annotations: {},
});

describe("policy choice", () => {
  const { service } = testService({ name: "web", clusterIP: "198.19.0.1" });

  it("defaults to round robin and maps DestinationRule load balancers", () => {
    expect(choosePolicy(service, undefined)).toEqual({ policy: "round-robin", source: "default" });
    expect(choosePolicy(service, rule({ simple: "RANDOM" })).policy).toBe("random");
    expect(choosePolicy(service, rule({ simple: "LEAST_CONN" })).policy).toBe("least-connections");
    expect(choosePolicy(service, rule({ simple: "LEAST_REQUEST" })).policy).toBe("least-connections");
    expect(choosePolicy(service, rule({ simple: "ROUND_ROBIN" })).source).toBe("destination-rule");
    expect(choosePolicy(service, rule({ consistentHash: { useSourceIp: true } })).policy).toBe("consistent-hash");
    expect(choosePolicy(service, rule({ simple: "PASSTHROUGH" })).policy).toBe("round-robin");
  });

  it("lets the annotation win, rejects an unknown value by name, and adds affinity", () => {
    const annotated = testService({ name: "web", clusterIP: "198.19.0.1", annotations: { "service.leafmesh.io/lb-policy": "random" }, affinityTimeoutSeconds: 30 }).service;
    expect(choosePolicy(annotated, rule({ simple: "LEAST_CONN" }))).toEqual({ policy: "random", source: "annotation", affinityTimeoutMs: 30_000 });
    const bad = testService({ name: "web", clusterIP: "198.19.0.1", annotations: { "service.leafmesh.io/lb-policy": "Round-Robin" } }).service;
    expect(() => choosePolicy(bad, undefined)).toThrow(/lab\/web: annotation service.leafmesh.io\/lb-policy: 'Round-Robin' is not a policy \(expected one of round-robin, random, least-connections, consistent-hash\)/);
  });
});

describe("service port plans", () => {
  it("plans both cluster IPs of a dual-stack Service; endpoints from its IPv4 slice, from an IPv6 slice only when there is no IPv4 one", () => {
    const index = new CatalogIndex();
    const put = (object: CatalogObject) => index.apply({ op: "put", key: catalogKey(object), object });
    const dual = testService({ name: "dual", clusterIP: "198.19.0.5", endpoints: [{ ip: "198.18.1.2" }] });
    put({ ...dual.service, clusterIPs: ["198.19.0.5", "fd00:99::5"], ipFamilies: ["IPv4", "IPv6"] });
    put(dual.slice);
    // Kubernetes mirrors the same pod into a slice of each family.
    put({ ...dual.slice, name: "dual-v6", addressType: "IPv6", endpoints: [{ ...dual.slice.endpoints[0], addresses: ["fd00:1::2"] }] });
    const only6 = testService({ name: "only6", clusterIP: "fd00:99::6", endpoints: [{ ip: "fd00:1::3" }] });
    put({ ...only6.service, ipFamilies: ["IPv6"] });
    put({ ...only6.slice, addressType: "IPv6" });
    const { plans } = planServicePorts(index);
    expect(plans.get("lab/dual:main/TCP")).toMatchObject({ clusterIPs: ["198.19.0.5", "fd00:99::5"], endpoints: [{ host: "198.18.1.2", port: 8080 }] });
    expect(plans.get("lab/only6:main/TCP")).toMatchObject({ clusterIPs: ["fd00:99::6"], endpoints: [{ key: "[fd00:1::3]:8080", host: "fd00:1::3", port: 8080 }] });
  });

  it("keeps ready IPv4 endpoints per port, skips noproxy, headless and bad annotations, reads destination rules from the catalog", () => {
    const index = new CatalogIndex();
    const put = (object: CatalogObject) => index.apply({ op: "put", key: catalogKey(object), object });
    const web = testService({
      name: "web",
      clusterIP: "198.19.0.1",
      ports: [
        { name: "http", protocol: "TCP", port: 80, targetPort: 8080 },
        { name: "dns", protocol: "UDP", port: 53, targetPort: 5353 },
      ],
      endpoints: [{ ip: "198.18.1.3", node: "edge-b" }, { ip: "198.18.1.2" }, { ip: "198.18.1.9", ready: false }],
    });
    put(web.service);
    put(web.slice);
    put(rule({ simple: "LEAST_CONN" }, "web.lab.svc.cluster.local"));
    const skipped = testService({ name: "skip", clusterIP: "198.19.0.2", labels: { "service.leafmesh.io/noproxy": "" }, endpoints: [{ ip: "198.18.1.2" }] });
    put(skipped.service);
    const headless = testService({ name: "headless", clusterIP: "198.19.0.3" });
    put({ ...headless.service, headless: true, clusterIPs: [] });
    const bad = testService({ name: "bad", clusterIP: "198.19.0.4", annotations: { "service.leafmesh.io/lb-policy": "nope" } });
    put(bad.service);

    const { plans, rejected } = planServicePorts(index);
    expect([...plans.keys()].sort()).toEqual(["lab/web:dns/UDP", "lab/web:http/TCP"]);
    expect(plans.get("lab/web:http/TCP")).toMatchObject({
      port: 80,
      protocol: "TCP",
      clusterIPs: ["198.19.0.1"],
      policy: { policy: "least-connections", source: "destination-rule" },
      endpoints: [
        { key: "198.18.1.2:8080", host: "198.18.1.2", port: 8080 },
        { key: "198.18.1.3:8080", host: "198.18.1.3", port: 8080, nodeName: "edge-b" },
      ],
    });
    expect(plans.get("lab/web:dns/UDP")!.endpoints.map((e) => e.key)).toEqual(["198.18.1.2:5353", "198.18.1.3:5353"]);
    expect(rejected).toEqual([{ service: "lab/bad", reason: "invalid lb-policy annotation", error: expect.stringContaining("'nope'") }]);
  });

  it("falls back to serving, terminating endpoints when none is ready", () => {
    const index = new CatalogIndex();
    const { service, slice } = testService({ name: "roll", clusterIP: "198.19.0.5", endpoints: [{ ip: "198.18.1.2", ready: false }, { ip: "198.18.1.3", ready: false }] });
    slice.endpoints[0].conditions = { ready: false, serving: true, terminating: true };
    slice.endpoints[1].conditions = { ready: false, serving: false, terminating: true };
    index.apply({ op: "put", key: catalogKey(service), object: service });
    index.apply({ op: "put", key: catalogKey(slice), object: slice });
    expect(planServicePorts(index).plans.get("lab/roll:main/TCP")!.endpoints.map((e) => e.host)).toEqual(["198.18.1.2"]);
    slice.endpoints[1].conditions = { ready: true, serving: true, terminating: false };
    index.apply({ op: "put", key: catalogKey(slice), object: { ...slice } });
    expect(planServicePorts(index).plans.get("lab/roll:main/TCP")!.endpoints.map((e) => e.host)).toEqual(["198.18.1.3"]);
  });
});

describe("which services a change affects", () => {
  const index = new CatalogIndex();
  const { service, slice } = testService({ name: "web", clusterIP: "198.19.0.1" });
  for (const object of [service, slice] as CatalogObject[]) index.apply({ op: "put", key: catalogKey(object), object });
  const none = () => undefined;

  it("names the service of a service key and of a slice key (from the slice's body)", () => {
    expect(affectedServices([catalogKey(service)], index, none)).toEqual(new Set(["lab/web"]));
    expect(affectedServices([catalogKey(slice)], index, none)).toEqual(new Set(["lab/web"]));
    expect(affectedServices(["svc.shop.api", "svc.shop.api"], index, none)).toEqual(new Set(["shop/api"]));
  });

  it("asks the caller for a slice that is gone, and takes both owners of a slice that moved", () => {
    expect(affectedServices(["eps.lab.gone-slice"], index, (key) => (key === "eps.lab.gone-slice" ? "lab/old" : undefined))).toEqual(new Set(["lab/old"]));
    expect(affectedServices([catalogKey(slice)], index, () => "lab/previous-owner")).toEqual(new Set(["lab/previous-owner", "lab/web"]));
    expect(affectedServices(["eps.lab.never-seen"], index, none)).toEqual(new Set());
  });

  it("re-plans everything for a DestinationRule (its key does not name its service) or an unknown key", () => {
    expect(affectedServices([catalogKey(service), "dr.lab.web-rule"], index, none)).toBe("all");
    expect(affectedServices(["weird"], index, none)).toBe("all");
  });

  it("re-plans nothing for the gateway's objects (routes, Gateways, TLS Secrets): traffic does not read them", () => {
    expect(affectedServices(["httproute.lab.web", "gw.lab.edge", "vs.lab.web", "igw.lab.edge", "tcproute.lab.db", "tlsroute.lab.tls", "tls.lab.cert"], index, none)).toEqual(new Set());
  });
});
