/**
 * A hub whose data directory's file system is nearly full (a real 32 MiB tmpfs, under the 64 MiB the store watch
 * warns at) says what that means for a hub: its JetStream keeps the catalog itself, whose changes then cannot be
 * written. It said what it means for an agent ("its catalog mirror ... stops following the hub"), false on the hub
 * that is the catalog's source. Needs root (it mounts a tmpfs).
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { startHubProcess, stopAllProcesses, tempDir, type HubProcess } from "./support/processes.ts";

let mount = "";
let hub: HubProcess | undefined;
afterAll(async () => {
  // The hub first (its data is on the mount), then the mount, then the temporary directories.
  await hub?.stop();
  if (mount) execFileSync("umount", ["-l", mount]);
  await stopAllProcesses();
});

describe("a hub on a nearly full file system", () => {
  it("says its catalog's changes cannot be written when it fills, not that a mirror stops following the hub", { timeout: 90_000 }, async () => {
    if (process.getuid?.() !== 0) throw new Error("this test mounts a tmpfs: run it as root (CI does)");
    mount = tempDir("leafmesh-hub-space-");
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=32m", "tmpfs", mount]);
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
    hub = await startHubProcess({ name: "hub-1", manifests, dataDir: join(mount, "hub") });
    const line = await eventually(() => hub!.output().split("\n").find((text) => text.includes("the file system of the data directory has")), 45_000, "the hub's low-space warning");
    expect(line).toContain("the hub's JetStream keeps the mesh's catalog there, and when it is full the catalog's changes cannot be written");
    expect(line).not.toContain("mirror");
  });
});
