import { closeSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, symlinkSync, truncateSync, utimesSync, writeFileSync, writeSync } from "node:fs";
import { stringify } from "yaml";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { sampleService, writeManifest } from "../../test/support/manifests.ts";
import { eventually } from "../../test/support/ports.ts";
import { stopAllProcesses, tempDir } from "../../test/support/processes.ts";
import { describeCatalogSourceContract } from "../../test/support/source-contract.ts";
import { ManifestSource, maxManifestBytes } from "./manifest-source.ts";
import { formatRejection, type CatalogChange, type CatalogRejection } from "./source.ts";

const sources: ManifestSource[] = [];
afterEach(async () => {
  await Promise.all(sources.splice(0).map((source) => source.stop()));
  await stopAllProcesses();
});

async function start(directory: string) {
  const source = new ManifestSource({ path: directory, log: silentLogger(), rescanMs: 200, debounceMs: 20 });
  sources.push(source);
  const changes: CatalogChange[] = [];
  const rejections: CatalogRejection[] = [];
  source.onChange((batch) => changes.push(...batch));
  source.onReject((rejection) => rejections.push(rejection));
  await source.start();
  return { source, changes, rejections };
}

/** One file per object, named for it: a put rewrites the file, a remove deletes it. */
function objectFile(kind: string, namespace: string, name: string): string {
  return `${kind.toLowerCase()}-${namespace}-${name}.yaml`;
}

describeCatalogSourceContract("ManifestSource over a directory", async (clock) => {
  const dir = tempDir();
  const source = () => new ManifestSource({ path: dir, log: silentLogger(), clock, rescanMs: 200, debounceMs: 20 });
  const running = source();
  let rereads = 0;
  return {
    source: running,
    twin: source,
    put: async (raw) => {
      const { kind, metadata } = raw as { kind: string; metadata: { namespace?: string; name: string } };
      writeManifest(dir, objectFile(kind, metadata.namespace ?? "default", metadata.name), [raw]);
    },
    remove: async (kind, namespace, name) => rmSync(join(dir, objectFile(kind, namespace, name))),
    // Every file written again with the same bytes (a new mtime), as a config tool or a ConfigMap volume does, then a rescan.
    reread: async () => {
      rereads++;
      for (const file of readdirSync(dir)) utimesSync(join(dir, file), new Date(), new Date(Date.now() + rereads * 1_000));
      await running.reload();
    },
    close: async () => undefined,
  };
});

