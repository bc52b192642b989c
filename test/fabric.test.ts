/**
 * The fabric end to end, with real leafmesh hub and agent processes and their
 * real nats-server children: catalog propagation, offline operation, hub
 * failover in a cluster, publisher lease takeover.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { buckets } from "../bus/subjects.ts";
import { manyServices, sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { hubPorts, startAgentProcess, startHubCluster, startHubProcess, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";

afterEach(async () => {
  await stopAllProcesses();
});
afterAll(async () => {
  await stopAllProcesses();
});

async function serviceNames(process: LeafmeshProcess): Promise<string[]> {
  const view = await process.view();
  return view.services.map((service) => `${service.namespace}/${service.name}:${service.ports.join(",")}`).sort();
}

async function leafUrlOf(agent: LeafmeshProcess): Promise<string | undefined> {
  const view = await agent.view();
  return view.status.links.find((link) => link.kind === "leaf" && link.direction === "upstream")?.url;
}

describe("fabric: hub and agents", () => {
  it("propagates a manifest directory to every agent: initial load, edit, delete and a new file", async () => {
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
    writeManifest(manifests, "db.yaml", sampleService({ name: "db", clusterIP: "198.19.0.11", port: 5432 }));
    const hub = await startHubProcess({ name: "hub-1", manifests, ports: await hubPorts() });
    const agents = await Promise.all(["edge-a", "edge-b"].map((node) => startAgentProcess({ node, hubs: [hub.leafUrl] })));

    for (const agent of agents) {
      await eventually(async () => (await serviceNames(agent)).join(" ") === "demo/db:http:5432/TCP demo/web:http:80/TCP", 5_000, `${agent.name} to hold the catalog`);
      const view = await agent.view();
      const web = view.services.find((service) => service.name === "web")!;
      expect(web.clusterIPs).toEqual(["198.19.0.10"]);
      expect(web.endpoints).toEqual([{ address: "198.18.10.1", node: "edge-a", ready: true, serving: true, terminating: false }]);
      expect(view.status.links.some((link) => link.direction === "upstream")).toBe(true);
    }

    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10", port: 8080 }));
    rmSync(join(manifests, "db.yaml"));
    writeManifest(manifests, "api.yaml", sampleService({ name: "api", clusterIP: "198.19.0.12", port: 9000 }));
    for (const agent of agents) {
      await eventually(async () => (await serviceNames(agent)).join(" ") === "demo/api:http:9000/TCP demo/web:http:8080/TCP", 5_000, `${agent.name} to follow the edit`);
    }

    // Metrics and health, as Prometheus and a kubelet probe see them.
    const agentMetrics = await (await fetch(`${agents[0].metricsUrl}/metrics`)).text();
    expect(agentMetrics).toMatch(/^leafmesh_catalog_objects\{node="edge-a",role="agent"\} 4$/m);
    expect(agentMetrics).toMatch(/^leafmesh_upstream_connected\{node="edge-a",role="agent"\} 1$/m);
    expect((await fetch(`${agents[0].metricsUrl}/readyz`)).status).toBe(200);
    const hubMetrics = await (await fetch(`${hub.metricsUrl}/metrics`)).text();
    expect(hubMetrics).toMatch(/^leafmesh_publisher_leading\{node="hub-1",role="hub"\} 1$/m);
  });

  it("keeps serving the catalog while the hub is down, says so on the bus, and catches up without a full resend", async () => {
    const manifests = tempDir();
    writeManifest(manifests, "many.yaml", manyServices(200));
    const hub = await startHubProcess({ name: "hub-1", manifests });
    const agent = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl] });
    await eventually(async () => (await agent.view()).services.length === 200, 10_000, "the full catalog at the agent");

    const connection = await agent.connection();
    const links: { up: boolean }[] = [];
    const syncs: { online: boolean }[] = [];
    const catalogEvents: string[] = [];
    connection.subscribe("mesh.edge-a.fabric.link", { callback: (_e, message) => void links.push(message.json()) });
    connection.subscribe("mesh.edge-a.controller.sync", { callback: (_e, message) => void syncs.push(message.json()) });
    connection.subscribe("mesh.edge-a.controller.catalog", { callback: (_e, message) => void catalogEvents.push(message.json<{ key: string }>().key) });
    await connection.flush();

    await hub.stop();
    await eventually(() => links.some((link) => !link.up) && syncs.some((sync) => !sync.online), 20_000, "the agent to report the hub link down");
    const offline = await agent.view();
    expect(offline.services).toHaveLength(200);
    expect(offline.status.links.filter((link) => link.direction === "upstream")).toHaveLength(0);
    expect(offline.status.actors.find((actor) => actor.name === "controller")?.state).toBe("serving.offline");
    // Still healthy and ready (it serves from its mirror), and the metric says the link is down.
    expect((await fetch(`${agent.metricsUrl}/readyz`)).status).toBe(200);
    expect(await (await fetch(`${agent.metricsUrl}/metrics`)).text()).toMatch(/^leafmesh_upstream_connected\{[^}]*\} 0$/m);

    // Changes made while the agent is cut off.
    writeManifest(manifests, "extra.yaml", sampleService({ name: "late", clusterIP: "198.19.9.9" }));
    const leafzBefore = await fetch(`http://127.0.0.1:${hub.monitorPort}/leafz`).catch(() => undefined);
    expect(leafzBefore).toBeUndefined(); // the hub's server is really gone

    const restarted = await hub.restart();
    await eventually(async () => (await agent.view()).services.some((service) => service.name === "late"), 20_000, "the change made offline to arrive");
    await eventually(() => syncs.at(-1)?.online === true, 10_000, "the agent to report the hub link up");
    // Only what changed crossed the link: the late Service and its slice, not 400 objects again.
    expect(catalogEvents.sort()).toEqual(["eps.demo.late-abc", "svc.demo.late"]);
    const leafz = (await (await fetch(`http://127.0.0.1:${restarted.monitorPort}/leafz`)).json()) as { leafs: { out_msgs: number }[] };
    expect(leafz.leafs[0].out_msgs).toBeLessThan(100);
    expect((await agent.view()).services).toHaveLength(201);
  });

  it("moves an agent's leaf to another hub of the cluster when its hub dies, and catalog changes keep arriving", async () => {
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
    const hubs = await startHubCluster({ names: ["hub-1", "hub-2", "hub-3"], manifests, leaseTtlMs: 3_000 });
    const agent = await startAgentProcess({ node: "edge-a", hubs: hubs.map((hub) => hub.leafUrl) });
    await eventually(async () => (await agent.view()).services.length === 1, 15_000, "the catalog at the agent");

    const usedUrl = await eventually(() => leafUrlOf(agent), 10_000, "the agent's leaf link");
    const used = hubs.find((hub) => usedUrl?.endsWith(hub.leafUrl.replace("nats://", "")))!;
    expect(used).toBeDefined();
    await used.kill();

    const movedTo = await eventually(async () => {
      const url = await leafUrlOf(agent);
      return url && url !== usedUrl ? url : undefined;
    }, 20_000, "the leaf to move to another hub");
    expect(movedTo).not.toBe(usedUrl);

    writeManifest(manifests, "api.yaml", sampleService({ name: "api", clusterIP: "198.19.0.12" }));
    await eventually(async () => (await agent.view()).services.some((service) => service.name === "api"), 30_000, "a change to arrive through the other hub");
  });

  it("hands the publisher lease over within seconds when its holder dies, writing nothing twice and losing nothing", async () => {
    const manifests = tempDir();
    writeManifest(manifests, "many.yaml", manyServices(50));
    const hubs = await startHubCluster({ names: ["hub-1", "hub-2", "hub-3"], manifests, sources: ["hub-1", "hub-2"], leaseTtlMs: 6_000 });
    const holderOf = async (hub: LeafmeshProcess) => (await hub.view()).status.actors.find((actor) => actor.name === "publisher");
    const leader = await eventually(async () => {
      for (const hub of hubs.slice(0, 2)) if ((await holderOf(hub))?.state === "leading") return hub;
      return undefined;
    }, 20_000, "one publisher to take the lease");
    const follower = hubs.slice(0, 2).find((hub) => hub !== leader)!;
    expect((await holderOf(follower))?.state).toBe("following");
    expect((await holderOf(hubs[2]))?.state).toBe("no source");

    const observer = await hubs[2].connection();
    const kv = await new Kvm(observer).open(buckets.catalog);
    await eventually(async () => (await kv.status()).values === 100, 15_000, "the catalog written once");
    const jsm = await jetstreamManager(observer);
    const before = (await jsm.streams.info(`KV_${buckets.catalog}`)).state;

    const killedAt = Date.now();
    await leader.kill();
    await eventually(async () => (await holderOf(follower))?.state === "leading", 10_000, "the other publisher to take over within 10 s");
    const tookOverMs = Date.now() - killedAt;

    // The new holder found the catalog complete: it wrote nothing.
    // Asked again if it times out: the killed hub may have led the stream, and its new leader is being elected.
    const after = await eventually(async () => (await jsm.streams.info(`KV_${buckets.catalog}`)).state, 20_000, "the catalog stream's state after the kill");
    expect(after.last_seq).toBe(before.last_seq);
    expect(after.messages).toBe(100);

    // And it publishes what changes from now on, once.
    writeManifest(manifests, "extra.yaml", sampleService({ name: "late", clusterIP: "198.19.9.9" }));
    await eventually(async () => (await kv.status()).values === 102, 10_000, "the new holder to publish a change");
    const final = await eventually(async () => (await jsm.streams.info(`KV_${buckets.catalog}`)).state, 20_000, "the catalog stream's state after the change");
    expect(final.last_seq).toBe(before.last_seq + 2);
    console.log(`publisher lease taken over ${tookOverMs} ms after its holder was killed`);
  });
});
