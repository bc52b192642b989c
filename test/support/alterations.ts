/**
 * Random, repeatable alterations of JSON objects, for tests that hold two readings of one schema to each other
 * (bus/catalog-schema.test.ts, bus/payload-schemas.test.ts): a field removed, replaced by a value of another
 * type or out of range, or added (a `__proto__` key too), at any depth, then sent through JSON as a KV value
 * or a bus payload would come.
 */

/** mulberry32: the same alterations in every run. */
export function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const values: unknown[] = [null, true, false, 0, 1, -1, 1.5, 53, 65_535, 65_536, 86_400, 86_401, "", "x", "TCP", "UDP", "SCTP", "IPv4", "IPv6", "FQDN", "None", "ClientIP", "Cluster", "Local", "ClusterIP", "ExternalName", "Service", "EndpointSlice", [], ["x"], [""], [1], {}, { a: "b" }, { a: 1 }, { ready: true, serving: true, terminating: false }];
const names = ["extra", "__proto__", "kind", "name", "port", "ports", "labels", "nodePort", "targetRef", "hostname", "ready", "zone", "selector", "0"];

/** Every object and array inside `value`, with itself. */
export function containers(value: unknown, found: object[] = []): object[] {
  if (typeof value === "object" && value !== null) {
    found.push(value);
    for (const inner of Object.values(value)) containers(inner, found);
  }
  return found;
}

/** One to three alterations, each at a random place: a field removed, replaced, or added (a `__proto__` key too), a list emptied. */
export function alter(object: unknown, next: () => number): unknown {
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
