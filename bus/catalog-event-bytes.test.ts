/**
 * A catalog put event made as bytes from the KV value is the event encodeCatalogEvent makes from the value's text,
 * byte for byte, once stamped; it holds a copy of the value, not a view of it; a time of another length still makes
 * an event a reader decodes.
 */
import { describe, expect, it } from "vitest";
import { normalisedCatalog } from "../bench/fabric/catalog.ts";
import { parseCatalogObject, type Service } from "./catalog.ts";
import { catalogPutEventBytes, stampCatalogEvent } from "./catalog-event-bytes.ts";
import { decodeEvent, encodeCatalogEvent } from "./events.ts";

describe("catalog put events as bytes", () => {
  const [[key, service]] = normalisedCatalog(1) as [string, Service][];
  const at = "2026-12-07T12:00:00.000Z";
  const encoder = new TextEncoder();

  it("are, once stamped, the bytes of encodeCatalogEvent's text: spaces, order, unknown fields and non-ASCII text kept", () => {
    const json = ` { "annotations": {"note": "zürich ☃ 東京"}, ${JSON.stringify({ ...service, annotations: undefined }).slice(1, -1)}, "fromANewerHub": [1, 2] } `;
    const object = parseCatalogObject(json);
    for (const [eventKey, revision] of [[key, 7], ['svc.shop."quoted"-ü', 123_456_789]] as const) {
      const bytes = stampCatalogEvent(catalogPutEventBytes(eventKey, revision, encoder.encode(json)), at);
      expect(Buffer.from(bytes).equals(Buffer.from(encoder.encode(encodeCatalogEvent(at, { key: eventKey, revision, object, json }))))).toBe(true);
      expect(decodeEvent("catalog", bytes as Uint8Array)).toEqual({ at, op: "put", key: eventKey, revision, object });
    }
  });

  it("hold a copy of the value: the socket chunk it was a view of may be reused", () => {
    const chunk = encoder.encode(`xx${JSON.stringify(service)}yy`);
    const value = chunk.subarray(2, chunk.length - 2);
    const event = catalogPutEventBytes(key, 3, value);
    chunk.fill(0x20);
    expect(event.buffer).not.toBe(chunk.buffer);
    expect(decodeEvent("catalog", stampCatalogEvent(event, at) as Uint8Array)).toEqual({ at, op: "put", key, revision: 3, object: service });
  });

  it("take a new time at each stamp, and a time of another length as text", () => {
    const event = catalogPutEventBytes(key, 3, encoder.encode(JSON.stringify(service)));
    const later = "2026-12-07T12:00:01.250Z";
    expect(decodeEvent("catalog", stampCatalogEvent(event, at) as Uint8Array).at).toBe(at);
    expect(decodeEvent("catalog", stampCatalogEvent(event, later) as Uint8Array).at).toBe(later);
    const farFuture = new Date(Date.UTC(12_000, 0, 1)).toISOString();
    const text = stampCatalogEvent(event, farFuture);
    expect(typeof text).toBe("string");
    expect(text).toBe(encodeCatalogEvent(farFuture, { key, revision: 3, object: service, json: JSON.stringify(service) }));
  });
});
