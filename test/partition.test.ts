/**
 * The per-service partition policy end to end (issue 18 item 5), real processes: a hub with two
 * Services whose endpoints run on the agent's node, `pay` annotated `leafmesh.io/partition:
 * fail-closed` and `telemetry` with no annotation (serve-last-known), and an agent with DNS and
 * its proxy listeners. While the hub is stopped (the node cannot reach its upstream), pay's name
 * answers SERVFAIL and a new connection to its listener is reset, with the refusal counted; telemetry
 * answers and carries bytes as before. When the hub is back, pay does too. Under an edge site cut off
 * from the cloud, pay (its backend on the agent's node, in the site) is served and `ledger` (its
 * backend on a node outside the site) is refused. The namespace site lab (test/sites-lab.test.ts)
 * shows the same with traffic through cluster IPs and a node cut from its site.
 */
import { afterAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { connect, type Server } from "node:net";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually, freePort } from "./support/ports.ts";
import { startAgentProcess, startHubProcess, startSiteCluster, stopAllProcesses, tempDir, type AgentProcess } from "./support/processes.ts";
import { startTcpEcho } from "./support/tunnel-fabric.ts";

function dig(port: number, name: string): { status: string; answers: string[] } {
  const text = execFileSync("dig", ["@127.0.0.1", "-p", String(port), name, "A", "+tries=1", "+time=2"], { encoding: "utf8" });
  const status = /status: (\w+)/.exec(text)?.[1] ?? "none";
  const answers = [...text.matchAll(/^[^;\s]\S*\s+\d+\s+IN\s+A\s+(\S+)$/gm)].map((match) => match[1]);
  return { status, answers };
}

/** Connects to a proxy listener, sends a line, and says what came of it: the echo, or how it ended. */
function exchange(listener: { host: string; port: number }, line: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(listener);
    let text = "";
    socket.on("data", (chunk) => {
      text += chunk.toString();
      if (text.includes(line)) {
        socket.destroy();
        resolve(`echo ${line}`);
      }
    });
    socket.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    socket.on("close", () => resolve(text ? `partial ${text}` : "closed"));
    socket.write(`${line}\n`);
  });
}

const servers: Server[] = [];
afterAll(async () => {
  for (const server of servers) server.close();
  await stopAllProcesses();
});

async function echoServer(): Promise<number> {
  const { server, port } = await startTcpEcho();
  servers.push(server);
  return port;
}

function annotated(objects: object[], annotations: Record<string, string>): object[] {
  const [service, ...rest] = objects as { metadata: Record<string, unknown> }[];
  return [{ ...service, metadata: { ...service.metadata, annotations } }, ...rest];
}

