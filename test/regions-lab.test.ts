/**
 * Regions in network namespaces (issue 7), with security on: region A (one hub)
 * and region B (two hubs, where the catalog is published) joined by gateways over
 * one veth link whose bytes are counted. Two edge sites of region A, each a site
 * server with one agent, and a third agent attached to region B. Tunnels may only
 * relay.
 *
 * 1. A relayed transfer between the agents of the two sites of region A puts no
 *    more on the gateway link than the fabric's own chatter; the same transfer to
 *    the agent of region B does cross it (so the counter watches the right link).
 * 2. Region A's hub is killed: both sites move to region B within seconds,
 *    service traffic between them resumes, and a catalog change made in region B
 *    arrives.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, inNamespace, runCommand, type Lab } from "../lab/netns.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { issueSite } from "../trust/site-store.ts";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { launch, nodeBinary, statusInNamespace, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";

// This test's block: WAN 198.18.170.0/24, gateway link 198.18.171.0/30.
const wan = { ra: "198.18.170.1", rb: "198.18.170.2", s1: "198.18.170.11", s2: "198.18.170.12", n3: "198.18.170.13" };
const gw = { ra: "198.18.171.1", rb: "198.18.171.2" };
const size = 2 << 20;

type View = { status: { links: { direction: string; remote: string; up: boolean }[]; actors: { name: string; detail?: Record<string, unknown> }[] }; services: { name: string }[] };

let lab: Lab;
let keys = "";
let manifests = "";
const backgrounds: ChildProcess[] = [];
const ns: Record<string, string> = {};
const processes: Record<string, LeafmeshProcess> = {};

function statusIn(namespace: string, port: number, as: { node?: string; site?: string } = {}): Promise<View> {
  return statusInNamespace<View>(namespace, { port, keys, as });
}

/** Bytes of a whole transfer through node's proxy: curl of a cluster IP, the body's length. */
async function fetchSize(namespace: string, url: string): Promise<number> {
  const result = await runCommand(inNamespace(namespace, ["sh", "-c", `curl -s --max-time 30 ${url} | wc -c`]), { timeoutMs: 40_000 });
  return Number(result.stdout.trim());
}

async function gatewayBytes(): Promise<number> {
  const result = await runCommand(inNamespace(ns.ra, ["ip", "-s", "-j", "link", "show", "gw"]));
  const [link] = JSON.parse(result.stdout) as { stats64: { rx: { bytes: number }; tx: { bytes: number } } }[];
  return link.stats64.rx.bytes + link.stats64.tx.bytes;
}

function warnings(name: string): string {
  return `--- ${name} ---\n${processes[name]?.output().split("\n").filter((line) => /"level":(40|50)/.test(line)).slice(-10).join("\n")}`;
}

