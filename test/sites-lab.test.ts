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
 *    Meanwhile the per-service partition policy (issue 18 item 5, docs/partition.md):
 *    `pay` (fail-closed, its backend on node-b, in the site) keeps answering and
 *    serving; `ledger` (fail-closed, its backend in the cloud) answers SERVFAIL and
 *    its connections are reset; `telemetry` (serve-last-known, on node-a) serves.
 * 2. node-a is cut from everything (iptables in its namespace): pay answers SERVFAIL
 *    and is reset, counted and logged with the reason; telemetry and web still
 *    resolve from the last known catalog and telemetry serves; after the restore
 *    all three serve again.
 * 3. The site server node-a's agent is attached to is killed: the agent moves to
 *    another server of the site within seconds, traffic keeps flowing, and a
 *    change made at the hub afterwards still arrives.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, inNamespace, runCommand, type Lab } from "../lab/netns.ts";
import { namespaceResolver } from "../lab/netns-resolver.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
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
/** The services at the start: web and old (serve-last-known, on node-b), and the partition policy's three. */
const servicesAtStart = ["ledger", "old", "pay", "telemetry", "web"];
const failClosed = { "leafmesh.io/partition": "fail-closed" };
const payIP = "198.19.0.24";
const ledgerIP = "198.19.0.25";
const telemetryIP = "198.19.0.26";
/** Each site server's ports in the site namespace: client, monitor, leaf, cluster. */
const serverPorts = (index: number) => ({ client: 4222 + index, monitor: 8222 + index, leaf: 7422 + index, cluster: 6222 + index });

type View = { status: { links: { direction: string; remote: string; up: boolean }[]; catalogObjects: number; actors: { name: string; detail?: Record<string, unknown> }[] }; services: { namespace: string; name: string; clusterIPs: string[]; endpoints: { address: string }[] }[] };

let lab: Lab;
let keys = "";
let manifests = "";
const backgrounds: ChildProcess[] = [];
const resolverRemovals: (() => void)[] = [];
const namespaces: Record<string, string> = {};
const processes: Record<string, LeafmeshProcess> = {};

/** `leafmesh status --json` inside a namespace: the hub (no `as`), a site server (site and node) or an agent (node). */
function statusIn(namespace: string, port: number, as: { node?: string; site?: string } = {}): Promise<View> {
  return statusInNamespace<View>(namespace, { port, keys, as });
}
const hubView = () => statusIn(namespaces.hub, 4222);
const agentView = (node: string) => statusIn(namespaces[node], 4222, { node });

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

/** curl that says how it failed: curl's exit code and its own words (-sS), e.g. "(56) Recv failure: Connection reset by peer". */
async function curlOutcome(namespace: string, url: string): Promise<string> {
  const result = await runCommand(inNamespace(namespace, ["curl", "-sS", "--max-time", "5", url]), { timeoutMs: 10_000 });
  return result.code === 0 ? result.stdout : `exit ${result.code}: ${result.stderr.trim()}`;
}

/**
 * How a connection to a refused service ends, in curl's verbose words. On loopback the proxy's RST can
 * come before curl sees its connect complete, and curl 7.88 then says only "Couldn't connect to
 * server" (exit 7) where a later RST says exit 56: its -v line keeps the kernel's word, "Connection
 * reset by peer" (an RST after the handshake), which a closed port ("Connection refused") never gives.
 */
async function refusal(namespace: string, url: string): Promise<string> {
  const result = await runCommand(inNamespace(namespace, ["curl", "-sS", "-v", "--max-time", "5", url]), { timeoutMs: 10_000 });
  if (result.code === 0) return `answered: ${result.stdout}`;
  return result.stderr.split("\n").find((line) => /reset by peer|refused|timed out/i.test(line))?.replace(/^\* /, "").trim() ?? `exit ${result.code}: ${result.stderr.trim()}`;
}

/** A lookup at node-a's DNS with its status: what a client there sees. */
async function lookup(namespace: string, name: string): Promise<{ status: string; answers: string[] }> {
  const result = await runCommand(inNamespace(namespace, ["dig", "+time=2", "+tries=1", `@${nodeAddresses["node-a"]}`, name, "A"]), { timeoutMs: 10_000 });
  const status = /status: (\w+)/.exec(result.stdout)?.[1] ?? `dig exit ${result.code}`;
  return { status, answers: [...result.stdout.matchAll(/^[^;\s]\S*\s+\d+\s+IN\s+A\s+(\S+)$/gm)].map((match) => match[1]) };
}

