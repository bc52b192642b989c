/**
 * An object too large for a catalog entry (an EndpointSlice of 30,000 endpoints from a manifest, where Kubernetes
 * keeps a slice to 1,000): the hub says once which object it is and why, writes the rest of the catalog, and does not
 * try it again. Before, its put failed with NATS's "max_payload size exceeded" at every retry, once a second, as an
 * error with a stack, for as long as the file stayed.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "../../test/support/ports.ts";
import { sampleService, writeManifest } from "../../test/support/manifests.ts";
import { startHubProcess, stopAllProcesses, tempDir, type HubProcess } from "../../test/support/processes.ts";
import { requireTools } from "../../test/support/trust-servers.ts";

let hub: HubProcess;
const endpoints = Array.from({ length: 30_000 }, (_, index) => ({ ip: `198.18.${Math.floor(index / 250)}.${(index % 250) + 1}`, node: "edge-b" }));

beforeAll(async () => {
  requireTools();
  const manifests = join(tempDir("leafmesh-big-"), "manifests");
  writeManifest(manifests, "big.yaml", [...sampleService({ name: "crowd", clusterIP: "198.19.0.10", endpoints }), ...sampleService({ name: "small", clusterIP: "198.19.0.11" })]);
  hub = await startHubProcess({ name: "hub-1", manifests });
}, 60_000);

afterAll(() => stopAllProcesses());

describe("an object too large for a catalog entry", () => {
  it("is said once, by name and size, and the rest of the catalog is written", async () => {
    const said = /eps\.demo\.crowd-abc is \d+ bytes as a catalog entry, over the 1040384 a NATS message carries here: not written \(split it/;
    await eventually(() => said.test(hub.output()) || undefined, 30_000, "the hub to say which object is too large");
    const view = await eventually(async () => {
      const status = (await hub.view()).status as unknown as { catalogObjects: number };
      return status.catalogObjects === 3 ? status : undefined;
    }, 30_000, "the three other objects in the catalog");
    expect(view.catalogObjects).toBe(3);
    // Past three of the publisher's one-second retries: nothing more is said or tried.
    await new Promise((wake) => setTimeout(wake, 3_500));
    expect(hub.output().match(new RegExp(said.source, "g"))).toHaveLength(1);
    expect(hub.output()).not.toMatch(/max_payload size exceeded|writing the catalog failed/);
  }, 60_000);
});