describe.sequential("two regions in namespaces: locality and failover", () => {
  beforeAll(async () => {
    lab = await createLab({ prefix: "lmrg-" });
    for (const name of ["ra", "rb", "s1", "s2", "n3"]) ns[name] = await lab.namespace(name);
    const bridge = await lab.bridge("wan");
    for (const name of ["ra", "rb", "s1", "s2", "n3"] as const) await lab.link({ namespace: ns[name], bridge, address: `${wan[name]}/24` });
    // Cluster IPs need a route for the kernel to reach the interception rules (as on a real node).
    for (const name of ["s1", "s2", "n3"]) await lab.route(ns[name], "198.19.0.0/16", { device: "eth0" });
    await lab.veth({ a: ns.ra, b: ns.rb, nameA: "gw", nameB: "gw", addressA: `${gw.ra}/30`, addressB: `${gw.rb}/30` });
    // 2 MiB from a backend on node-2 (site 2) and on node-3 (region B).
    const script = `const body = Buffer.alloc(${size}, 120); require("node:http").createServer((q, s) => s.end(body)).listen(8080, "0.0.0.0")`;
    for (const name of ["s2", "n3"]) {
      const argv = inNamespace(ns[name], [nodeBinary, "-e", script]);
      backgrounds.push(spawn(argv[0], argv.slice(1), { stdio: "ignore" }));
    }

    keys = join(tempDir(), "keys");
    await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", wan.ra, wan.rb, gw.ra, gw.rb] });
    for (const node of ["node-1", "node-2", "node-3"]) await issueNode({ dir: keys, node });
    await issueSite({ dir: keys, site: "site-1", members: ["node-1"], hosts: ["localhost", "127.0.0.1"] });
    await issueSite({ dir: keys, site: "site-2", members: ["node-2"], hosts: ["localhost", "127.0.0.1"] });

    manifests = tempDir();
    writeManifest(manifests, "two.yaml", sampleService({ name: "two", clusterIP: "198.19.0.30", endpoints: [{ ip: wan.s2, node: "node-2" }] }));
    writeManifest(manifests, "three.yaml", sampleService({ name: "three", clusterIP: "198.19.0.31", endpoints: [{ ip: wan.n3, node: "node-3" }] }));
    const gateways = `a=nats://${gw.ra}:7222;b=nats://${gw.rb}:7222,nats://${gw.rb}:7223`;
    const hub = (name: string, namespace: string, index: number, region: "a" | "b", address: string, routes: string[]) =>
      launch(name, [
        "hub", "--name", name, "--data", tempDir(), "--keys", keys, "--metrics-listen", "off",
        "--listen", `127.0.0.1:${4222 + index}`, "--monitor-listen", `127.0.0.1:${8222 + index}`, "--leaf-listen", `${address}:${7422 + index}`,
        "--routes", routes.join(","), "--cluster-listen", `127.0.0.1:${6222 + index}`,
        "--gateway-name", region, "--gateway-listen", `${region === "a" ? gw.ra : gw.rb}:${7222 + index}`, "--gateways", gateways,
        // The catalog lives in region B (two replicas); region A holds one of three metadata servers, so losing it keeps a quorum.
        ...(region === "b" ? ["--manifests", manifests, "--replicas", "2"] : []),
      ], "", "", namespace);
    processes["hub-a1"] = hub("hub-a1", ns.ra, 0, "a", wan.ra, ["nats-route://127.0.0.1:6222"]);
    const bRoutes = ["nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6223"];
    processes["hub-b1"] = hub("hub-b1", ns.rb, 0, "b", wan.rb, bRoutes);
    processes["hub-b2"] = hub("hub-b2", ns.rb, 1, "b", wan.rb, bRoutes);
    await eventually(async () => (await statusIn(ns.rb, 4222)).services.length === 2, 90_000, "region B to publish").catch((error: Error) => {
      throw new Error(`${error.message}\n${warnings("hub-b1")}\n${warnings("hub-b2")}\n${warnings("hub-a1")}`);
    });

    // Each site: its server and its one agent in one namespace; region A first, region B after.
    const upstreams = `tls://${wan.ra}:7422,tls://${wan.rb}:7422,tls://${wan.rb}:7423`;
    for (const [index, site] of ["site-1", "site-2"].entries()) {
      const namespace = index === 0 ? ns.s1 : ns.s2;
      const node = `node-${index + 1}`;
      processes[site] = launch(site, [
        "site", "--name", site, "--data", tempDir(), "--keys", keys, "--upstream", upstreams, "--upstream-order", "given",
        "--listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--leaf-listen", "127.0.0.1:7422",
      ], "", "", namespace);
      processes[node] = launch(node, [
        "agent", "--node", node, "--hub", "tls://127.0.0.1:7422", "--upstream-domain", site, "--data", tempDir(), "--keys", keys,
        "--nats-listen", "127.0.0.1:4223", "--monitor-listen", "127.0.0.1:8223", "--metrics-listen", "off", "--dns", "off", "--intercept", "nftables",
        "--tunnel-ways", "relay", "--tunnel-listen", "/ip4/0.0.0.0/tcp/4101", "--mdns", "off",
      ], "", "", namespace);
    }
    processes["node-3"] = launch("node-3", [
      "agent", "--node", "node-3", "--hub", `tls://${wan.rb}:7422,tls://${wan.rb}:7423`, "--upstream-order", "given", "--data", tempDir(), "--keys", keys,
      "--nats-listen", "127.0.0.1:4223", "--monitor-listen", "127.0.0.1:8223", "--metrics-listen", "off", "--dns", "off", "--intercept", "off",
      "--tunnel-ways", "relay", "--tunnel-listen", "/ip4/0.0.0.0/tcp/4101", "--mdns", "off",
    ], "", "", ns.n3);
    for (const [node, namespace] of [["node-1", ns.s1], ["node-2", ns.s2], ["node-3", ns.n3]] as const) {
      await eventually(async () => (await statusIn(namespace, 4223, { node })).services.length === 2, 90_000, `${node}'s catalog`).catch(async (error: Error) => {
        const site = `site-${node.slice(-1)}`;
        const agentView = await statusIn(namespace, 4223, { node }).catch((cause: Error) => cause.message);
        const siteView = node === "node-3" ? "" : await statusIn(namespace, 4222, { site, node: site }).catch((cause: Error) => cause.message);
        throw new Error(`${error.message}\nagent: ${JSON.stringify(agentView).slice(0, 1500)}\nsite: ${JSON.stringify(siteView).slice(0, 1500)}\n${warnings(node)}\n${warnings(site)}`);
      });
    }
    for (const url of ["http://198.19.0.30/", "http://198.19.0.31/"]) {
      await eventually(async () => (await fetchSize(ns.s1, url)) === size, 90_000, `node-1 to fetch ${url}`).catch(async (error: Error) => {
        const tunnel = (await statusIn(ns.s1, 4223, { node: "node-1" }).catch(() => undefined))?.status.actors.find((actor) => actor.name === "tunnel")?.detail;
        const tunnelLog = processes["node-1"].output().split("\n").filter((line) => /"actor":"tunnel"|traffic/.test(line)).slice(-15).join("\n");
        const records = await runCommand(inNamespace(ns.rb, [nodeBinary, "test/support/kv-keys.ts", keys, "nats://127.0.0.1:4222", "mesh-nodes"]), { timeoutMs: 15_000 });
        throw new Error(`${error.message}\nmesh-nodes at hub-b1: ${records.stdout}${records.stderr}\ntunnel: ${JSON.stringify(tunnel)}\n${tunnelLog}\n${warnings("node-2")}\n${warnings("site-1")}`);
      });
    }
  }, 360_000);

  afterAll(async () => {
    await stopAllProcesses();
    for (const child of backgrounds) child.kill("SIGKILL");
    await lab?.teardown();
  }, 60_000);

  it("keeps a relayed transfer between two sites of region A off the gateway; one to region B crosses it", { timeout: 120_000 }, async () => {
    const measure = async (url: string) => {
      const before = await gatewayBytes();
      const started = Date.now();
      for (let round = 0; round < 3; round++) expect(await fetchSize(ns.s1, url)).toBe(size);
      return { bytes: (await gatewayBytes()) - before, ms: Date.now() - started };
    };
    const inRegion = await measure("http://198.19.0.30/");
    const idleBefore = await gatewayBytes();
    await new Promise((resolve) => setTimeout(resolve, Math.max(inRegion.ms, 1_000)));
    const idle = (await gatewayBytes()) - idleBefore;
    const crossRegion = await measure("http://198.19.0.31/");
    console.log(`gateway link: ${inRegion.bytes} bytes while 6 MiB moved site 1 → site 2 (${inRegion.ms} ms), ${idle} idle for as long, ${crossRegion.bytes} while 6 MiB moved site 1 → region B`);
    // 6 MiB between the two sites of region A: only the fabric's own chatter on the gateway.
    expect(inRegion.bytes).toBeLessThan(256 * 1024);
    // The control: the counter sees a transfer that really crosses.
    expect(crossRegion.bytes).toBeGreaterThan(3 * size);
  });

  it("moves both sites to region B when region A's hub dies; traffic between them resumes and region B's changes arrive", { timeout: 180_000 }, async () => {
    const upstreamOf = async (namespace: string, site: string) =>
      (await statusIn(namespace, 4222, { site, node: site })).status.links.find((link) => link.direction === "upstream" && link.up)?.remote;
    expect(await upstreamOf(ns.s1, "site-1")).toContain(wan.ra);
    await processes["hub-a1"].kill();
    const killedAt = Date.now();
    for (const [namespace, site] of [[ns.s1, "site-1"], [ns.s2, "site-2"]] as const) {
      await eventually(async () => (await upstreamOf(namespace, site))?.includes(wan.rb), 30_000, `${site} to attach to region B`).catch((error: Error) => {
        throw new Error(`${error.message}\n${warnings(site)}`);
      });
    }
    console.log(`both sites in region B ${Date.now() - killedAt} ms after region A's hub died`);
    await eventually(async () => (await fetchSize(ns.s1, "http://198.19.0.30/")) === size, 60_000, "node-1 to reach node-2 again, through region B").catch((error: Error) => {
      throw new Error(`${error.message}\n${warnings("node-1")}\n${warnings("node-2")}`);
    });
    writeManifest(manifests, "later.yaml", sampleService({ name: "later", clusterIP: "198.19.0.32", endpoints: [{ ip: wan.s2, node: "node-2" }] }));
    await eventually(async () => (await statusIn(ns.s1, 4223, { node: "node-1" })).services.some((service) => service.name === "later"), 60_000, "region B's change at node-1");
  });
});
