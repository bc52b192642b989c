import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { sampleService, writeManifest } from "../../test/support/manifests.ts";
import { eventually } from "../../test/support/ports.ts";
import { stopAllProcesses, tempDir } from "../../test/support/processes.ts";
import { formatRejection, ManifestSource } from "./manifest-source.ts";
import type { CatalogChange, CatalogRejection } from "./source.ts";

const sources: ManifestSource[] = [];
afterEach(async () => {
  await Promise.all(sources.splice(0).map((source) => source.stop()));
  await stopAllProcesses();
});

async function start(directory: string) {
  const source = new ManifestSource({ directory, log: silentLogger(), rescanMs: 200, debounceMs: 20 });
  sources.push(source);
  const changes: CatalogChange[] = [];
  const rejections: CatalogRejection[] = [];
  source.onChange((batch) => changes.push(...batch));
  source.onReject((rejection) => rejections.push(rejection));
  await source.start();
  return { source, changes, rejections };
}

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

  it("says clearly when the directory does not exist", async () => {
    const source = new ManifestSource({ directory: "/nonexistent/leafmesh", log: silentLogger() });
    await expect(source.start()).rejects.toThrow("--manifests: cannot read directory /nonexistent/leafmesh");
  });
});
