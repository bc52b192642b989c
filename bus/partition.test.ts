import { describe, expect, it } from "vitest";
import { partitionPolicyOf, partitionView, refusalWhilePartitioned, UpstreamSwitch } from "./partition.ts";
import { IndexFeed } from "./catalog-feed.ts";
import { answerQuestion } from "../services/dns/zone.ts";
import type { Service } from "./catalog.ts";

const service = (name: string, annotations: Record<string, string> = {}): Service =>
  ({ kind: "Service", namespace: "shop", name, annotations, labels: {}, clusterIPs: ["198.19.0.9"], ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080 }], headless: false, type: "ClusterIP" }) as unknown as Service;

describe("partition policy", () => {
  it("reads the annotation, defaults to serve-last-known, and says why an unknown value is ignored", () => {
    expect(partitionPolicyOf(service("a")).policy).toBe("serve-last-known");
    expect(partitionPolicyOf(service("a", { "leafmesh.io/partition": "fail-closed" })).policy).toBe("fail-closed");
    expect(partitionPolicyOf(service("a", { "leafmesh.io/partition": "fail-open" }))).toEqual({ policy: "serve-last-known", problem: "leafmesh.io/partition: 'fail-open' is not one of serve-last-known, fail-closed: serve-last-known applies" });
    expect(refusalWhilePartitioned(service("a", { "leafmesh.io/partition": "fail-closed" }), true)).toBeUndefined();
    expect(refusalWhilePartitioned(service("a", { "leafmesh.io/partition": "fail-closed" }), false)).toBe("fail-closed while the node cannot reach its upstream");
    expect(refusalWhilePartitioned(service("a"), false)).toBeUndefined();
  });

  it("the DNS zone answers SERVFAIL for a withheld service's names, and the view's version moves with the upstream", () => {
    const feed = new IndexFeed();
    feed.reader.apply({ op: "put", key: "services.shop.pay", object: service("pay", { "leafmesh.io/partition": "fail-closed" }) });
    const upstream = new UpstreamSwitch(true);
    const view = partitionView(feed.reader, upstream);
    const options = { clusterDomain: "cluster.local", withheld: (candidate: Service) => refusalWhilePartitioned(candidate, upstream.online) !== undefined };
    expect(answerQuestion(view, { name: "pay.shop.svc.cluster.local", type: "A" }, options)?.rcode).toBe("NOERROR");
    const before = view.version;
    upstream.set(false);
    expect(view.version).not.toBe(before);
    expect(answerQuestion(view, { name: "pay.shop.svc.cluster.local", type: "A" }, options)?.rcode).toBe("SERVFAIL");
    expect(answerQuestion(view, { name: "_http._tcp.pay.shop.svc.cluster.local", type: "SRV" }, options)?.rcode).toBe("SERVFAIL");
    expect(answerQuestion(view, { name: "other.shop.svc.cluster.local", type: "A" }, options)?.rcode).toBe("NXDOMAIN");
    upstream.set(true);
    expect(answerQuestion(view, { name: "pay.shop.svc.cluster.local", type: "A" }, options)?.rcode).toBe("NOERROR");
  });
});
