/**
 * A hub that lost its JetStream store (a rebuilt machine, a wiped disk) comes back under its name and
 * writes the catalog anew, from revision 1. The agent's mirror kept the old stream's revisions and asked
 * only for later ones: it ignored the new catalog and served the old one without a word. Now the agent
 * finds the upstream stream made again (bus/mirror-lineage.ts), makes its mirror again,
 * reloads the catalog from it while serving the old one, and removes what the new catalog lacks once
 * the hub has had time to write it; also through a site (its servers reload from the hub, its agents from it).
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { hubPorts, startAgentProcess, startHubProcess, startSiteCluster, stopAllProcesses, tempDir } from "./support/processes.ts";

describe("a hub that lost its store", () => {
  afterAll(stopAllProcesses);

  it("is followed: the agent reloads the new catalog, serving the old one meanwhile, and drops what the new one lacks", { timeout: 240_000 }, async () => {
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
    for (let index = 0; index < 40; index++) writeManifest(manifests, `s${index}.yaml`, sampleService({ name: `s${index}`, clusterIP: `198.19.1.${index + 1}` }));
    let hub = await startHubProcess({ name: "hub-1", manifests });
    const agent = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl] });
    const services = async () => new Set((await agent.view()).services.map((service) => service.name));
    await eventually(async () => (await services()).has("s39"), 60_000, "the agent to hold the first catalog");
    // Changes, so that the old stream's revisions run well past what the new one will hold at first.
    for (let round = 0; round < 3; round++) writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10", annotations: { round: String(round) } }));

    await hub.stop();
    rmSync(join(hub.dataDir, "jetstream"), { recursive: true, force: true });
    for (let index = 0; index < 40; index++) rmSync(join(manifests, `s${index}.yaml`));
    writeManifest(manifests, "late.yaml", sampleService({ name: "late", clusterIP: "198.19.0.12" }));
    hub = await hub.restart();

    await eventually(async () => {
      const now = await services();
      // Served throughout: the old catalog stays until the new one is loaded and its grace is over.
      expect(now.has("web")).toBe(true);
      return now.has("late");
    }, 120_000, "the agent to hold the new hub's catalog");
    expect(agent.output()).toContain("the catalog's upstream stream was made again");
    await eventually(async () => !(await services()).has("s39"), 90_000, "the objects the new catalog lacks to go");
    expect(await services()).toEqual(new Set(["web", "late"]));
    expect(agent.output()).toMatch(/"removed":80,"msg":"catalog reloaded from the remade upstream/);
    // Errors: only its nats-server's leaf dials while the hub was down.
    const errors = agent.output().split("\n").filter((line) => line.includes('"level":50') && !line.includes("connect as leafnode"));
    expect(errors).toEqual([]);
  });
  it("is followed through a site: the site reloads from the hub, then its agents from the site", { timeout: 300_000 }, async () => {
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
    for (let index = 0; index < 20; index++) writeManifest(manifests, `s${index}.yaml`, sampleService({ name: `s${index}`, clusterIP: `198.19.1.${index + 1}` }));
    const ports = await hubPorts();
    let hub = await startHubProcess({ name: "hub-2", manifests, ports });
    const [site] = await startSiteCluster({ site: "site-b", servers: ["site-b-1"], upstreams: [`nats://127.0.0.1:${ports.leaf}`] });
    const agent = await startAgentProcess({ node: "edge-b", hubs: [site.leafUrl], extraArgs: ["--upstream-domain", "site-b"] });
    const services = async () => new Set((await agent.view()).services.map((service) => service.name));
    await eventually(async () => (await services()).has("s19"), 60_000, "the agent to hold the first catalog through the site");

    await hub.stop();
    rmSync(join(hub.dataDir, "jetstream"), { recursive: true, force: true });
    for (let index = 0; index < 20; index++) rmSync(join(manifests, `s${index}.yaml`));
    writeManifest(manifests, "late.yaml", sampleService({ name: "late", clusterIP: "198.19.0.12" }));
    hub = await hub.restart();

    await eventually(async () => {
      const now = await services();
      expect(now.has("web")).toBe(true);
      return now.has("late");
    }, 150_000, "the agent to hold the new hub's catalog through the site");
    expect(site.output()).toContain("the catalog's upstream stream was made again");
    expect(agent.output()).toContain("the catalog's upstream stream was made again");
    await eventually(async () => !(await services()).has("s19"), 120_000, "the objects the new catalog lacks to go");
    expect(await services()).toEqual(new Set(["web", "late"]));
  });
});
