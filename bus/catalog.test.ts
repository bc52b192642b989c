/**
 * decodeCatalogObject: what is the same in every object (empty labels and annotations, an endpoint's
 * conditions) is one shared, frozen object in memory; what differs stays each object's own, and decoding
 * still refuses a malformed value with the field that is wrong. encodeCatalogEvent: the event carries the
 * KV value's own text, and a reader decodes from it what the node holds.
 */
import { describe, expect, it } from "vitest";
import { normalisedCatalog } from "../bench/fabric/catalog.ts";
import { decodeCatalogObject, encodeCatalogObject, parseCatalogObject, type CatalogObject, type EndpointSlice, type Service } from "./catalog.ts";
import { decodeEvent, encodeCatalogEvent } from "./events.ts";

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

describe("catalog events", () => {
  const [[key, service]] = normalisedCatalog(1) as [string, Service][];
  const at = "2026-12-07T12:00:00.000Z";
  const event = (change: { key: string; revision: number; object?: CatalogObject; json?: string }) => decodeEvent("catalog", new TextEncoder().encode(encodeCatalogEvent(at, change)));

  it("carry the KV value's text as the object, and a reader decodes what the node holds", () => {
    // Spaces, another order and a field this schema does not know: a reader gets the decoded object, as the node.
    const json = ` { "annotations": {}, ${JSON.stringify(service).slice(1, -1)}, "fromANewerHub": [1, 2] } `;
    const object = parseCatalogObject(json);
    const text = encodeCatalogEvent(at, { key, revision: 7, object, json });
    expect(text).toContain(json);
    expect(event({ key, revision: 7, object, json })).toEqual({ at, op: "put", key, revision: 7, object });
  });

  it("encode the object when its text is not at hand", () => {
    expect(event({ key, revision: 4, object: service })).toEqual({ at, op: "put", key, revision: 4, object: service });
  });

  it("say a delete with its key alone, and a TLS Secret's put without its key", () => {
    expect(event({ key: "svc.bench.gone", revision: 9 })).toEqual({ at, op: "delete", key: "svc.bench.gone", revision: 9 });
    const secret = { kind: "TLSSecret", namespace: "shop", name: "cert", certificate: "CERT", privateKey: "PRIVATE KEY", labels: {}, annotations: {} } as const;
    const text = encodeCatalogEvent(at, { key: "tls.shop.cert", revision: 5, object: secret, json: JSON.stringify(secret) });
    expect(text).not.toContain("PRIVATE KEY");
    expect(event({ key: "tls.shop.cert", revision: 5, object: secret, json: JSON.stringify(secret) })).toEqual({ at, op: "put", key: "tls.shop.cert", revision: 5, redacted: true });
  });
});
