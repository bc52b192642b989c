/**
 * Site locality (issue 7), with root and security on (issue 8): two nodes of one
 * edge site, relayed to each other through their site server (the tunnel may only
 * relay), move a 4 MiB response while the bytes on the site's uplink to the cloud
 * are counted. Each node keeps its own account through the site (one leaf remote
 * per member: trust/site-security.ts), and the relay follows the accounts'
 * imports on the site itself: the uplink carries almost nothing.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, inNamespace, runCommand, type Lab } from "../lab/netns.ts";
import { join } from "node:path";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { issueSite } from "../trust/site-store.ts";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { launch, nodeBinary, statusInNamespace, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";

// Addresses from 198.18.128.0/18, this test's block: uplink 198.18.128.0/30, site LAN 198.18.129.0/24.
const hubAddress = "198.18.128.1";
const siteUplinkAddress = "198.18.128.2";
const siteLanAddress = "198.18.129.1";
const nodeAddresses = { "node-a": "198.18.129.10", "node-b": "198.18.129.11" };
let lab: Lab;
let keys = "";
let siteServer: LeafmeshProcess;
const backgrounds: ChildProcess[] = [];

async function uplinkBytes(siteNamespace: string): Promise<number> {
  const result = await runCommand(inNamespace(siteNamespace, ["ip", "-s", "-j", "link", "show", "uplink"]));
  const [link] = JSON.parse(result.stdout) as { stats64: { rx: { bytes: number }; tx: { bytes: number } } }[];
  return link.stats64.rx.bytes + link.stats64.tx.bytes;
}

/** `leafmesh status --json` inside a namespace, with the credentials of the hub (none), the site server (site) or a node (node). */
function statusIn(namespace: string, as: { node?: string; site?: string } = {}): Promise<{ status: { actors: { name: string; detail?: Record<string, unknown> }[] }; services: unknown[] }> {
  return statusInNamespace(namespace, { port: 4222, keys, as });
}

