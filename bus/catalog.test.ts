/**
 * decodeCatalogObject: what is the same in every object (empty labels and annotations, an endpoint's
 * conditions) is one shared, frozen object in memory; what differs stays each object's own, and decoding
 * still refuses a malformed value with the field that is wrong.
 */
import { describe, expect, it } from "vitest";
import { normalisedCatalog } from "../bench/fabric/catalog.ts";
import { decodeCatalogObject, encodeCatalogObject, type EndpointSlice, type Service } from "./catalog.ts";

describe("decoding catalog objects", () => {
  const [[, service], [, slice], [, otherService], [, otherSlice]] = normalisedCatalog(2) as [string, Service | EndpointSlice][];

  it("shares empty labels and annotations and each triple of endpoint conditions, frozen, and keeps the rest each object's own", () => {
    const [a, b] = [decodeCatalogObject(encodeCatalogObject(service)), decodeCatalogObject(encodeCatalogObject(otherService))] as Service[];
    expect(a).toEqual(service);
    expect(a.annotations).toBe(b.annotations);
    expect(Object.isFrozen(a.annotations)).toBe(true);
    expect(() => ((a.annotations as Record<string, string>).added = "x")).toThrow(TypeError);
    expect(a.ports).not.toBe(b.ports);

    const notReady: EndpointSlice = { ...(otherSlice as EndpointSlice), endpoints: (otherSlice as EndpointSlice).endpoints.map((endpoint, index) => (index === 0 ? { ...endpoint, conditions: { ready: false, serving: false, terminating: true } } : endpoint)) };
    const [first, second] = [decodeCatalogObject(encodeCatalogObject(slice)), decodeCatalogObject(encodeCatalogObject(notReady))] as EndpointSlice[];
    expect(first).toEqual(slice);
    expect(second).toEqual(notReady);
    expect(first.endpoints[0].conditions).toBe(second.endpoints[1].conditions);
    expect(second.endpoints[0].conditions).toEqual({ ready: false, serving: false, terminating: true });
    expect(second.endpoints[0].conditions).not.toBe(first.endpoints[0].conditions);
    expect(Object.isFrozen(first.endpoints[0].conditions)).toBe(true);
    // Labels that are not empty are the object's own.
    expect(first.labels).toEqual({ "kubernetes.io/service-name": "svc-0" });
    expect(first.labels).not.toBe(second.labels);
  });

  it("still refuses a malformed value, naming the field", () => {
    const broken = { ...(slice as EndpointSlice), endpoints: [{ addresses: ["10.0.0.1"], conditions: { ready: "yes" } }] };
    expect(() => decodeCatalogObject(new TextEncoder().encode(JSON.stringify(broken)))).toThrow(/ready/);
  });
});
