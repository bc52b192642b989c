import { describe, expect, it } from "vitest";
import { backendsOutsideSite, partitionPolicyOf, partitionView, refusalWhilePartitioned, UpstreamSwitch, withSiteMembers } from "./partition.ts";
import { IndexFeed } from "./catalog-feed.ts";
import { answerQuestion } from "../services/dns/zone.ts";
import type { EndpointSlice, Service } from "./catalog.ts";

const service = (name: string, annotations: Record<string, string> = {}): Service =>
  ({ kind: "Service", namespace: "shop", name, annotations, labels: {}, clusterIPs: ["198.19.0.9"], ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080 }], headless: false, type: "ClusterIP" }) as unknown as Service;

describe("partition policy", () => {
  it("reads the annotation, defaults to serve-last-known, and says why an unknown value is ignored", () => {
    expect(partitionPolicyOf(service("a")).policy).toBe("serve-last-known");
    expect(partitionPolicyOf(service("a", { "leafmesh.io/partition": "fail-closed" })).policy).toBe("fail-closed");
    expect(partitionPolicyOf(service("a", { "leafmesh.io/partition": "fail-open" }))).toEqual({ policy: "serve-last-known", problem: "leafmesh.io/partition: 'fail-open' is not one of serve-last-known, fail-closed: serve-last-known applies" });
    expect(refusalWhilePartitioned(service("a", { "leafmesh.io/partition": "fail-closed" }), [], { reach: "cloud" })).toBeUndefined();
    expect(refusalWhilePartitioned(service("a", { "leafmesh.io/partition": "fail-closed" }), [], { reach: "none" })).toBe("fail-closed while the node cannot reach its upstream");
    expect(refusalWhilePartitioned(service("a"), [], { reach: "none" })).toBeUndefined();
  });

  it("the DNS zone answers SERVFAIL for a withheld service's names, and the view's version moves with the upstream", () => {
    const feed = new IndexFeed();
    feed.reader.apply({ op: "put", key: "services.shop.pay", object: service("pay", { "leafmesh.io/partition": "fail-closed" }) });
    const upstream = new UpstreamSwitch("cloud");
    const view = partitionView(feed.reader, upstream);
    const options = { clusterDomain: "cluster.local", withheld: (candidate: Service) => refusalWhilePartitioned(candidate, [], upstream) !== undefined };
    expect(answerQuestion(view, { name: "pay.shop.svc.cluster.local", type: "A" }, options)?.rcode).toBe("NOERROR");
    const before = view.version;
    upstream.set("none");
    expect(view.version).not.toBe(before);
    expect(answerQuestion(view, { name: "pay.shop.svc.cluster.local", type: "A" }, options)?.rcode).toBe("SERVFAIL");
    expect(answerQuestion(view, { name: "_http._tcp.pay.shop.svc.cluster.local", type: "SRV" }, options)?.rcode).toBe("SERVFAIL");
    expect(answerQuestion(view, { name: "other.shop.svc.cluster.local", type: "A" }, options)?.rcode).toBe("NXDOMAIN");
    upstream.set("cloud");
    expect(answerQuestion(view, { name: "pay.shop.svc.cluster.local", type: "A" }, options)?.rcode).toBe("NOERROR");
  });

  it("while the site is cut off from the cloud, serves a fail-closed service whose ready backends are all in the site, refuses one with a backend outside", () => {
    const slice = (endpoints: { node?: string; ip: string; ready?: boolean }[]): EndpointSlice =>
      ({ kind: "EndpointSlice", namespace: "shop", name: "pay-1", service: "pay", ports: [{ name: "http", port: 8080, protocol: "TCP" }], endpoints: endpoints.map((endpoint) => ({ addresses: [endpoint.ip], nodeName: endpoint.node, conditions: { ready: endpoint.ready ?? true, serving: true, terminating: false } })) }) as unknown as EndpointSlice;
    const pay = service("pay", { "leafmesh.io/partition": "fail-closed" });
    const site = withSiteMembers(new UpstreamSwitch("site"), (node) => node === "edge-a" || node === "edge-b");
    const inside = [slice([{ node: "edge-a", ip: "10.0.0.1" }, { node: "edge-b", ip: "10.0.0.2" }, { node: "cloud-1", ip: "10.9.0.1", ready: false }])];
    expect(refusalWhilePartitioned(pay, inside, site)).toBeUndefined();
    const mixed = [slice([{ node: "edge-b", ip: "10.0.0.2" }, { node: "other-site-1", ip: "10.1.0.1" }, { ip: "203.0.113.7" }])];
    expect(refusalWhilePartitioned(pay, mixed, site)).toBe("fail-closed while the site is cut off from the cloud: a backend outside the site");
    expect(backendsOutsideSite(mixed, site)).toEqual(["203.0.113.7", "other-site-1"]);
    // Without the site's members known (no tunnel), only the node itself is inside: nothing else is vouched for.
    expect(refusalWhilePartitioned(pay, inside, { reach: "site" })).toBe("fail-closed while the site is cut off from the cloud: a backend outside the site");
    // Cut from the site too: refused whatever runs where; serve-last-known is never refused.
    expect(refusalWhilePartitioned(pay, inside, { reach: "none", insideSite: site.insideSite })).toBe("fail-closed while the node cannot reach its upstream");
    expect(refusalWhilePartitioned(service("telemetry"), mixed, site)).toBeUndefined();
  });
});
