/**
 * An edge site in network namespaces (issue 7), with security on: a hub in the
 * cloud namespace, a site of THREE clustered site servers behind one uplink, and
 * two agents on the site's LAN whose tunnels may only relay (so every byte
 * between them goes through the site servers).
 *
 * 1. The uplink is cut for 30 s: meanwhile node-a keeps resolving the service by
 *    name (its agent's DNS), reaching node-b's backend by name and by cluster IP
 *    (relayed through the site), and the hub adds, changes and deletes
 *    services. After the heal the agents' catalogs equal the hub's: nothing
 *    lost, nothing twice; the new service answers, the deleted one stops
 *    resolving.
 * 2. The site server node-a's agent is attached to is killed: the agent moves to
 *    another server of the site within seconds, traffic keeps flowing, and a
 *    change made at the hub afterwards still arrives.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, inNamespace, runCommand, type Lab } from "../lab/netns.ts";
import { initKeys, issueNode } from "../trust/key-store.ts";
import { issueSite } from "../trust/site-store.ts";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { launch, nodeBinary, statusInNamespace, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";

// This test's block: uplink 198.18.160.0/30, site LAN 198.18.161.0/24.
const hubAddress = "198.18.160.1";
const uplinkAddress = "198.18.160.2";
const siteLanAddress = "198.18.161.1";
const nodeAddresses = { "node-a": "198.18.161.10", "node-b": "198.18.161.11" };
const servers = ["s1", "s2", "s3"];
/** Each site server's ports in the site namespace: client, monitor, leaf, cluster. */
const serverPorts = (index: number) => ({ client: 4222 + index, monitor: 8222 + index, leaf: 7422 + index, cluster: 6222 + index });

type View = { status: { links: { direction: string; remote: string; up: boolean }[]; catalogObjects: number }; services: { namespace: string; name: string; clusterIPs: string[]; endpoints: { address: string }[] }[] };

let lab: Lab;
let keys = "";
let manifests = "";
const backgrounds: ChildProcess[] = [];
const resolvConfDirs: string[] = [];
const namespaces: Record<string, string> = {};
const processes: Record<string, LeafmeshProcess> = {};

/** `leafmesh status --json` inside a namespace: the hub (no flag), a site server (--site, --node) or an agent (--node). */
function statusIn(namespace: string, port: number, as: string[] = []): Promise<View> {
  return statusInNamespace<View>(namespace, { port, keys, as });
}
const hubView = () => statusIn(namespaces.hub, 4222);
const agentView = (node: string) => statusIn(namespaces[node], 4222, ["--node", node]);

/** What a catalog holds, comparable across nodes: one line per service with its address and endpoints. */
function catalogLines(view: View): string[] {
  return view.services.map((service) => `${service.namespace}/${service.name} ${service.clusterIPs.join(",")} ${service.endpoints.map((endpoint) => endpoint.address).join(",")}`).sort();
}

async function curlIn(namespace: string, url: string): Promise<string> {
  const result = await runCommand(inNamespace(namespace, ["curl", "-s", "--max-time", "5", url]), { timeoutMs: 10_000 });
  return result.code === 0 ? result.stdout : `curl exit ${result.code}`;
}

async function digIn(namespace: string, name: string): Promise<string> {
  const result = await runCommand(inNamespace(namespace, ["dig", "+short", "+time=2", "+tries=1", `@${nodeAddresses["node-a"]}`, name]), { timeoutMs: 10_000 });
  return result.stdout.trim();
}

async function uplinkUp(up: boolean): Promise<void> {
  await runCommand(inNamespace(namespaces.site, ["ip", "link", "set", "uplink", up ? "up" : "down"]));
}

function logTail(name: string): string {
  return `--- ${name} ---\n${processes[name]?.output().split("\n").filter((line) => /"level":(40|50)/.test(line)).slice(-10).join("\n")}`;
}

