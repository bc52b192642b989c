/**
 * Edge sites (issue 7) on loopback: a site cluster of three servers is a leaf of
 * the hub, mirrors the catalog into the site's domain, and serves the site's
 * agents while the cloud is away.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import {
  hubPorts, runCli, siteClusterPorts, startAgentProcess, startHubProcess, startSiteCluster, stopAllProcesses, tempDir,
  type AgentProcess, type HubProcess, type LeafmeshProcess, type SiteProcess,
} from "./support/processes.ts";

const names = async (process: LeafmeshProcess) => (await process.view()).services.map((service) => service.name).sort().join(",");

/**
 * One hub, one site of three servers and three agents for both tests (a site cluster's
 * JetStream quorum is the slow part to start). The tests run in order and touch
 * different parts: the first stops and restarts the hub with edge-a and edge-b; the
 * second kills the site server that edge-c is attached to.
 */
describe.sequential("edge sites", () => {
  const manifests = tempDir();
  let hub: HubProcess;
  let servers: SiteProcess[];
  let agents: AgentProcess[];
  let edgeC: AgentProcess;

  beforeAll(async () => {
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
    // The hub and the site start together (the site's ports chosen first): a site waits for its upstream as it would in the
    // field, and its cluster's JetStream election overlaps the hub's start. The agents follow, all at once.
    const ports = { hub: await hubPorts(), site: await siteClusterPorts(3) };
    [hub, servers] = await Promise.all([
      startHubProcess({ name: "hub-1", manifests, ports: ports.hub }),
      startSiteCluster({ site: "site-a", servers: ["site-a-1", "site-a-2", "site-a-3"], upstreams: [`nats://127.0.0.1:${ports.hub.leaf}`], ports: ports.site }),
    ]);
    const started = await Promise.all(
      ["edge-a", "edge-b", "edge-c"].map((node) => startAgentProcess({ node, hubs: servers.map((server) => server.leafUrl), extraArgs: ["--upstream-domain", "site-a"] })),
    );
    agents = started.slice(0, 2);
    edgeC = started[2];
  }, 120_000);

  afterAll(stopAllProcesses, 60_000);

  it("serves a site's agents from the site while the cloud is gone, and delivers the cloud's changes once it is back", async () => {
    for (const agent of agents) await eventually(async () => (await names(agent)) === "web", 45_000, `${agent.name} to get the catalog through the site`);
    const siteView = await servers[0].view();
    expect(siteView.status.role).toBe("site");
    expect(siteView.status.links.some((link) => link.direction === "upstream")).toBe(true);

    // The fabric tree, as an operator sees it from the hub.
    const tree = await runCli(["status", "--tree", "--nats", hub.clientUrl, "--wait", "6000"]);
    expect(tree.code, tree.stderr).toBe(0);
    const lines = tree.stdout.split("\n");
    expect(lines[0]).toBe("cloud");
    expect(lines[1]).toBe("  hub hub-1");
    expect(lines.filter((line) => line.startsWith("    site site-a server "))).toHaveLength(3);
    for (const agent of agents) expect(lines).toContain(`      agent ${agent.name}`);

    const catalogEvents: string[] = [];
    const connection = await agents[0].connection();
    connection.subscribe("mesh.edge-a.controller.catalog", { callback: (_error, message) => void catalogEvents.push(message.json<{ key: string }>().key) });
    await connection.flush();

    await hub.stop();
    await eventually(async () => (await servers[0].view()).status.links.every((link) => link.direction !== "upstream"), 20_000, "the site to see the cloud gone");
    for (const agent of agents) {
      expect(await names(agent)).toBe("web");
      // The agents' own link (to the site) is up: the site is their master now.
      expect((await agent.view()).status.links.some((link) => link.direction === "upstream")).toBe(true);
    }

    writeManifest(manifests, "api.yaml", sampleService({ name: "api", clusterIP: "198.19.0.11" }));
    hub = await hub.restart();
    for (const agent of agents) await eventually(async () => (await names(agent)) === "api,web", 30_000, `${agent.name} to get the change made during the cut`);
    expect(catalogEvents.sort()).toEqual(["eps.demo.api-abc", "svc.demo.api"]);
  }, 90_000);

  it("moves an agent to another server of its site when its server dies, and changes keep arriving", async () => {
    const agent = edgeC;
    await eventually(async () => (await names(agent)) === "api,web", 30_000, "the catalog through the site");

    const linkUrl = async () => (await agent.view()).status.links.find((link) => link.direction === "upstream")?.url;
    const first = await eventually(linkUrl, 10_000, "the agent's link");
    const used = servers.find((server) => first?.endsWith(server.leafUrl.replace("nats://", "")))!;
    await used.kill();
    await eventually(async () => {
      const url = await linkUrl();
      return url !== undefined && url !== first;
    }, 15_000, "the agent to move to another site server");

    writeManifest(manifests, "db.yaml", sampleService({ name: "db", clusterIP: "198.19.0.12" }));
    await eventually(async () => (await names(agent)) === "api,db,web", 40_000, "a change to arrive after the site server died");
  }, 90_000);
});