describe.sequential("relayed streams inside one site", () => {
  let site: string;
  const nodes: Record<string, string> = {};
  const agents: Record<string, LeafmeshProcess> = {};

  beforeAll(async () => {
    lab = await createLab({ prefix: "lmst-" });
    const hub = await lab.namespace("hub");
    site = await lab.namespace("site");
    await lab.veth({ a: hub, b: site, nameA: "uplink", nameB: "uplink", addressA: `${hubAddress}/30`, addressB: `${siteUplinkAddress}/30` });
    const lan = await lab.bridge("lan");
    await lab.link({ namespace: site, bridge: lan, address: `${siteLanAddress}/24`, name: "lan" });
    for (const [node, address] of Object.entries(nodeAddresses)) {
      nodes[node] = await lab.namespace(node);
      await lab.link({ namespace: nodes[node], bridge: lan, address: `${address}/24` });
      // Cluster IPs need a route for the kernel to reach the interception rules (as on a real node).
      await lab.route(nodes[node], "default", { via: siteLanAddress });
    }

    // A 4 MiB response from a backend on node-b.
    const script = `const body = Buffer.alloc(4 << 20, 120); require("node:http").createServer((q, s) => s.end(body)).listen(8080, "0.0.0.0")`;
    const argv = inNamespace(nodes["node-b"], [nodeBinary, "-e", script]);
    backgrounds.push(spawn(argv[0], argv.slice(1), { stdio: "ignore" }));

    const manifests = tempDir();
    writeManifest(manifests, "big.yaml", sampleService({ name: "big", clusterIP: "198.19.0.20", endpoints: [{ ip: nodeAddresses["node-b"], node: "node-b" }] }));
    // The mesh's keys: the hub's certificate for its uplink address, one identity per node, the site's bundle with both nodes as members.
    keys = join(tempDir(), "keys");
    await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", hubAddress] });
    for (const node of Object.keys(nodeAddresses)) await issueNode({ dir: keys, node });
    await issueSite({ dir: keys, site: "site-a", members: Object.keys(nodeAddresses), hosts: ["localhost", "127.0.0.1", siteLanAddress] });
    const common = ["--keys", keys, "--metrics-listen", "off", "--monitor-listen", "127.0.0.1:8222", "--listen", "127.0.0.1:4222"];
    launch("hub-1", ["hub", "--name", "hub-1", "--data", tempDir(), "--leaf-listen", `${hubAddress}:7422`, "--manifests", manifests, ...common], "", "", hub);
    await eventually(async () => (await statusIn(hub)).services.length === 1, 45_000, "the hub");
    siteServer = launch("site-a", ["site", "--name", "site-a", "--data", tempDir(), "--upstream", `tls://${hubAddress}:7422`, "--leaf-listen", `${siteLanAddress}:7422`, ...common], "", "", site);
    await eventually(async () => (await statusIn(site, { site: "site-a" })).services.length === 1, 45_000, "the site server").catch((error: Error) => {
      throw new Error(`${error.message}\n--- site-a ---\n${siteServer.output().slice(-3000)}`);
    });
    for (const node of Object.keys(nodeAddresses)) {
      agents[node] = launch(node, [
        "agent", "--node", node, "--hub", `tls://${siteLanAddress}:7422`, "--upstream-domain", "site-a", "--data", tempDir(),
        "--nats-listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--keys", keys,
        "--tunnel-ways", "relay", "--tunnel-listen", "/ip4/0.0.0.0/tcp/4101", "--mdns", "off", "--intercept", "nftables",
      ], "", "", nodes[node]);
    }
    for (const node of Object.keys(nodeAddresses)) {
      await eventually(async () => (await statusIn(nodes[node], { node })).services.length === 1, 45_000, `${node}'s catalog through the site`).catch((error: Error) => {
        throw new Error(`${error.message}\n--- ${node} ---\n${agents[node].output().slice(-3000)}\n--- site-a ---\n${siteServer.output().split("\n").filter((line) => /"level":(40|50)|remote|Leafnode|leafnode/.test(line)).slice(-25).join("\n")}`);
      });
    }
  }, 200_000);

  afterAll(async () => {
    await stopAllProcesses();
    for (const child of backgrounds) child.kill("SIGKILL");
    await lab?.teardown();
  }, 60_000);

  it("moves 4 MiB between two nodes of the site through the site server, with almost nothing on the uplink", { timeout: 120_000 }, async () => {
    const fetchBig = async () => {
      const result = await runCommand(inNamespace(nodes["node-a"], ["sh", "-c", "curl -s --max-time 20 http://198.19.0.20/ | wc -c"]), { timeoutMs: 30_000 });
      return Number(result.stdout.trim());
    };
    // Warm up: the relayed path opens.
    await eventually(async () => (await fetchBig()) === 4 << 20, 60_000, "the first relayed response").catch((error: Error) => {
      const warnings = (name: string) => agents[name].output().split("\n").filter((line) => /"level":(40|50)/.test(line)).slice(-8).join("\n");
      throw new Error(`${error.message}\n--- node-a ---\n${warnings("node-a")}\n--- node-b ---\n${warnings("node-b")}`);
    });
    const paths = (await statusIn(nodes["node-a"], { node: "node-a" })).status.actors.find((actor) => actor.name === "tunnel")?.detail?.paths as Record<string, string>;
    expect(paths["node-b"]).toBe("relayed");

    // The fabric's own background on the uplink (JetStream heartbeats, pings) over as long as the transfer takes.
    const started = Date.now();
    const before = await uplinkBytes(site);
    for (let round = 0; round < 3; round++) expect(await fetchBig()).toBe(4 << 20);
    const crossed = (await uplinkBytes(site)) - before;
    const elapsed = Date.now() - started;
    const idleBefore = await uplinkBytes(site);
    await new Promise((resolve) => setTimeout(resolve, elapsed));
    const idle = (await uplinkBytes(site)) - idleBefore;
    console.log(`uplink: ${crossed} bytes while 12 MiB moved in ${elapsed} ms; ${idle} bytes idle for as long`);
    // 12 MiB moved between the two nodes; the uplink carried only the fabric's own chatter, as much as when idle.
    expect(crossed).toBeLessThan(64 * 1024);
    expect(idle).toBeLessThan(64 * 1024);
  });
});