describe("ManifestSource", () => {
  it("loads multi-document YAML, JSON and kind List, and follows edits and deletions", async () => {
    const dir = tempDir();
    writeManifest(dir, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.1" }));
    writeFileSync(join(dir, "db.json"), JSON.stringify({ apiVersion: "v1", kind: "List", items: sampleService({ name: "db", clusterIP: "198.19.0.2" }) }));
    const { source, changes } = await start(dir);
    expect([...source.snapshot().keys()].sort()).toEqual(["eps.demo.db-abc", "eps.demo.web-abc", "svc.demo.db", "svc.demo.web"]);
    expect(source.synced).toBe(true);

    changes.length = 0;
    writeManifest(dir, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.1", port: 8080 }));
    await eventually(() => changes.some((change) => change.key === "svc.demo.web" && change.op === "put"), 5_000, "the edit");
    rmSync(join(dir, "db.json"));
    await eventually(() => changes.filter((change) => change.op === "delete").length === 2, 5_000, "the deletion");
    expect([...source.snapshot().keys()].sort()).toEqual(["eps.demo.web-abc", "svc.demo.web"]);
  });

  it.each([
    ["bad YAML", "kind: Service\n  metadata: [unclosed\n", /not valid YAML\/JSON at line \d+/, undefined],
    ["an unknown kind", "apiVersion: v1\nkind: Servce\nmetadata: { name: x }\n", /unknown kind 'Servce'/, "kind"],
    ["a Service without a name", "apiVersion: v1\nkind: Service\nmetadata: { namespace: demo }\nspec: { clusterIP: 198.19.0.5, ports: [ { port: 80 } ] }\n", /metadata.name is required/, "metadata.name"],
    ["a port out of range", "apiVersion: v1\nkind: Service\nmetadata: { name: x, namespace: demo }\nspec: { clusterIP: 198.19.0.5, ports: [ { port: 99999 } ] }\n", /spec.ports\[0\].port must be 1 to 65535/, "spec.ports[0].port"],
    ["a bad IP", "apiVersion: v1\nkind: Service\nmetadata: { name: x, namespace: demo }\nspec: { clusterIP: 198.19.0.500, ports: [ { port: 80 } ] }\n", /'198.19.0.500' is not an IP address/, "spec.clusterIP"],
  ])("refuses %s with file, object and field, and keeps the rest of the catalog", async (_what, text, message, field) => {
    const dir = tempDir();
    writeManifest(dir, "good.yaml", sampleService({ name: "good", clusterIP: "198.19.0.1" }));
    writeManifest(dir, "bad.yaml", sampleService({ name: "was-fine", clusterIP: "198.19.0.2" }));
    const { source, rejections } = await start(dir);
    expect(source.snapshot().has("svc.demo.was-fine")).toBe(true);

    writeFileSync(join(dir, "bad.yaml"), text);
    await eventually(() => rejections.length > 0, 5_000, "the rejection");
    const rejection = rejections[0];
    expect(rejection.file).toBe("bad.yaml");
    expect(formatRejection(rejection)).toMatch(message);
    expect(rejection.object).toMatch(/^([A-Z]\w* ([a-z0-9-]+\/[a-z0-9.-]+|\(unnamed\))|document \d+)$/);
    if (field) expect(rejection.field).toBe(field);
    // The refused file's earlier objects stay, and so does every other file.
    expect([...source.snapshot().keys()].sort()).toEqual(["eps.demo.good-abc", "eps.demo.was-fine-abc", "svc.demo.good", "svc.demo.was-fine"]);

    // Fixing the file applies it.
    writeManifest(dir, "bad.yaml", sampleService({ name: "fixed", clusterIP: "198.19.0.3" }));
    await eventually(() => source.snapshot().has("svc.demo.fixed") && !source.snapshot().has("svc.demo.was-fine"), 5_000, "the fixed file");
  });

  it("reports an object defined in two files and keeps the first", async () => {
    const dir = tempDir();
    writeManifest(dir, "a.yaml", sampleService({ name: "web", clusterIP: "198.19.0.1" }));
    writeManifest(dir, "b.yaml", sampleService({ name: "web", clusterIP: "198.19.0.9" }));
    const { source, rejections } = await start(dir);
    expect(rejections.map(formatRejection)).toContain("b.yaml: Service demo/web: is also defined in a.yaml; the first definition is used");
    const web = source.snapshot().get("svc.demo.web");
    expect(web?.kind === "Service" && web.clusterIPs).toEqual(["198.19.0.1"]);
  });

  it("reports a duplicate once, not at every rescan, and again only when it comes back", async () => {
    const dir = tempDir();
    writeManifest(dir, "a.yaml", sampleService({ name: "web", clusterIP: "198.19.0.1" }));
    writeManifest(dir, "b.yaml", sampleService({ name: "web", clusterIP: "198.19.0.9" }));
    const { source, rejections } = await start(dir);
    const duplicates = () => rejections.map(formatRejection).filter((text) => /is also defined in/.test(text));
    expect(duplicates()).toHaveLength(2); // the Service and its EndpointSlice
    await source.reload();
    await source.reload();
    expect(duplicates()).toHaveLength(2);

    // Resolved (b.yaml now holds another Service), then made again: a new report.
    writeManifest(dir, "b.yaml", sampleService({ name: "db", clusterIP: "198.19.0.2" }));
    await eventually(() => source.snapshot().has("svc.demo.db"), 5_000, "the fixed b.yaml");
    expect(duplicates()).toHaveLength(2);
    writeManifest(dir, "b.yaml", sampleService({ name: "web", clusterIP: "198.19.0.9" }));
    await eventually(() => duplicates().length === 4, 5_000, "the duplicate reported again");
  });

  it("takes a file once its writer is done with it: a slow rewrite in place never takes its objects out on the way", async () => {
    const dir = tempDir();
    const services = ["a", "b", "c", "d"].map((name, index) => sampleService({ name, clusterIP: `198.19.0.${index + 1}` }));
    writeManifest(dir, "shop.yaml", services.slice(0, 3).flat());
    const { source, changes } = await start(dir);
    expect(source.snapshot().has("svc.demo.c")).toBe(true);
    changes.length = 0;
    // As `cat shop.yaml > manifests/shop.yaml` over a slow link does: the file is truncated, then a document
    // comes every 150 ms (each time a file that parses, with fewer objects), then a fourth Service.
    const fd = openSync(join(dir, "shop.yaml"), "w");
    for (const object of services.flat()) {
      await new Promise((resolve) => setTimeout(resolve, 150));
      writeSync(fd, `${stringify(object)}---\n`);
    }
    closeSync(fd);
    await eventually(() => source.snapshot().has("svc.demo.d"), 5_000, "the fourth Service");
    expect(changes.filter((change) => change.op === "delete")).toEqual([]);
    expect([...source.snapshot().keys()].filter((key) => key.startsWith("svc.")).sort()).toEqual(["svc.demo.a", "svc.demo.b", "svc.demo.c", "svc.demo.d"]);
  });

  it("reads a file linked in, and says once that a link leads nowhere", async () => {
    const dir = tempDir();
    const elsewhere = tempDir();
    writeManifest(elsewhere, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.1" }));
    symlinkSync(join(elsewhere, "web.yaml"), join(dir, "web.yaml"));
    symlinkSync(join(elsewhere, "gone.yaml"), join(dir, "gone.yaml"));
    const { source, rejections } = await start(dir);
    expect(source.snapshot().has("svc.demo.web")).toBe(true);
    expect(rejections.map((rejection) => `${rejection.file}: ${rejection.message}`)).toEqual(["gone.yaml: cannot read: it is a symbolic link to a file that does not exist"]);
    await source.reload();
    await source.reload();
    expect(rejections).toHaveLength(1);
  });

  it.each([
    { what: "the volume", path: (dir: string) => dir },
    { what: "one file of it", path: (dir: string) => join(dir, "shop.yaml") },
  ])("reads $what of a ConfigMap volume (once per name), and follows its atomic update", async ({ path }) => {
    // kubelet's layout: the names link into ..data, itself a link to a timestamped directory swapped on update.
    const dir = tempDir();
    mkdirSync(join(dir, "..2026_12_06_01"));
    writeManifest(join(dir, "..2026_12_06_01"), "shop.yaml", sampleService({ name: "shop", clusterIP: "198.19.0.1" }));
    symlinkSync("..2026_12_06_01", join(dir, "..data"));
    symlinkSync("..data/shop.yaml", join(dir, "shop.yaml"));
    const { source, changes, rejections } = await start(path(dir));
    expect([...source.snapshot().keys()].sort()).toEqual(["eps.demo.shop-abc", "svc.demo.shop"]);
    changes.length = 0;
    mkdirSync(join(dir, "..2026_12_06_02"));
    writeManifest(join(dir, "..2026_12_06_02"), "shop.yaml", sampleService({ name: "shop", clusterIP: "198.19.0.1", port: 8080 }));
    symlinkSync("..2026_12_06_02", join(dir, "..data_tmp"));
    renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
    rmSync(join(dir, "..2026_12_06_01"), { recursive: true });
    await eventually(() => changes.some((change) => change.key === "svc.demo.shop" && change.op === "put"), 5_000, "the update");
    expect(changes.filter((change) => change.op === "delete")).toEqual([]);
    expect(rejections).toEqual([]);
  });

  it("says clearly when the path does not exist", async () => {
    const source = new ManifestSource({ path: "/nonexistent/leafmesh", log: silentLogger() });
    await expect(source.start()).rejects.toThrow("--manifests: cannot read /nonexistent/leafmesh: no such file or directory");
  });

  it("takes one file named on its own, follows a save by rename, and keeps what it held while the file is gone", async () => {
    const dir = tempDir();
    writeManifest(dir, "shop.yaml", sampleService({ name: "shop", clusterIP: "198.19.0.1" }));
    // Beside it, a file that is not the one named: never read.
    writeManifest(dir, "other.yaml", sampleService({ name: "other", clusterIP: "198.19.0.2" }));
    const file = join(dir, "shop.yaml");
    const { source, changes, rejections } = await start(file);
    expect(source.name).toBe(`manifests:${file}`);
    expect([...source.snapshot().keys()].sort()).toEqual(["eps.demo.shop-abc", "svc.demo.shop"]);
    // An editor's save: a new file renamed over the old one.
    writeManifest(dir, ".shop.yaml.swp", sampleService({ name: "shop", clusterIP: "198.19.0.1", port: 8080 }));
    renameSync(join(dir, ".shop.yaml.swp"), file);
    await eventually(() => changes.some((change) => change.key === "svc.demo.shop" && change.op === "put"), 5_000, "the saved file");
    // Gone for longer than two rescans: nothing leaves the catalog.
    rmSync(file);
    await new Promise((resolve) => setTimeout(resolve, 600));
    await source.reload();
    expect(changes.filter((change) => change.op === "delete")).toEqual([]);
    expect(source.snapshot().has("svc.demo.shop")).toBe(true);
    // Back with another Service in it: the file's objects are what it now holds.
    writeManifest(dir, "shop.yaml", sampleService({ name: "till", clusterIP: "198.19.0.3" }));
    await eventually(() => source.snapshot().has("svc.demo.till"), 5_000, "the file back");
    expect(source.snapshot().has("svc.demo.shop")).toBe(false);
    expect(source.snapshot().has("svc.demo.other")).toBe(false);
    expect(rejections).toEqual([]);
  });

  it("refuses a file too large to read whole, once, and keeps what it held", async () => {
    const dir = tempDir();
    writeManifest(dir, "shop.yaml", sampleService({ name: "shop", clusterIP: "198.19.0.1" }));
    writeManifest(dir, "big.yaml", sampleService({ name: "big", clusterIP: "198.19.0.2" }));
    const { source, rejections } = await start(dir);
    expect(source.snapshot().has("svc.demo.big")).toBe(true);
    // A dump written over it by mistake (sparse: no disk used).
    truncateSync(join(dir, "big.yaml"), maxManifestBytes + 1);
    await new Promise((resolve) => setTimeout(resolve, 400));
    await source.reload();
    await source.reload();
    expect(rejections.map((rejection) => `${rejection.file}: ${rejection.message}`)).toEqual(["big.yaml: is 64 MiB: a manifest file is read whole, up to 64 MiB; split it into several files"]);
    expect(source.snapshot().has("svc.demo.big")).toBe(true);
    expect(source.snapshot().has("svc.demo.shop")).toBe(true);
  });

  it("refuses a path that is neither a directory nor a file", async () => {
    const source = new ManifestSource({ path: "/dev/null", log: silentLogger() });
    await expect(source.start()).rejects.toThrow("--manifests: /dev/null is neither a directory nor a file");
  });
});