describe.sequential("an edge site in namespaces: cloud cut and a lost site server", () => {
  beforeAll(async () => {
    lab = await createLab({ prefix: "lmsl-" });
    namespaces.hub = await lab.namespace("hub");
    namespaces.site = await lab.namespace("site");
    await lab.veth({ a: namespaces.hub, b: namespaces.site, nameA: "uplink", nameB: "uplink", addressA: `${hubAddress}/30`, addressB: `${uplinkAddress}/30` });
    const lan = await lab.bridge("lan");
    await lab.link({ namespace: namespaces.site, bridge: lan, address: `${siteLanAddress}/24`, name: "lan" });
    for (const [node, address] of Object.entries(nodeAddresses)) {
      namespaces[node] = await lab.namespace(node);
      await lab.link({ namespace: namespaces[node], bridge: lan, address: `${address}/24` });
      await lab.route(namespaces[node], "default", { via: siteLanAddress });
      // ip netns exec bind-mounts /etc/netns/<ns>/resolv.conf: the node's resolver is its agent.
      const dir = `/etc/netns/${namespaces[node]}`;
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, "resolv.conf"), `nameserver ${address}\noptions timeout:2 attempts:1\n`);
      resolvConfDirs.push(dir);
    }
    const script = `require("node:http").createServer((q, s) => s.end("hello from node-b\\n")).listen(8080, "0.0.0.0")`;
    const argv = inNamespace(namespaces["node-b"], [nodeBinary, "-e", script]);
    backgrounds.push(spawn(argv[0], argv.slice(1), { stdio: "ignore" }));

    keys = join(tempDir(), "keys");
    await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", hubAddress] });
    for (const node of Object.keys(nodeAddresses)) await issueNode({ dir: keys, node });
    await issueSite({ dir: keys, site: "site-b", servers, members: Object.keys(nodeAddresses), hosts: ["localhost", "127.0.0.1", siteLanAddress] });

    manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.20", endpoints: [{ ip: nodeAddresses["node-b"], node: "node-b" }] }));
    writeManifest(manifests, "old.yaml", sampleService({ name: "old", clusterIP: "198.19.0.21", endpoints: [{ ip: nodeAddresses["node-b"], node: "node-b" }] }));
    processes.hub = launch("hub", ["hub", "--name", "hub-1", "--data", tempDir(), "--keys", keys, "--listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222",
      "--metrics-listen", "off", "--leaf-listen", `${hubAddress}:7422`, "--manifests", manifests], "", "", namespaces.hub);

    // The site servers start with the hub, not after it: their cluster's JetStream election overlaps the hub's start,
    // and a site waits for its upstream as it would in the field.
    const routes = servers.map((_server, index) => `nats-route://127.0.0.1:${serverPorts(index).cluster}`).join(",");
    for (const [index, server] of servers.entries()) {
      const ports = serverPorts(index);
      processes[server] = launch(server, ["site", "--name", "site-b", "--server", server, "--data", tempDir(), "--keys", keys,
        "--upstream", `tls://${hubAddress}:7422`, "--listen", `127.0.0.1:${ports.client}`, "--monitor-listen", `127.0.0.1:${ports.monitor}`,
        "--metrics-listen", "off", "--leaf-listen", `${siteLanAddress}:${ports.leaf}`, "--routes", routes, "--cluster-listen", `127.0.0.1:${ports.cluster}`], "", "", namespaces.site);
    }
    await eventually(async () => (await hubView()).services.length === 2, 45_000, "the hub to publish");
    for (const [index, server] of servers.entries()) {
      await eventually(async () => (await statusIn(namespaces.site, serverPorts(index).client, ["--site", "site-b", "--node", server])).services.length === 2, 90_000, `site server ${server}`).catch((error: Error) => {
        throw new Error(`${error.message}\n${processes[server].output().slice(-3000)}`);
      });
    }
    const siteUrls = servers.map((_server, index) => `tls://${siteLanAddress}:${serverPorts(index).leaf}`).join(",");
    for (const [node, address] of Object.entries(nodeAddresses)) {
      processes[node] = launch(node, ["agent", "--node", node, "--hub", siteUrls, "--upstream-domain", "site-b", "--upstream-order", "given", "--data", tempDir(),
        "--keys", keys, "--nats-listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off",
        "--dns", `${address}:53`, "--upstream", "127.0.0.1:1", "--intercept", "nftables",
        "--tunnel-ways", "relay", "--tunnel-listen", "/ip4/0.0.0.0/tcp/4101", "--mdns", "off"], "", "", namespaces[node]);
    }
    for (const node of Object.keys(nodeAddresses)) {
      await eventually(async () => (await agentView(node)).services.length === 2, 90_000, `${node}'s catalog through the site`).catch((error: Error) => {
        throw new Error(`${error.message}\n${processes[node].output().slice(-3000)}\n${servers.map(logTail).join("\n")}`);
      });
    }
    await eventually(async () => (await curlIn(namespaces["node-a"], "http://web.demo.svc.cluster.local/")) === "hello from node-b\n", 60_000, "node-a to reach web on node-b").catch(async (error: Error) => {
      throw new Error(`${error.message}\n${logTail("node-a")}\n${logTail("node-b")}`);
    });
  }, 300_000);

  afterAll(async () => {
    await uplinkUp(true).catch(() => undefined);
    await stopAllProcesses();
    for (const child of backgrounds) child.kill("SIGKILL");
    for (const dir of resolvConfDirs) rmSync(dir, { recursive: true, force: true });
    await lab?.teardown();
  }, 60_000);

  it("keeps resolving, proxying and relaying through a 30 s cloud cut, then catches up with every change", { timeout: 180_000 }, async () => {
    await uplinkUp(false);
    const cutAt = Date.now();
    // Changes in the cloud during the cut: one service added, one changed (a second endpoint), one deleted.
    writeManifest(manifests, "late.yaml", sampleService({ name: "late", clusterIP: "198.19.0.22", endpoints: [{ ip: nodeAddresses["node-b"], node: "node-b" }] }));
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.20", endpoints: [{ ip: nodeAddresses["node-b"], node: "node-b" }, { ip: "198.18.161.99", node: "node-b", ready: false }] }));
    rmSync(join(manifests, "old.yaml"));
    await eventually(async () => (await hubView()).services.some((service) => service.name === "late"), 20_000, "the hub to take the changes");
    let rounds = 0;
    while (Date.now() - cutAt < 30_000) {
      expect(await digIn(namespaces["node-a"], "web.demo.svc.cluster.local")).toBe("198.19.0.20");
      expect(await curlIn(namespaces["node-a"], "http://web.demo.svc.cluster.local/")).toBe("hello from node-b\n");
      expect(await curlIn(namespaces["node-a"], "http://198.19.0.20/")).toBe("hello from node-b\n");
      // The agents still hold the catalog as it was before the cut.
      expect((await agentView("node-a")).services.map((service) => service.name).sort()).toEqual(["old", "web"]);
      rounds++;
      await new Promise((resolve) => setTimeout(resolve, 3_000));
    }
    expect(rounds).toBeGreaterThan(3);
    const tunnel = (await statusIn(namespaces["node-a"], 4222, ["--node", "node-a"])) as unknown as { status: { actors: { name: string; detail?: { paths?: Record<string, string> } }[] } };
    expect(tunnel.status.actors.find((actor) => actor.name === "tunnel")?.detail?.paths?.["node-b"]).toBe("relayed");

    await uplinkUp(true);
    const hub = catalogLines(await hubView());
    for (const node of Object.keys(nodeAddresses)) {
      await eventually(async () => JSON.stringify(catalogLines(await agentView(node))) === JSON.stringify(hub), 90_000, `${node}'s catalog to equal the hub's after the heal`).catch(async (error: Error) => {
        throw new Error(`${error.message}\nhub: ${hub.join(" | ")}\n${node}: ${catalogLines(await agentView(node)).join(" | ")}\n${logTail(node)}`);
      });
      expect((await agentView(node)).status.catalogObjects).toBe((await hubView()).status.catalogObjects);
    }
    expect(await eventually(() => curlIn(namespaces["node-a"], "http://late.demo.svc.cluster.local/").then((body) => (body === "hello from node-b\n" ? body : undefined)), 30_000, "the new service to answer")).toBe("hello from node-b\n");
    await eventually(async () => (await digIn(namespaces["node-a"], "old.demo.svc.cluster.local")) === "", 30_000, "the deleted service to stop resolving");
  });

  it("moves node-a to another server of the site when its server is killed; traffic and changes keep flowing", { timeout: 180_000 }, async () => {
    // The upstream link's remote is the URL the agent dialled: its port says which site server.
    const upstreamOf = async (node: string) => {
      const remote = (await agentView(node)).status.links.find((link) => link.direction === "upstream" && link.up)?.remote;
      const port = Number(remote?.split(":").pop());
      return servers.find((_server, index) => serverPorts(index).leaf === port);
    };
    const attached = await eventually(() => upstreamOf("node-a"), 15_000, "node-a's upstream");
    expect(servers).toContain(attached);
    await processes[attached!].kill();
    const killedAt = Date.now();
    const moved = await eventually(async () => {
      const now = await upstreamOf("node-a");
      return now && now !== attached ? now : undefined;
    }, 30_000, "node-a to attach to another site server");
    expect(servers).toContain(moved);
    console.log(`node-a moved from ${attached} to ${moved} ${Date.now() - killedAt} ms after the kill`);
    expect(await eventually(() => curlIn(namespaces["node-a"], "http://web.demo.svc.cluster.local/").then((body) => (body === "hello from node-b\n" ? body : undefined)), 30_000, "web to answer again")).toBe("hello from node-b\n");
    writeManifest(manifests, "after.yaml", sampleService({ name: "after", clusterIP: "198.19.0.23", endpoints: [{ ip: nodeAddresses["node-b"], node: "node-b" }] }));
    await eventually(async () => (await agentView("node-a")).services.some((service) => service.name === "after"), 60_000, "a change made after the kill to reach node-a").catch((error: Error) => {
      throw new Error(`${error.message}\n${logTail("node-a")}`);
    });
    expect(await digIn(namespaces["node-a"], "after.demo.svc.cluster.local")).toBe("198.19.0.23");
  });
});
