import { describe, expect, it } from "vitest";
import type { CatalogObject } from "./catalog.ts";
import { snapshotPage } from "./catalog-feed.ts";

describe("snapshotPage", () => {
  const keys = ["a", "b", "c", "d", "e"];
  const entry = (key: string) => (key === "c" ? undefined : { revision: key.charCodeAt(0), object: { kind: "Service", name: key } as unknown as CatalogObject });

  it("pages through keys in order, resuming after the last key, and ends with next null", () => {
    const first = snapshotPage(keys, { limit: 2 }, entry);
    expect(first.objects.map((object) => object.key)).toEqual(["a", "b"]);
    expect(first.next).toBe("b");
    const second = snapshotPage(keys, { after: "b", limit: 2 }, entry);
    // "c" vanished between listing and reading: skipped, the page still advances past it.
    expect(second.objects.map((object) => object.key)).toEqual(["d"]);
    expect(second.next).toBe("d");
    const last = snapshotPage(keys, { after: "d", limit: 2 }, entry);
    expect(last.objects.map((object) => object.key)).toEqual(["e"]);
    expect(last.next).toBeNull();
    expect(snapshotPage(keys, { after: "bb", limit: 10 }, entry).objects.map((object) => object.key)).toEqual(["d", "e"]);
    expect(snapshotPage([], {}, entry)).toEqual({ objects: [], next: null });
  });
});
