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
import { alter, containers, random, values } from "../test/support/alterations.ts";
import { comparerWithZod } from "../test/support/zod-twin.ts";
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

describe("the catalog's schemas against zod's reading of them", () => {
  const compare = comparerWithZod(catalogObjectSchema);

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