describe("per-service policy while the node cannot reach its upstream", () => {
  it("fail-closed refuses in DNS and traffic during the cut, serve-last-known goes on, both serve again after", async () => {
    const manifests = tempDir();
    const payBackend = await echoServer();
    const telemetryBackend = await echoServer();
    writeManifest(manifests, "pay.yaml", annotated(sampleService({ name: "pay", clusterIP: "198.19.0.20", backendPort: payBackend, endpoints: [{ ip: "127.0.0.1", node: "edge-a" }] }), { "leafmesh.io/partition": "fail-closed" }));
    writeManifest(manifests, "telemetry.yaml", sampleService({ name: "telemetry", clusterIP: "198.19.0.21", backendPort: telemetryBackend, endpoints: [{ ip: "127.0.0.1", node: "edge-a" }] }));
    const hub = await startHubProcess({ name: "hub-1", manifests });
    const dnsPort = await freePort();
    const agent: AgentProcess = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], extraArgs: ["--dns", `127.0.0.1:${dnsPort}`, "--upstream", "127.0.0.1:1"] });
    const listenerOf = async (name: string) => {
      const traffic = (await agent.view()).status.actors.find((actor) => actor.name === "traffic")!;
      const listeners = (traffic.detail?.listeners ?? []) as { key: string; listenerHost?: string; listenerPort: number }[];
      const found = listeners.find((binding) => binding.key === `demo/${name}:http/TCP`);
      return found && { host: found.listenerHost ?? "127.0.0.1", port: found.listenerPort };
    };
    const payPort = await eventually(() => listenerOf("pay"), 20_000, "pay's proxy listener");
    const telemetryPort = await eventually(() => listenerOf("telemetry"), 20_000, "telemetry's proxy listener");

    // Online: both answer and carry bytes.
    await eventually(() => dig(dnsPort, "pay.demo.svc.cluster.local").answers.includes("198.19.0.20"), 20_000, "pay's A record");
    expect(dig(dnsPort, "telemetry.demo.svc.cluster.local").answers).toEqual(["198.19.0.21"]);
    expect(await exchange(payPort, "pay online")).toBe("echo pay online");
    expect(await exchange(telemetryPort, "telemetry online")).toBe("echo telemetry online");
    // A connection opened before the cut stays: it was made while the node could verify.
    const held = connect(payPort);
    let heldText = "";
    held.on("data", (chunk) => (heldText += chunk.toString()));
    held.on("error", () => undefined);

    // The cut: the hub is gone, the agent serves from its mirror.
    await hub.stop();
    await eventually(() => agent.output().includes("hub link down"), 20_000, "the agent to see the hub link down");
    await eventually(() => dig(dnsPort, "pay.demo.svc.cluster.local").status === "SERVFAIL", 10_000, "pay to answer SERVFAIL");
    expect(dig(dnsPort, "_http._tcp.pay.demo.svc.cluster.local").status).toBe("SERVFAIL");
    expect(dig(dnsPort, "telemetry.demo.svc.cluster.local")).toEqual({ status: "NOERROR", answers: ["198.19.0.21"] });
    expect(await exchange(payPort, "pay offline")).toBe("ECONNRESET");
    expect(await exchange(telemetryPort, "telemetry offline")).toBe("echo telemetry offline");
    held.write("held across the cut\n");
    await eventually(() => heldText.includes("held across the cut"), 5_000, "the connection opened before the cut to carry on");
    const counters = ((await agent.view()).status.actors.find((actor) => actor.name === "traffic")!.detail?.counters ?? {}) as Record<string, number>;
    expect(counters["tcp refused: fail-closed while the node cannot reach its upstream"]).toBeGreaterThanOrEqual(1);
    await eventually(() => agent.output().includes("refusing new connections to demo/pay:http/TCP: fail-closed while the node cannot reach its upstream"), 5_000, "the agent to log the refusal");

    // The hub is back: pay serves again.
    await hub.restart();
    await eventually(() => dig(dnsPort, "pay.demo.svc.cluster.local").answers.includes("198.19.0.20"), 30_000, "pay's A record after the cut");
    expect(await exchange(payPort, "pay after")).toBe("echo pay after");
    held.destroy();
  }, 120_000);

  it("under an edge site cut off from the cloud: a fail-closed service with its backends in the site is served, one with a backend outside is refused", async () => {
    const manifests = tempDir();
    const payBackend = await echoServer();
    const telemetryBackend = await echoServer();
    // pay's backend runs on the agent's own node (in the site); ledger's on cloud-1, a node outside the site.
    writeManifest(manifests, "pay.yaml", annotated(sampleService({ name: "pay", clusterIP: "198.19.0.20", backendPort: payBackend, endpoints: [{ ip: "127.0.0.1", node: "edge-a" }] }), { "leafmesh.io/partition": "fail-closed" }));
    writeManifest(manifests, "ledger.yaml", annotated(sampleService({ name: "ledger", clusterIP: "198.19.0.22", backendPort: payBackend, endpoints: [{ ip: "127.0.0.1", node: "cloud-1" }] }), { "leafmesh.io/partition": "fail-closed" }));
    writeManifest(manifests, "telemetry.yaml", sampleService({ name: "telemetry", clusterIP: "198.19.0.21", backendPort: telemetryBackend, endpoints: [{ ip: "127.0.0.1", node: "edge-a" }] }));
    const hub = await startHubProcess({ name: "hub-1", manifests });
    const [site] = await startSiteCluster({ site: "site-a", servers: ["site-a-1"], upstreams: [hub.leafUrl] });
    const dnsPort = await freePort();
    const agent = await startAgentProcess({ node: "edge-a", hubs: [site.leafUrl], extraArgs: ["--upstream-domain", "site-a", "--dns", `127.0.0.1:${dnsPort}`, "--upstream", "127.0.0.1:1"] });
    await eventually(() => dig(dnsPort, "ledger.demo.svc.cluster.local").answers.includes("198.19.0.22"), 30_000, "ledger's A record through the site");
    expect(dig(dnsPort, "pay.demo.svc.cluster.local").answers).toEqual(["198.19.0.20"]);

    await hub.stop();
    await eventually(() => dig(dnsPort, "ledger.demo.svc.cluster.local").status === "SERVFAIL", 75_000, "ledger to answer SERVFAIL while the site is cut off (a site mirror silent for 30 s counts as cut off)");
    // Logs reach the pipe a moment after the state changed (pino writes asynchronously).
    await eventually(() => agent.output().includes("the site is cut off from the cloud"), 5_000, "the agent to log the site's cut");
    expect(agent.output()).not.toContain("hub link down");
    expect(dig(dnsPort, "pay.demo.svc.cluster.local")).toEqual({ status: "NOERROR", answers: ["198.19.0.20"] });
    expect(dig(dnsPort, "telemetry.demo.svc.cluster.local")).toEqual({ status: "NOERROR", answers: ["198.19.0.21"] });

    await hub.restart();
    await eventually(() => dig(dnsPort, "ledger.demo.svc.cluster.local").answers.includes("198.19.0.22"), 40_000, "ledger's A record once the site reaches the cloud again");
  }, 150_000);
});
