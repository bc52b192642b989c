/**
 * The catalog index's slices of a Service: in the order they came, moved when a slice changes Service,
 * gone when deleted, and handed out as arrays that never change under their reader (copy on write).
 */
import { describe, expect, it } from "vitest";
import { CatalogIndex } from "./catalog-index.ts";
import { catalogKey, type EndpointSlice } from "./catalog.ts";

function slice(name: string, serviceName: string, address: string): EndpointSlice {
  return {
    kind: "EndpointSlice", namespace: "shop", name, serviceName, addressType: "IPv4",
    endpoints: [{ addresses: [address], nodeName: "edge-a", conditions: { ready: true, serving: true, terminating: false } }],
    ports: [{ name: "http", protocol: "TCP", port: 8080 }], labels: {}, annotations: {},
  };
}

function put(index: CatalogIndex, object: EndpointSlice): boolean {
  return index.apply({ op: "put", key: catalogKey(object), object });
}

const names = (slices: readonly EndpointSlice[]) => slices.map((each) => each.name);

describe("CatalogIndex slices", () => {
  it("keeps a Service's slices in the order they came; a changed slice goes last, a deleted one goes", () => {
    const index = new CatalogIndex();
    put(index, slice("web-a", "web", "198.18.0.1"));
    put(index, slice("web-b", "web", "198.18.0.2"));
    put(index, slice("api-a", "api", "198.18.0.3"));
    expect(names(index.slices("shop", "web"))).toEqual(["web-a", "web-b"]);
    expect(names(index.slices("shop", "api"))).toEqual(["api-a"]);

    put(index, slice("web-a", "web", "198.18.0.9"));
    expect(names(index.slices("shop", "web"))).toEqual(["web-b", "web-a"]);
    expect(index.slices("shop", "web")[1].endpoints[0].addresses).toEqual(["198.18.0.9"]);

    index.apply({ op: "delete", key: catalogKey(slice("web-b", "web", "")) });
    expect(names(index.slices("shop", "web"))).toEqual(["web-a"]);
    index.apply({ op: "delete", key: catalogKey(slice("web-a", "web", "")) });
    expect(index.slices("shop", "web")).toEqual([]);
    expect(index.slices("shop", "nothing")).toEqual([]);
  });

  it("moves a slice whose serviceName changes to its new Service", () => {
    const index = new CatalogIndex();
    put(index, slice("s-1", "web", "198.18.0.1"));
    put(index, slice("s-1", "api", "198.18.0.1"));
    expect(index.slices("shop", "web")).toEqual([]);
    expect(names(index.slices("shop", "api"))).toEqual(["s-1"]);
  });

  it("hands out arrays that later changes leave as they were, and that a reader cannot change", () => {
    const index = new CatalogIndex();
    put(index, slice("web-a", "web", "198.18.0.1"));
    const before = index.slices("shop", "web");
    put(index, slice("web-b", "web", "198.18.0.2"));
    put(index, slice("web-a", "web", "198.18.0.7"));
    index.apply({ op: "delete", key: catalogKey(slice("web-b", "web", "")) });
    expect(names(before)).toEqual(["web-a"]);
    expect(before[0].endpoints[0].addresses).toEqual(["198.18.0.1"]);
    expect(names(index.slices("shop", "web"))).toEqual(["web-a"]);
    expect(() => (index.slices("shop", "web") as EndpointSlice[]).push(slice("x", "web", "198.18.0.3"))).toThrow(TypeError);
    expect(() => (index.slices("shop", "none") as EndpointSlice[]).push(slice("x", "none", "198.18.0.3"))).toThrow(TypeError);
    expect(names(index.slices("shop", "web"))).toEqual(["web-a"]);
    expect(index.slices("shop", "none")).toEqual([]);
  });
});
