/**
 * The catalog's schemas (bus/catalog.ts, on lib/schema) against zod's reading of the same schemas
 * (test/support/zod-twin.ts): on thousands of altered Services and EndpointSlices (a field removed, added, or
 * given a value of another type or out of range, at every depth) both accept the same objects and give back equal
 * values, and refuse the same ones with the same issues (code, path, message). An object that fits is given back
 * as itself, at every level: what the catalog's fast path (bus/catalog-fits.ts) did for these two kinds before
 * lib/schema did it for every schema.
 */
import { describe, expect, it } from "vitest";
import { normalisedCatalog } from "../bench/fabric/catalog.ts";
import { zodTwin } from "../test/support/zod-twin.ts";
import { catalogObjectSchema, type EndpointSlice, type Service } from "./catalog.ts";

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

describe("the catalog's schemas against zod's reading of them", () => {
  const twin = zodTwin(catalogObjectSchema);

  /** Both accept `input` or both refuse it alike; what ours gives back equals zod's, and is `input` where zod's copy equals it. */
  const compare = (input: unknown): { accepted: boolean; kept: boolean } => {
    const ours = catalogObjectSchema.safeParse(input, { reportInput: true });
    const theirs = twin.safeParse(input, { reportInput: true });
    const text = JSON.stringify(input);
    expect(ours.success, text).toBe(theirs.success);
    if (ours.success && theirs.success) {
      expect(ours.data, text).toStrictEqual(theirs.data);
      if (JSON.stringify(theirs.data) === text) expect(ours.data, text).toBe(input);
      return { accepted: true, kept: ours.data === input };
    }
    const issues = (list: readonly { code: string; path: readonly PropertyKey[]; message: string; input?: unknown }[]) => list.map(({ code, path, message, input }) => ({ code, path, message, input }));
    // One difference on purpose: zod 4 also runs a list's length check on a value that is no list ("" for
    // `addresses` reports "expected array" and then "Too small: expected string to have >=1 characters"); ours
    // stops at the type, as zod does for every other kind.
    const zodIssues = theirs.error!.issues.filter((issue, index, all) => !all.slice(0, index).some((earlier) => earlier.code === "invalid_type" && JSON.stringify(earlier.path) === JSON.stringify(issue.path)));
    expect(issues(ours.error!.issues), text).toEqual(issues(zodIssues));
    return { accepted: false, kept: false };
  };

  it("gives back the bench's Services and EndpointSlices, every optional field given or not, as themselves", () => {
    for (const object of fullObjects()) expect(compare(JSON.parse(JSON.stringify(object)))).toEqual({ accepted: true, kept: true });
  });

  it("agrees with zod on an object with one field removed or replaced by a value of any type", () => {
    let accepted = 0;
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
            if (compare(JSON.parse(JSON.stringify(copy))).accepted) accepted++;
          }
        }
      }
    }
    expect(accepted).toBeGreaterThan(100);
  });

  it("agrees with zod on an object with a few random alterations (unknown and __proto__ keys among them)", () => {
    const next = random(17);
    let kept = 0;
    let copied = 0;
    let refused = 0;
    for (let round = 0; round < 2_000; round++) {
      const result = compare(alter(fullObjects()[round % 4], next));
      if (result.kept) kept++;
      else if (result.accepted) copied++;
      else refused++;
    }
    // Every side of the comparison was exercised: kept as is, copied without a stripped key, refused.
    expect(kept).toBeGreaterThan(150);
    expect(copied).toBeGreaterThan(50);
    expect(refused).toBeGreaterThan(700);
  });
});
