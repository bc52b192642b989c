/**
 * The zone kept up to date one Service at a time (ZoneIndex.apply) against the
 * zone derived from scratch: after any sequence of puts and deletes of Services
 * and EndpointSlices the two hold the same names, records and reverse names, and
 * every name whose records changed is among the names apply() reports (the
 * server drops exactly those names' cached answers).
 */
import { describe, expect, it } from "vitest";
import { catalogKey, type CatalogObject } from "../../bus/catalog.ts";
import { feedOf, generateCatalog, prng, put, remove, service } from "../../test/support/dns-catalog.ts";
import { buildClusterZone, ZoneIndex } from "./zone-index.ts";
import type { ClusterZone } from "./zone-records.ts";

/** A zone as plain sorted data, so two zones built in different orders compare equal. */
function snapshot(zone: ClusterZone) {
  const names = [...zone.names].map(([name, records]) => [name, { ...records, a: [...records.a].sort(), aaaa: [...records.aaaa].sort(), srv: records.srv.map((srv) => JSON.stringify(srv)).sort(), txt: [...records.txt].sort() }] as const);
  const pointers = [...zone.pointers].map(([name, targets]) => [name, [...targets].sort()] as const);
  return { names: new Map(names.sort(([a], [b]) => (a < b ? -1 : 1))), pointers: new Map(pointers.sort(([a], [b]) => (a < b ? -1 : 1))) };
}

describe("ZoneIndex: incremental changes", () => {
  it.each(Array.from({ length: 60 }, (_, index) => index + 1))("catalog %i: after random puts and deletes, the same zone as a rebuild, and every changed name reported", (seed) => {
    const random = prng(seed * 7919);
    const first = generateCatalog(seed);
    const second = generateCatalog(seed + 1_000);
    const feed = feedOf(first.objects);
    const index = new ZoneIndex({ clusterDomain: "cluster.local" });
    index.rebuild(feed.reader);
    const live = new Map<string, CatalogObject>(first.objects.map((object) => [catalogKey(object), object]));
    // Objects of another catalog (some with the same names: replaced) and deletions of present ones.
    const candidates = [...second.objects, ...first.objects.map((object) => (object.kind === "Service" && !object.headless && object.type !== "ExternalName" ? { ...object, clusterIPs: [`10.250.${seed}.${Math.floor(random() * 250) + 1}`], ipFamilies: ["IPv4" as const] } : object))];
    for (let step = 0; step < 12; step++) {
      const batch: string[] = [];
      for (let change = 0; change < 1 + Math.floor(random() * 4); change++) {
        const present = [...live.values()];
        if (random() < 0.35 && present.length > 0) {
          const gone = present[Math.floor(random() * present.length)];
          remove(feed, gone);
          live.delete(catalogKey(gone));
          batch.push(catalogKey(gone));
        } else {
          const object = candidates[Math.floor(random() * candidates.length)];
          put(feed, object);
          live.set(catalogKey(object), object);
          batch.push(catalogKey(object));
        }
      }
      const before = snapshot(index.zone);
      const changed = index.apply(feed.reader, batch);
      const after = snapshot(index.zone);
      expect(after).toEqual(snapshot(buildClusterZone(feed.reader, { clusterDomain: "cluster.local" })));
      for (const name of new Set([...before.names.keys(), ...after.names.keys()])) {
        if (JSON.stringify(before.names.get(name)) !== JSON.stringify(after.names.get(name))) expect(changed, `name ${name} changed unreported`).toContain(name);
      }
      for (const name of new Set([...before.pointers.keys(), ...after.pointers.keys()])) {
        if (JSON.stringify(before.pointers.get(name)) !== JSON.stringify(after.pointers.get(name))) expect(changed, `reverse name ${name} changed unreported`).toContain(name);
      }
    }
  });

  it("keeps a namespace's name while one of its Services is left, and drops it with the last", () => {
    const a = service("shop", "a", { clusterIPs: ["10.96.0.1"] });
    const b = service("shop", "b", { clusterIPs: ["10.96.0.2"] });
    const feed = feedOf([a, b]);
    const index = new ZoneIndex();
    index.rebuild(feed.reader);
    remove(feed, a);
    expect(index.apply(feed.reader, [catalogKey(a)])).toContain("a.shop.svc.cluster.local");
    expect(index.zone.names.has("shop.svc.cluster.local")).toBe(true);
    remove(feed, b);
    expect(index.apply(feed.reader, [catalogKey(b)])).toContain("shop.svc.cluster.local");
    expect(index.zone.names.has("shop.svc.cluster.local")).toBe(false);
    expect(index.zone.pointers.size).toBe(0);
  });
});
