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
import { hubPorts, startAgentProcess, startHubProcess, startSiteCluster, stopAllProcesses, tempDir, type AgentProcess, type HubProcess } from "./support/processes.ts";

/** A catalog of web and `count` more services, written where a hub reads its manifests. */
function firstCatalog(count: number): string {
  const manifests = tempDir();
  writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
  for (let index = 0; index < count; index++) writeManifest(manifests, `s${index}.yaml`, sampleService({ name: `s${index}`, clusterIP: `198.19.1.${index + 1}` }));
  return manifests;
}

/** The hub stops, loses its JetStream store, and comes back with a catalog of web and late only. */
async function loseStore(hub: HubProcess, manifests: string, count: number): Promise<HubProcess> {
  await hub.stop();
  rmSync(join(hub.dataDir, "jetstream"), { recursive: true, force: true });
  for (let index = 0; index < count; index++) rmSync(join(manifests, `s${index}.yaml`));
  writeManifest(manifests, "late.yaml", sampleService({ name: "late", clusterIP: "198.19.0.12" }));
  return await hub.restart();
}

/** The agent holds the new catalog, having served web throughout, then drops what the new one lacks. */
async function followed(agent: AgentProcess, count: number, timeoutMs: number): Promise<void> {
  const services = async () => new Set((await agent.view()).services.map((service) => service.name));
  await eventually(async () => {
    const now = await services();
    // Served throughout: the old catalog stays until the new one is loaded and its grace is over.
    expect(now.has("web")).toBe(true);
    return now.has("late");
  }, timeoutMs, `${agent.name} to hold the new hub's catalog`);
  expect(agent.output()).toContain("the catalog's upstream stream was made again");
  await eventually(async () => !(await services()).has(`s${count - 1}`), timeoutMs, "the objects the new catalog lacks to go");
  expect(await services()).toEqual(new Set(["web", "late"]));
}

describe("a hub that lost its store", () => {
  afterAll(stopAllProcesses);

  it("is followed: the agent reloads the new catalog, serving the old one meanwhile, and drops what the new one lacks", { timeout: 240_000 }, async () => {
    const manifests = firstCatalog(40);
    let hub = await startHubProcess({ name: "hub-1", manifests });
    const agent = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl] });
    await eventually(async () => (await agent.view()).services.some((service) => service.name === "s39"), 60_000, "the agent to hold the first catalog");
    // Changes, so that the old stream's revisions run well past what the new one will hold at first.
    for (let round = 0; round < 3; round++) writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10", annotations: { round: String(round) } }));

    hub = await loseStore(hub, manifests, 40);
    await followed(agent, 40, 120_000);
    expect(agent.output()).toMatch(/"removed":80,"msg":"catalog reloaded from the remade upstream/);
    // Errors: only its nats-server's leaf dials while the hub was down.
    const errors = agent.output().split("\n").filter((line) => line.includes('"level":50') && !line.includes("connect as leafnode"));
    expect(errors).toEqual([]);
  });

  it("is followed through a site: the site reloads from the hub, then its agents from the site", { timeout: 300_000 }, async () => {
    const manifests = firstCatalog(20);
    const ports = await hubPorts();
    const hub = await startHubProcess({ name: "hub-2", manifests, ports });
    const [site] = await startSiteCluster({ site: "site-b", servers: ["site-b-1"], upstreams: [`nats://127.0.0.1:${ports.leaf}`] });
    const agent = await startAgentProcess({ node: "edge-b", hubs: [site.leafUrl], extraArgs: ["--upstream-domain", "site-b"] });
    await eventually(async () => (await agent.view()).services.some((service) => service.name === "s19"), 60_000, "the agent to hold the first catalog through the site");

    await loseStore(hub, manifests, 20);
    await followed(agent, 20, 150_000);
    expect(site.output()).toContain("the catalog's upstream stream was made again");
  });
});
