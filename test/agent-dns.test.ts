/**
 * Cluster DNS through a real agent process: answers follow the hub's catalog,
 * and keep coming from the node's mirror while the hub is stopped. Queried with
 * real `dig`.
 */
import { execFileSync } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually, freePort } from "./support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "./support/processes.ts";

afterEach(stopAllProcesses);

/** Real dig: the response code, and the answer records' data (`+short`). */
function dig(port: number, name: string, type = "A"): { status: string; answers: string[] } {
  const args = [`@127.0.0.1`, "-p", String(port), name, type, "+tries=1", "+time=2"];
  const status = /status: (\w+)/.exec(execFileSync("dig", args, { encoding: "utf8" }))?.[1] ?? "none";
  const answers = execFileSync("dig", [...args, "+short"], { encoding: "utf8" }).split("\n").filter(Boolean);
  return { status, answers };
}

describe("cluster DNS on an agent", () => {
  it("keeps serving DNS and proxies when the interception tool is missing, and says which package to install", async () => {
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
    const hub = await startHubProcess({ name: "hub-1", manifests });
    const dnsPort = await freePort();
    // A PATH without /usr/sbin, where nft lives (nats-server is named explicitly).
    const agent = await startAgentProcess({
      node: "edge-a",
      hubs: [hub.leafUrl],
      extraArgs: ["--dns", `127.0.0.1:${dnsPort}`, "--upstream", "127.0.0.1:1", "--intercept", "nftables"],
      env: { PATH: "/usr/bin:/bin", LEAFMESH_NATS_SERVER: "/usr/sbin/nats-server" },
    });
    await eventually(() => dig(dnsPort, "web.demo.svc.cluster.local").answers.includes("198.19.0.10"), 10_000, "DNS without interception");
    expect(agent.output()).toMatch(/cluster-IP interception \(nftables\) cannot start; running without it/);
    expect(agent.output()).toMatch(/apt-get install -y nftables/);
    const view = await agent.view();
    expect(view.status.actors.find((actor) => actor.name === "proxier")?.state).toBe("off");
    expect(view.status.actors.find((actor) => actor.name === "traffic")?.state).toBe("serving");
  });

  it("answers from the catalog, follows changes, and keeps answering with the hub stopped", async () => {
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
    const hub = await startHubProcess({ name: "hub-1", manifests });
    const dnsPort = await freePort();
    const agent = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], extraArgs: ["--dns", `127.0.0.1:${dnsPort}`, "--upstream", "127.0.0.1:1"] });

    await eventually(() => dig(dnsPort, "web.demo.svc.cluster.local").answers.includes("198.19.0.10"), 10_000, "web's A record");
    expect(dig(dnsPort, "nope.demo.svc.cluster.local").status).toBe("NXDOMAIN");

    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.20" }));
    await eventually(() => dig(dnsPort, "web.demo.svc.cluster.local").answers.includes("198.19.0.20"), 10_000, "the changed cluster IP");

    await hub.stop();
    await eventually(async () => (await agent.view()).status.actors.find((actor) => actor.name === "controller")?.state === "serving.offline", 20_000, "the agent to go offline");
    expect(dig(dnsPort, "web.demo.svc.cluster.local").answers).toEqual(["198.19.0.20"]);
    const view = await agent.view();
    expect(view.status.actors.find((actor) => actor.name === "dns")?.state).toBe("serving");
  });
});
