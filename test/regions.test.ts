/**
 * Regions (issue 7): two hub clusters joined by gateways, one JetStream domain.
 * An agent attached to one region moves to the other when its region dies, and
 * catalog changes keep arriving.
 */
import { afterEach, describe, expect, it } from "vitest";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { hubPorts, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type HubProcess } from "./support/processes.ts";

afterEach(stopAllProcesses);

describe("regions joined by gateways", () => {
  it("moves an agent to the other region when its region's hubs die, and the catalog keeps following", async () => {
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
    const [e1, e2, w1] = [await hubPorts(), await hubPorts(), await hubPorts()];
    const gateway = { east: await hubPorts(), west: await hubPorts() };
    const eastRoutes = [e1, e2].map((port) => `nats-route://127.0.0.1:${port.cluster}`);
    const gatewayArgs = (region: "east" | "west", listen: number) => [
      "--gateway-name", region,
      "--gateway-listen", `127.0.0.1:${listen}`,
      "--gateways", `east=nats://127.0.0.1:${gateway.east.cluster},nats://127.0.0.1:${gateway.east.leaf};west=nats://127.0.0.1:${gateway.west.cluster}`,
    ];
    // East: two hubs (the catalog lives there, two replicas); west: one hub. Three servers in the
    // metadata group, so losing west keeps a quorum (docs/nats-facts.md: never let one region hold half).
    const start = (name: string, ports: typeof e1, region: "east" | "west", listen: number, routes?: string[]) =>
      startHubProcess({
        name,
        ports,
        clusterPort: ports.cluster,
        routes,
        manifests: region === "east" ? manifests : undefined,
        extraArgs: [...gatewayArgs(region, listen), ...(region === "east" ? ["--replicas", "2"] : [])],
        leaseTtlMs: 3_000,
      });
    const hubs: HubProcess[] = await Promise.all([
      start("hub-e1", e1, "east", gateway.east.cluster, eastRoutes),
      start("hub-e2", e2, "east", gateway.east.leaf, eastRoutes),
      start("hub-w1", w1, "west", gateway.west.cluster, [`nats-route://127.0.0.1:${w1.cluster}`]),
    ]);
    const west = hubs[2];
    // The agent attaches to the west hub first: on a busy loopback RTTs are noise, so the test fixes the order.
    const agent = await startAgentProcess({ node: "edge-w", hubs: [west.leafUrl, hubs[0].leafUrl, hubs[1].leafUrl], extraArgs: ["--upstream-order", "given"] });
    await eventually(async () => (await agent.view()).services.length === 1, 30_000, "the catalog across the gateway");
    const linkUrl = async () => (await agent.view()).status.links.find((link) => link.direction === "upstream")?.url;
    expect(await eventually(linkUrl, 10_000, "the agent's link")).toContain(west.leafUrl.replace("nats://", ""));
    const westView = await west.view();
    expect(westView.status.links.some((link) => link.kind === "gateway")).toBe(true);

    await west.kill();
    await eventually(async () => {
      const url = await linkUrl();
      return url !== undefined && !url.includes(west.leafUrl.replace("nats://", ""));
    }, 20_000, "the agent to move to the east region");

    writeManifest(manifests, "api.yaml", sampleService({ name: "api", clusterIP: "198.19.0.11" }));
    await eventually(async () => (await agent.view()).services.some((service) => service.name === "api"), 40_000, "a change to arrive through the east region");
  });
});
