/**
 * Edge sites (issue 7) on loopback: a site cluster of three servers is a leaf of
 * the hub, mirrors the catalog into the site's domain, and serves the site's
 * agents while the cloud is away.
 */
import { afterEach, describe, expect, it } from "vitest";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { runCli, startAgentProcess, startHubProcess, startSiteCluster, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";

afterEach(stopAllProcesses);

const names = async (process: LeafmeshProcess) => (await process.view()).services.map((service) => service.name).sort().join(",");

describe("edge sites", () => {
  it("serves a site's agents from the site while the cloud is gone, and delivers the cloud's changes once it is back", async () => {
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
    const hub = await startHubProcess({ name: "hub-1", manifests });
    const servers = await startSiteCluster({ site: "site-a", servers: ["site-a-1", "site-a-2", "site-a-3"], upstreams: [hub.leafUrl] });
    const agents = await Promise.all(
      ["edge-a", "edge-b"].map((node) => startAgentProcess({ node, hubs: servers.map((server) => server.leafUrl), extraArgs: ["--upstream-domain", "site-a"] })),
    );
    for (const agent of agents) await eventually(async () => (await names(agent)) === "web", 20_000, `${agent.name} to get the catalog through the site`);
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
    await hub.restart();
    for (const agent of agents) await eventually(async () => (await names(agent)) === "api,web", 30_000, `${agent.name} to get the change made during the cut`);
    expect(catalogEvents.sort()).toEqual(["eps.demo.api-abc", "svc.demo.api"]);
  });

  it("moves an agent to another server of its site when its server dies, and changes keep arriving", async () => {
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
    const hub = await startHubProcess({ name: "hub-1", manifests });
    const servers = await startSiteCluster({ site: "site-b", servers: ["site-b-1", "site-b-2", "site-b-3"], upstreams: [hub.leafUrl] });
    const agent = await startAgentProcess({ node: "edge-c", hubs: servers.map((server) => server.leafUrl), extraArgs: ["--upstream-domain", "site-b"] });
    await eventually(async () => (await names(agent)) === "web", 20_000, "the catalog through the site");

    const linkUrl = async () => (await agent.view()).status.links.find((link) => link.direction === "upstream")?.url;
    const first = await eventually(linkUrl, 10_000, "the agent's link");
    const used = servers.find((server) => first?.endsWith(server.leafUrl.replace("nats://", "")))!;
    await used.kill();
    await eventually(async () => {
      const url = await linkUrl();
      return url !== undefined && url !== first;
    }, 15_000, "the agent to move to another site server");

    writeManifest(manifests, "api.yaml", sampleService({ name: "api", clusterIP: "198.19.0.11" }));
    await eventually(async () => (await names(agent)) === "api,web", 40_000, "a change to arrive after the site server died");
  });
});