/** Says what a check saw, for docs/partition.md's transcript: `phase  command  → outcome`. */
function shown<T>(phase: string, command: string, outcome: T): T {
  console.log(`${phase.padEnd(10)} ${command.padEnd(58)} → ${typeof outcome === "string" ? outcome.trim() : JSON.stringify(outcome)}`);
  return outcome;
}

/** node-a's traffic counters (refusals by reason). */
async function trafficCounters(node: string): Promise<Record<string, number>> {
  return ((await agentView(node)).status.actors.find((actor) => actor.name === "traffic")?.detail?.counters ?? {}) as Record<string, number>;
}

/**
 * Cuts node-a from everything on the LAN (its site's servers, node-b), in its own namespace: TCP
 * either way is answered with a reset, so both ends of its leaf link hear the cut at their next
 * write (not after the ping timeout: a site server that still held the old link was seen to keep
 * node-a out for more than 30 s after the restore); everything else is dropped. Its own address
 * stays reachable from inside (its DNS), and cluster IPs, DNATed to the proxy on loopback, are not
 * matched. Inserted in this order, they end up in the reverse one (the resets' own RSTs go out first).
 */
const nodeCutRules = [
  ["INPUT", "-i", "eth0", "-j", "DROP"],
  ["INPUT", "-i", "eth0", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
  ["OUTPUT", "-d", "198.18.161.0/24", "-j", "DROP"],
  ["OUTPUT", "-d", "198.18.161.0/24", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
  ["OUTPUT", "-d", "198.18.161.0/24", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "ACCEPT"],
  ["OUTPUT", "-d", nodeAddresses["node-a"], "-j", "ACCEPT"],
];
async function nodeCut(node: string, cut: boolean): Promise<void> {
  for (const rule of cut ? nodeCutRules : [...nodeCutRules].reverse()) {
    const result = await runCommand(inNamespace(namespaces[node], ["iptables", "-w", cut ? "-I" : "-D", ...rule]));
    if (result.code !== 0) throw new Error(`iptables ${rule.join(" ")}: ${result.stderr}`);
  }
}

/** Whether a server of the site still lists a leaf link from the node. */
async function siteHoldsLeafOf(node: string): Promise<boolean> {
  for (const [index, server] of servers.entries()) {
    const view = await statusIn(namespaces.site, serverPorts(index).client, { site: "site-b", node: server }).catch(() => undefined);
    if (view?.status.links.some((link) => link.direction === "downstream" && link.remote === node && link.up)) return true;
  }
  return false;
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
      resolverRemovals.push(namespaceResolver(namespaces[node], address));
    }
    // Backends: on node-b (web, old, pay), on node-a (telemetry), and in the cloud (ledger, an address outside the mesh).
    for (const [where, words] of [["node-b", "node-b"], ["node-a", "node-a"], ["hub", "the cloud"]]) {
      const script = `require("node:http").createServer((q, s) => s.end("hello from ${words}\\n")).listen(8080, "0.0.0.0")`;
      const argv = inNamespace(namespaces[where], [nodeBinary, "-e", script]);
      backgrounds.push(spawn(argv[0], argv.slice(1), { stdio: "ignore" }));
    }
    // The site routes its LAN to the cloud (ledger's backend): forwarding on, the hub's way back.
    await lab.exec(namespaces.site, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    await lab.route(namespaces.hub, "198.18.161.0/24", { via: uplinkAddress });

    keys = join(tempDir(), "keys");
    await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", hubAddress] });
    for (const node of Object.keys(nodeAddresses)) await issueNode({ dir: keys, node });
    await issueSite({ dir: keys, site: "site-b", servers, members: Object.keys(nodeAddresses), hosts: ["localhost", "127.0.0.1", siteLanAddress] });

    manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.20", endpoints: [{ ip: nodeAddresses["node-b"], node: "node-b" }] }));
    writeManifest(manifests, "old.yaml", sampleService({ name: "old", clusterIP: "198.19.0.21", endpoints: [{ ip: nodeAddresses["node-b"], node: "node-b" }] }));
    writeManifest(manifests, "pay.yaml", sampleService({ name: "pay", clusterIP: payIP, annotations: failClosed, endpoints: [{ ip: nodeAddresses["node-b"], node: "node-b" }] }));
    writeManifest(manifests, "ledger.yaml", sampleService({ name: "ledger", clusterIP: ledgerIP, annotations: failClosed, endpoints: [{ ip: hubAddress }] }));
    writeManifest(manifests, "telemetry.yaml", sampleService({ name: "telemetry", clusterIP: telemetryIP, endpoints: [{ ip: nodeAddresses["node-a"], node: "node-a" }] }));
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
    await eventually(async () => (await hubView()).services.length === servicesAtStart.length, 45_000, "the hub to publish");
    for (const [index, server] of servers.entries()) {
      await eventually(async () => (await statusIn(namespaces.site, serverPorts(index).client, { site: "site-b", node: server })).services.length === servicesAtStart.length, 90_000, `site server ${server}`).catch((error: Error) => {
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
      await eventually(async () => (await agentView(node)).services.length === servicesAtStart.length, 90_000, `${node}'s catalog through the site`).catch((error: Error) => {
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
    for (const remove of resolverRemovals) remove();
    await lab?.teardown();
  }, 60_000);

  it("keeps resolving, proxying and relaying through a 30 s cloud cut, per service policy, then catches up with every change", { timeout: 180_000 }, async () => {
    const a = namespaces["node-a"];
    expect(await eventually(() => curlOutcome(a, "http://ledger.demo.svc.cluster.local/").then((body) => (body === "hello from the cloud\n" ? body : undefined)), 30_000, "ledger's backend in the cloud to answer")).toBe("hello from the cloud\n");
    await uplinkUp(false);
    const cutAt = Date.now();
    // The partition policy while the site is cut off, beside the checks below: node-a still reaches its site.
    const policy = (async () => {
      // The site hears its silent uplink cut at its leaf pings; node-a asks its site's mirror every 2 s.
      await eventually(async () => (await lookup(a, "ledger.demo.svc.cluster.local")).status === "SERVFAIL", 60_000, "ledger (its backend outside the site) to answer SERVFAIL while the site is cut off");
      console.log(`ledger refused ${Date.now() - cutAt} ms after the uplink went down`);
      await eventually(() => processes["node-a"].output().includes("the site is cut off from the cloud: fail-closed services with a backend outside the site are refused"), 5_000, "node-a to log its site's cut");
      expect(processes["node-a"].output()).not.toContain("hub link down");
      // pay is fail-closed too, but its backend runs in the site: the site vouches for it.
      const phase = "site cut";
      shown(phase, "dig ledger.demo.svc.cluster.local", await lookup(a, "ledger.demo.svc.cluster.local"));
      expect(shown(phase, "dig pay.demo.svc.cluster.local", await lookup(a, "pay.demo.svc.cluster.local"))).toEqual({ status: "NOERROR", answers: [payIP] });
      expect(shown(phase, "curl http://pay.demo.svc.cluster.local/", await curlOutcome(a, "http://pay.demo.svc.cluster.local/"))).toBe("hello from node-b\n");
      expect(shown(phase, "dig telemetry.demo.svc.cluster.local", await lookup(a, "telemetry.demo.svc.cluster.local"))).toEqual({ status: "NOERROR", answers: [telemetryIP] });
      expect(shown(phase, "curl http://telemetry.demo.svc.cluster.local/", await curlOutcome(a, "http://telemetry.demo.svc.cluster.local/"))).toBe("hello from node-a\n");
      expect(shown(phase, `curl -v http://${ledgerIP}/`, await refusal(a, `http://${ledgerIP}/`))).toMatch(/Connection reset by peer/);
      const counters = shown(phase, "leafmesh status --json: traffic counters", await trafficCounters("node-a"));
      expect(counters["tcp refused: fail-closed while the site is cut off from the cloud: a backend outside the site"]).toBeGreaterThanOrEqual(1);
      await eventually(() => processes["node-a"].output().includes("refusing new connections to demo/ledger:http/TCP: fail-closed while the site is cut off from the cloud: a backend outside the site"), 5_000, "node-a to log ledger's refusal");
    })();
    policy.catch(() => undefined); // awaited after the loop below; a failure must not go unhandled meanwhile
    try {
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
        expect((await agentView("node-a")).services.map((service) => service.name).sort()).toEqual(servicesAtStart);
        rounds++;
        await new Promise((resolve) => setTimeout(resolve, 3_000));
      }
      expect(rounds).toBeGreaterThan(3);
      await policy;
      const tunnel = (await statusIn(namespaces["node-a"], 4222, { node: "node-a" })) as unknown as { status: { actors: { name: string; detail?: { paths?: Record<string, string> } }[] } };
      expect(tunnel.status.actors.find((actor) => actor.name === "tunnel")?.detail?.paths?.["node-b"]).toBe("relayed");
    } finally {
      // Healed also when a check failed: the next tests need the cloud.
      await uplinkUp(true);
    }
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

  it("with node-a cut from its site: fail-closed pay is refused (SERVFAIL, reset, counted, logged), serve-last-known serves from the last known catalog; all serve after", { timeout: 120_000 }, async () => {
    const a = namespaces["node-a"];
    // From a healed mesh: node-a sees its site reach the cloud again.
    await eventually(async () => (await lookup(a, "ledger.demo.svc.cluster.local")).status === "NOERROR", 30_000, "ledger to answer again after the uplink's heal");
    const logFrom = processes["node-a"].output().length;
    await nodeCut("node-a", true);
    const cutAt = Date.now();
    try {
      await eventually(async () => (await lookup(a, "pay.demo.svc.cluster.local")).status === "SERVFAIL", 45_000, "pay to answer SERVFAIL with node-a cut from its site").catch((error: Error) => {
        throw new Error(`${error.message}\n${logTail("node-a")}`);
      });
      console.log(`pay refused ${Date.now() - cutAt} ms after node-a's cut`);
      await eventually(() => processes["node-a"].output().slice(logFrom).includes("hub link down: serving the catalog from the node's mirror"), 5_000, "node-a to log its link down");
      const phase = "node cut";
      shown(phase, "dig pay.demo.svc.cluster.local", await lookup(a, "pay.demo.svc.cluster.local"));
      expect(shown(phase, "dig telemetry.demo.svc.cluster.local", await lookup(a, "telemetry.demo.svc.cluster.local"))).toEqual({ status: "NOERROR", answers: [telemetryIP] });
      expect(shown(phase, "dig web.demo.svc.cluster.local", await lookup(a, "web.demo.svc.cluster.local"))).toEqual({ status: "NOERROR", answers: ["198.19.0.20"] });
      expect(shown(phase, "curl http://telemetry.demo.svc.cluster.local/", await curlOutcome(a, "http://telemetry.demo.svc.cluster.local/"))).toBe("hello from node-a\n");
      expect(shown(phase, `curl -v http://${payIP}/`, await refusal(a, `http://${payIP}/`))).toMatch(/Connection reset by peer/);
      const counters = shown(phase, "leafmesh status --json: traffic counters", await trafficCounters("node-a"));
      expect(counters["tcp refused: fail-closed while the node cannot reach its upstream"]).toBeGreaterThanOrEqual(1);
      await eventually(() => processes["node-a"].output().slice(logFrom).includes("refusing new connections to demo/pay:http/TCP: fail-closed while the node cannot reach its upstream"), 5_000, "node-a to log pay's refusal");
      // Restored only once the site has let go of node-a's old leaf link (reset at the site's next write): a server that
      // still holds it takes node-a's new link for a loop, and nats-server then keeps the leaf away for 30 s.
      await eventually(async () => !(await siteHoldsLeafOf("node-a")), 30_000, "the site servers to drop node-a's old leaf link");
    } finally {
      await nodeCut("node-a", false);
    }
    const restoredAt = Date.now();
    await eventually(async () => (await lookup(a, "pay.demo.svc.cluster.local")).status === "NOERROR", 45_000, "pay to answer again after the restore").catch((error: Error) => {
      throw new Error(`${error.message}\n${logTail("node-a")}\n${servers.map(logTail).join("\n")}`);
    });
    console.log(`pay served ${Date.now() - restoredAt} ms after the restore`);
    expect(await eventually(() => curlOutcome(a, "http://pay.demo.svc.cluster.local/").then((body) => (body === "hello from node-b\n" ? body : undefined)), 30_000, "pay to serve again")).toBe("hello from node-b\n");
    shown("restored", "dig pay.demo.svc.cluster.local", await lookup(a, "pay.demo.svc.cluster.local"));
    shown("restored", "curl http://pay.demo.svc.cluster.local/", "hello from node-b");
    expect(shown("restored", "curl http://ledger.demo.svc.cluster.local/", await curlOutcome(a, "http://ledger.demo.svc.cluster.local/"))).toBe("hello from the cloud\n");
    expect(shown("restored", "curl http://telemetry.demo.svc.cluster.local/", await curlOutcome(a, "http://telemetry.demo.svc.cluster.local/"))).toBe("hello from node-a\n");
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
