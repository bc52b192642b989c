/**
 * The whole mesh in the NAT lab (issue 5), with root: a hub on the WAN, edge
 * nodes behind NATs of different kinds, each running a real `leafmesh agent`
 * with cluster DNS, nftables interception and the tunnel. A client on node A
 * runs `curl http://web.demo.svc.cluster.local` and reaches a backend on node B
 * (hole-punched path) and `api` on node C behind a symmetric NAT (relayed).
 * Then: every hub stopped for longer than a node record lives, and an agent killed and restarted.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildNatLab, hubAddresses, type NatLab } from "../lab/nat.ts";
import { inNamespace, runCommand } from "../lab/netns.ts";
import { namespaceResolver } from "../lab/netns-resolver.ts";
import { join } from "node:path";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { cliPath, launch, nodeBinary, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";

const prefix = "lmms-";
let lab: NatLab;
const resolverRemovals: (() => void)[] = [];

interface NodeView {
  status: { actors: { name: string; state: string; detail?: Record<string, unknown> }[] };
  services: { name: string }[];
}

let keys = "";

/** `leafmesh status --json` run inside the node's namespace (the lab has no route to the test process), with the mesh's keys. */
async function statusIn(namespace: string, node?: string): Promise<NodeView> {
  const argv = [nodeBinary, cliPath, "status", "--json", "--nats", "nats://127.0.0.1:4222", "--timeout", "2000", "--keys", keys, ...(node ? ["--node", node] : [])];
  const result = await runCommand(inNamespace(namespace, argv), { timeoutMs: 15_000 });
  if (result.code !== 0) throw new Error(`status in ${namespace}: ${result.stderr}`);
  return JSON.parse(result.stdout) as NodeView;
}

async function curlIn(namespace: string, url: string): Promise<{ code: number; body: string }> {
  const result = await runCommand(inNamespace(namespace, ["curl", "-s", "--max-time", "5", url]), { timeoutMs: 10_000 });
  return { code: result.code, body: result.stdout };
}

const backgrounds: ChildProcess[] = [];

/** A small HTTP backend on port 8080 inside a namespace, answering with `text`. */
function backend(namespace: string, text: string): void {
  const script = `require("node:http").createServer((q, s) => s.end(${JSON.stringify(text)} + "\\n")).listen(8080, "0.0.0.0")`;
  const argv = inNamespace(namespace, [nodeBinary, "-e", script]);
  backgrounds.push(spawn(argv[0], argv.slice(1), { stdio: "ignore" }));
}

