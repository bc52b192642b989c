/**
 * The catalog's fast path (catalog-fits.ts) against zod: its tables name the schemas' own fields, required where
 * zod requires them, and on thousands of altered Services and EndpointSlices (a field removed, added, or given a
 * value of another type or out of range, at every depth) it keeps a value only where zod accepts it and gives it
 * back equal. What zod would change or refuse goes to zod.
 */
import { describe, expect, it } from "vitest";
import type * as z from "../lib/schema/index.ts";
import { normalisedCatalog } from "../bench/fabric/catalog.ts";
import { catalogFieldTables, fitsCatalogFastPath, type FieldTable } from "./catalog-fits.ts";
import { catalogObjectSchema, endpointPortSchema, endpointSchema, endpointSliceSchema, servicePortSchema, serviceSchema, type EndpointSlice, type Service } from "./catalog.ts";

const tables = catalogFieldTables();
const endpointShape = endpointSchema.shape;
const pairs: [string, FieldTable, z.ObjectSchema<z.Shape>][] = [
  ["Service", tables.serviceFields, serviceSchema],
  ["service port", tables.servicePortFields, servicePortSchema],
  ["EndpointSlice", tables.endpointSliceFields, endpointSliceSchema],
  ["endpoint", tables.endpointFields, endpointSchema],
  ["endpoint conditions", tables.endpointConditionFields, endpointShape.conditions],
  ["endpoint targetRef", tables.targetRefFields, endpointShape.targetRef.inner],
  ["endpoint port", tables.endpointPortFields, endpointPortSchema],
];

/** Every optional field present, on top of the bench's objects. */
function fullObjects(): unknown[] {
  const [[, service], [, slice]] = normalisedCatalog(1) as [[string, Service], [string, EndpointSlice]];
  const fullService: Service = {
    ...service,
    externalName: "db.example.com",
    internalTrafficPolicy: "Local",
    selector: { app: "web" },
    labels: { tier: "front" },
    ports: [{ name: "dns", protocol: "UDP", port: 53, targetPort: "dns", nodePort: 30053, appProtocol: "dns" }, ...service.ports],
  };
  const fullSlice: EndpointSlice = {
    ...slice,
    addressType: "IPv6",
    endpoints: [{ addresses: ["fd00::1", "fd00::2"], conditions: { ready: false, serving: true, terminating: true }, hostname: "web-0", nodeName: "edge-1", zone: "z1", targetRef: { kind: "Pod", namespace: "shop", name: "web-0" } }, ...slice.endpoints],
    ports: [{ name: "", protocol: "SCTP" }, { name: "h2", protocol: "TCP", port: 8443, appProtocol: "h2c" }],
    annotations: { note: "x" },
  };
  return [service, slice, fullService, fullSlice];
}

/** mulberry32: the same alterations in every run. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const values: unknown[] = [null, true, false, 0, 1, -1, 1.5, 53, 65_535, 65_536, 86_400, 86_401, "", "x", "TCP", "UDP", "SCTP", "IPv4", "IPv6", "FQDN", "None", "ClientIP", "Cluster", "Local", "ClusterIP", "ExternalName", "Service", "EndpointSlice", [], ["x"], [""], [1], {}, { a: "b" }, { a: 1 }, { ready: true, serving: true, terminating: false }];
const names = ["extra", "__proto__", "kind", "name", "port", "ports", "labels", "nodePort", "targetRef", "hostname", "ready", "zone", "selector", "0"];

/** Every object and array inside `value`, with itself. */
function containers(value: unknown, found: object[] = []): object[] {
  if (typeof value === "object" && value !== null) {
    found.push(value);
    for (const inner of Object.values(value)) containers(inner, found);
  }
  return found;
}

/** One to three alterations, each at a random place: a field removed, replaced, or added (a `__proto__` key too), a list emptied. */
function alter(object: unknown, next: () => number): unknown {
  const copy = JSON.parse(JSON.stringify(object));
  const pick = <T>(list: readonly T[]) => list[Math.floor(next() * list.length)];
  for (let count = 1 + Math.floor(next() * 3); count > 0; count--) {
    const target = pick(containers(copy)) as Record<string, unknown>;
    const keys = Object.keys(target);
    const action = next();
    if (Array.isArray(target) && action < 0.1) target.length = 0;
    else if (action < 0.25 && keys.length > 0) delete target[pick(keys)];
    else if (action < 0.7 && keys.length > 0) target[pick(keys)] = structuredClone(pick(values));
    else Object.defineProperty(target, Array.isArray(target) ? String(target.length) : pick(names), { value: structuredClone(pick(values)), enumerable: true, writable: true, configurable: true });
  }
  // As a KV value comes: JSON text, parsed (a `__proto__` key becomes an own property).
  return JSON.parse(JSON.stringify(copy));
}

describe("the catalog's fast path", () => {
  it("knows each schema's fields, required where zod requires them", () => {
    for (const [what, table, schema] of pairs) {
      const required = Object.entries(schema.shape).filter(([, field]) => !(field as z.Schema).safeParse(undefined).success).map(([name]) => name);
      expect([...table.fields.keys()].sort(), what).toEqual(Object.keys(schema.shape).sort());
      expect([...table.fields].filter(([, field]) => field.required).map(([name]) => name).sort(), what).toEqual(required.sort());
      expect(table.required, what).toBe(required.length);
    }
  });

  it("keeps Services and EndpointSlices that zod gives back unchanged", () => {
    for (const object of fullObjects()) {
      const parsed = JSON.parse(JSON.stringify(object));
      expect(fitsCatalogFastPath(parsed)).toBe(true);
      expect(catalogObjectSchema.parse(parsed)).toStrictEqual(parsed);
    }
  });

  /** The fast path keeps `altered` only where zod accepts it and gives it back equal; whether it kept it. */
  const compare = (altered: unknown): { kept: boolean; refusedByZod: boolean } => {
    const checked = catalogObjectSchema.safeParse(altered);
    const kept = fitsCatalogFastPath(altered);
    if (kept) {
      expect(checked.success, JSON.stringify(altered)).toBe(true);
      expect(checked.data, JSON.stringify(altered)).toStrictEqual(altered);
    }
    return { kept, refusedByZod: !checked.success };
  };

  it("keeps an object with one field removed or replaced by a value of any type only where zod accepts it, unchanged", () => {
    let kept = 0;
    for (const object of fullObjects()) {
      const count = containers(object).length;
      for (let at = 0; at < count; at++) {
        const keys = Object.keys(containers(object)[at]);
        for (const key of keys) {
          for (const value of [undefined, ...values]) {
            const copy = JSON.parse(JSON.stringify(object));
            const target = containers(copy)[at] as Record<string, unknown>;
            if (value === undefined) delete target[key];
            else target[key] = structuredClone(value);
            if (compare(JSON.parse(JSON.stringify(copy))).kept) kept++;
          }
        }
      }
    }
    expect(kept).toBeGreaterThan(100);
  });

  it("keeps an object with a few random alterations only where zod accepts it, unchanged", () => {
    const next = random(17);
    let kept = 0;
    let refusedByZod = 0;
    for (let round = 0; round < 2_000; round++) {
      const result = compare(alter(fullObjects()[round % 4], next));
      if (result.kept) kept++;
      if (result.refusedByZod) refusedByZod++;
    }
    // Both sides of the comparison were exercised.
    expect(kept).toBeGreaterThan(150);
    expect(refusedByZod).toBeGreaterThan(700);
  });
});
