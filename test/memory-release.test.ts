/**
 * A fresh agent that loads a large catalog gives the load's garbage back once the load has settled
 * (lib/release-memory.ts): one collection, logged with the heap and RSS before and after, and none for
 * the small changes that follow. Without it the garbage stays resident for good (nothing in V8 collects the
 * old generation of a process that stopped allocating).
 */
import { afterAll, describe, expect, it } from "vitest";
import { manyServices, sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "./support/processes.ts";

afterAll(stopAllProcesses);

interface ReleaseLine {
  objects: number;
  heapMiB: [number, number];
  rssMiB: [number, number];
  pauseMs: number;
}

describe("an agent after a large catalog change", () => {
  it("collects its garbage once the change has settled, says what it gave back, and not for a small change", { timeout: 90_000 }, async () => {
    const manifests = tempDir();
    // 700 services: 1,400 objects, past the 1,000 a collection waits for.
    writeManifest(manifests, "many.yaml", manyServices(700));
    const hub = await startHubProcess({ name: "hub-1", manifests });
    const agent = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl] });
    const releases = () =>
      agent
        .output()
        .split("\n")
        .filter((line) => line.includes("gave back the memory a large catalog change left behind"))
        .map((line) => JSON.parse(line) as ReleaseLine);
    await eventually(async () => (await agent.view()).services.length === 700, 30_000, "the agent to hold the catalog");
    await eventually(() => releases().length === 1, 20_000, "the agent to collect once the load settled");
    const [release] = releases();
    expect(release.objects).toBeGreaterThanOrEqual(1_400);
    // The load's garbage is gone: less heap in use after than before.
    expect(release.heapMiB[1]).toBeLessThan(release.heapMiB[0]);
    expect(release.rssMiB[1]).toBeGreaterThan(0);
    expect(release.pauseMs).toBeGreaterThanOrEqual(0);

    // A small change later: served, no second collection.
    writeManifest(manifests, "late.yaml", sampleService({ name: "late", clusterIP: "198.19.200.1" }));
    await eventually(async () => (await agent.view()).services.some((service) => service.name === "late"), 20_000, "the change to arrive");
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(releases()).toHaveLength(1);
  });
});