describe.sequential("the mesh in the NAT lab", () => {
  let manifests: string;
  let hub: LeafmeshProcess;
  const agents = new Map<string, LeafmeshProcess>();
  let agentArgs: (node: string, namespace: string, address: string) => string[];

  beforeAll(async () => {
    lab = await buildNatLab({
      prefix,
      sites: [
        { name: "a", nat: "port-restricted" },
        { name: "b", nat: "full-cone" },
        { name: "c", nat: "symmetric" },
      ],
    });
    const [siteA, siteB, siteC] = lab.sites;
    manifests = tempDir();
    const service = (name: string, clusterIP: string, host: string, node: string) => sampleService({ name, clusterIP, endpoints: [{ ip: host, node }] });
    writeManifest(manifests, "web.yaml", service("web", "198.19.0.10", siteB.hosts[0].address, "node-b"));
    writeManifest(manifests, "api.yaml", service("api", "198.19.0.11", siteC.hosts[0].address, "node-c"));
    backend(siteB.hosts[0].namespace, "hello from web on node-b");
    backend(siteC.hosts[0].namespace, "hello from api on node-c");

    // Security on, as in production: the mesh's keys, the hubs' certificate for their WAN addresses, one identity per node.
    keys = join(tempDir(), "keys");
    await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", ...hubAddresses] });
    for (const node of ["node-a", "node-b", "node-c"]) await issueNode({ dir: keys, node });
    hub = launch(
      "hub-1",
      ["hub", "--name", "hub-1", "--data", tempDir(), "--listen", "0.0.0.0:4222", "--leaf-listen", "0.0.0.0:7422", "--monitor-listen", "127.0.0.1:8222",
        "--metrics-listen", "off", "--manifests", manifests, "--observer", `${hubAddresses[0]},${hubAddresses[1]}:3478,3479`,
        "--keys", keys],
      "", "", lab.hub.namespace,
    );
    await eventually(async () => (await statusIn(lab.hub.namespace)).services.length === 2, 45_000, "the hub to publish");

    agentArgs = (node, _namespace, address) => [
      "agent", "--node", node, "--hub", `nats://${hubAddresses[0]}:7422`, "--data", `/tmp/${prefix}${node}`,
      "--nats-listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off",
      "--dns", `${address}:53`, "--upstream", "127.0.0.1:1", "--intercept", "nftables",
      "--keys", keys, "--tunnel-listen", "/ip4/0.0.0.0/tcp/4101", "--observer", `${hubAddresses[0]}:3478,3479`, "--mdns", "off",
    ];
    for (const [index, site] of [siteA, siteB, siteC].entries()) {
      const node = `node-${"abc"[index]}`;
      const host = site.hosts[0];
      rmSync(`/tmp/${prefix}${node}`, { recursive: true, force: true });
      // ip netns exec bind-mounts /etc/netns/<ns>/resolv.conf: the node's resolver is its agent.
      resolverRemovals.push(namespaceResolver(host.namespace, host.address));
      agents.set(node, launch(node, agentArgs(node, host.namespace, host.address), "", "", host.namespace));
    }
    for (const [node] of agents) {
      const namespace = lab.sites["abc".indexOf(node.slice(-1))].hosts[0].namespace;
      await eventually(async () => (await statusIn(namespace, node)).services.length === 2, 60_000, `${node} to hold the catalog`);
    }
  }, 240_000);

  afterAll(async () => {
    await stopAllProcesses();
    for (const child of backgrounds) child.kill("SIGKILL");
    await lab?.teardown();
    for (const remove of resolverRemovals) remove();
    for (const node of ["node-a", "node-b", "node-c"]) rmSync(`/tmp/${prefix}${node}`, { recursive: true, force: true });
  }, 60_000);

  const nodeA = () => lab.sites[0].hosts[0].namespace;
  const pathsOfA = async () => ((await statusIn(nodeA(), "node-a")).status.actors.find((actor) => actor.name === "tunnel")?.detail?.paths ?? {}) as Record<string, string>;

  it("reaches a backend behind another NAT by name and by cluster IP: hole-punched to B, relayed to symmetric C", { timeout: 120_000 }, async () => {
    const byName = await eventually(async () => {
      const reply = await curlIn(nodeA(), "http://web.demo.svc.cluster.local/");
      return reply.code === 0 ? reply.body : undefined;
    }, 60_000, "web by name from node A");
    expect(byName).toBe("hello from web on node-b\n");
    expect((await curlIn(nodeA(), "http://198.19.0.10/")).body).toBe("hello from web on node-b\n");
    const api = await eventually(async () => {
      const reply = await curlIn(nodeA(), "http://api.demo.svc.cluster.local/");
      return reply.code === 0 ? reply.body : undefined;
    }, 60_000, "api by name from node A");
    expect(api).toBe("hello from api on node-c\n");
    await eventually(async () => {
      const paths = await pathsOfA();
      return paths["node-b"] === "hole-punched" && paths["node-c"] === "relayed";
    }, 60_000, "node A's paths: hole-punched to B, relayed to C");
  });

  it("keeps DNS and punched traffic working with every hub stopped for longer than a node record lives, then catches up", { timeout: 180_000 }, async () => {
    await hub.stop();
    const started = Date.now();
    let requests = 0;
    // Bounded: one request every 2 s for 40 s. The cut outlasts the longest timer that could end a path while the
    // hubs are away: a node record unrefreshed for nodeRecordTtlMs (30 s, bus/node-record.ts) would be expired, were
    // the directory not keeping what it knew while it cannot reach them. 40 s leaves two refreshes' margin past it.
    while (Date.now() - started < 40_000) {
      const reply = await curlIn(nodeA(), "http://web.demo.svc.cluster.local/");
      expect(reply.code, `request ${requests} at ${Date.now() - started} ms`).toBe(0);
      expect(reply.body).toBe("hello from web on node-b\n");
      requests++;
      await new Promise((resolve) => setTimeout(resolve, 2_000));
    }
    expect(requests).toBeGreaterThanOrEqual(13);

    writeManifest(manifests, "late.yaml", sampleService({ name: "late", clusterIP: "198.19.0.12" }));
    hub = launch("hub-1", hub.child.spawnargs.slice(hub.child.spawnargs.indexOf(cliPath) + 1), "", "", lab.hub.namespace);
    await eventually(async () => (await statusIn(nodeA(), "node-a")).services.some((service) => service.name === "late"), 90_000, "a change made at the hub to reach node A");
  });

  it("resumes after an agent is killed and restarted: traffic flows, one set of rules, paths re-established", { timeout: 180_000 }, async () => {
    const agent = agents.get("node-a")!;
    await agent.kill();
    const host = lab.sites[0].hosts[0];
    agents.set("node-a", launch("node-a", agentArgs("node-a", host.namespace, host.address), "", "", host.namespace));
    const reply = await eventually(async () => {
      const result = await curlIn(nodeA(), "http://web.demo.svc.cluster.local/");
      return result.code === 0 ? result.body : undefined;
    }, 90_000, "web again after the restart");
    expect(reply).toBe("hello from web on node-b\n");
    const tables = await runCommand(inNamespace(host.namespace, ["nft", "list", "tables"]));
    expect(tables.stdout.split("\n").filter((line) => line.includes("leafmesh")).sort()).toEqual(["table ip leafmesh", "table ip leafmesh-localnet", "table ip6 leafmesh", "table ip6 leafmesh-localnet"]); // one set: the DNAT tables and the localnet guards, IPv4's and IPv6's
    await eventually(async () => (await pathsOfA())["node-b"] === "hole-punched", 60_000, "the punched path back");
  });
});
