/**
 * Which stream targets only internalTrafficPolicy Local Services lead to (local-only.ts), over a real
 * catalog index: per (address, port, protocol), whatever form a peer writes the address in; another
 * Service of any other kind on the same pod port keeps it served. test/local-traffic-policy.test.ts
 * has it through the agent's tunnel.
 */
import { describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogKey, type CatalogObject } from "../../bus/catalog.ts";
import { testService } from "../../test/support/traffic-catalog.ts";
import { canonicalAddress, LocalOnlyEndpoints } from "./local-only.ts";

function put(feed: IndexFeed, objects: CatalogObject[]): void {
  feed.notify(objects.map((object) => catalogKey(object)).filter((key, index) => feed.reader.apply({ op: "put", key, object: objects[index] })));
}

/** A Service on the pod's port 8125, TCP, with one endpoint at `address` on `node`. */
function onPod(name: string, address: string, changes: (service: ReturnType<typeof testService>["service"]) => void = () => undefined, node = "edge-b"): CatalogObject[] {
  const { service, slice } = testService({ namespace: "lab", name, clusterIP: "198.19.0.70", ports: [{ name: "main", protocol: "TCP", port: 80, targetPort: 8125 }], endpoints: [{ ip: address, node }] });
  if (address.includes(":")) slice.addressType = "IPv6";
  changes(service);
  return [service, slice];
}

const local = (service: { internalTrafficPolicy?: "Local" | "Cluster" }) => void (service.internalTrafficPolicy = "Local");

describe("LocalOnlyEndpoints", () => {
  it("names an address as the kernel does", () => {
    expect(canonicalAddress("10.0.0.5")).toBe("10.0.0.5");
    expect(canonicalAddress("FD00:0:0::5")).toBe("fd00::5");
    expect(canonicalAddress("::ffff:10.0.0.5")).toBe("10.0.0.5");
    expect(canonicalAddress("fe80::1%eth0")).toBe("fe80::1");
    expect(canonicalAddress("10.5")).toBeUndefined(); // a name to resolve: the stream server checks what it resolves to
  });

  it("refuses only what Local Services alone lead to, in any spelling of the address, and follows changes", () => {
    const feed = new IndexFeed();
    put(feed, onPod("node-agent", "fd00::5", local));
    const index = new LocalOnlyEndpoints(feed, "edge-b");
    expect(index.refusal({ host: "FD00:0::5", port: 8125, protocol: "TCP" })).toContain("(lab/node-agent)");
    expect(index.refusal({ host: "fd00::5", port: 8126, protocol: "TCP" })).toBeUndefined(); // another port of the pod
    expect(index.refusal({ host: "fd00::5", port: 8125, protocol: "UDP" })).toBeUndefined();
    expect(index.refusal({ host: "127.0.0.1", port: 8125, protocol: "TCP" })).toBeUndefined(); // no Service's endpoint
    // Another node's endpoints are that node's to refuse: this one holds none of them.
    put(feed, onPod("other-agent", "10.0.0.7", local, "edge-c"));
    expect(index.refusal({ host: "10.0.0.7", port: 8125, protocol: "TCP" })).toBeUndefined();

    // A headless Service (SOCKS dials its endpoints at their node) on the same pod port: served.
    put(feed, onPod("node-agent-headless", "fd00::5", (service) => Object.assign(service, { headless: true, clusterIPs: [] })));
    expect(index.refusal({ host: "fd00::5", port: 8125, protocol: "TCP" })).toBeUndefined();
    // It turns Local too (it is not proxied, so the policy means nothing for it): still served.
    put(feed, onPod("node-agent-headless", "fd00::5", (service) => Object.assign(service, { headless: true, clusterIPs: [], internalTrafficPolicy: "Local" })));
    expect(index.refusal({ host: "fd00::5", port: 8125, protocol: "TCP" })).toBeUndefined();
    // Gone: refused again; the Local Service turned Cluster: served.
    feed.reader.apply({ op: "delete", key: "svc.lab.node-agent-headless" });
    feed.notify(["svc.lab.node-agent-headless"]);
    expect(index.refusal({ host: "fd00::5", port: 8125, protocol: "TCP" })).toContain("lab/node-agent");
    put(feed, onPod("node-agent", "fd00::5"));
    expect(index.refusal({ host: "fd00::5", port: 8125, protocol: "TCP" })).toBeUndefined();

    // Its slice moved to another address: the old one is no Service's endpoint, the new one is Local's alone.
    put(feed, onPod("node-agent", "10.0.0.9", local));
    expect(index.refusal({ host: "fd00::5", port: 8125, protocol: "TCP" })).toBeUndefined();
    expect(index.refusal({ host: "::ffff:10.0.0.9", port: 8125, protocol: "TCP" })).toContain("10.0.0.9:8125/TCP");
    index.stop();
    put(feed, onPod("node-agent", "10.0.0.9"));
    expect(index.refusal({ host: "10.0.0.9", port: 8125, protocol: "TCP" })).toBeDefined(); // stopped: no longer follows
  });
});
