/**
 * Restricted egress, as factories and shops run it. A factory node whose only way out is the site's
 * forward proxy (tinyproxy, with a user and password, CONNECT only to 443, as squid's SSL_ports), and
 * a shop node behind a firewall that passes only TCP 443. The hub takes leaf connections on 443 and
 * is known by its name, hub-1.example.net, which its certificate holds.
 *
 *   node-f ── (198.18.41.0/24, no default route) ── proxy ──┐
 *                                                            ├── "internet" 198.18.40.0/24 ── hub-1.example.net:443
 *   node-b ── (198.18.42.0/24) ── firewall (443 only, NAT) ──┘
 *
 * Before: nats-server 2.9.10 dials leaf remotes itself and has no proxy support, so node-f never
 * attached; with HTTPS_PROXY set, as a user tries first, nothing said why. Now HTTPS_PROXY is named in
 * its status as not followed, and with --hub-proxy node-f attaches through the proxy (verifying the
 * hub by its name): the catalog arrives, its DNS answers, and a stream to node-b is relayed over the
 * leaf link. node-b, through the 443-only firewall, just works with the hub on 443.
 *
 * The hub's and the nodes' commands and the proxy's configuration are docs/restricted-egress.md's, word for
 * word (only --data, --keys and --manifests point into the test's directories, and the lab's listen addresses are added).
 *
 * Root and network namespaces: `flock /tmp/leafmesh-lab.lock npx vitest run test/hub-proxy-lab.test.ts`.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab } from "../lab/netns.ts";
import { removeNamespaceResolver } from "../lab/netns-resolver.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { hashedTransfer, startHashedTargets, type HashedTargets } from "./support/hashed-transfer.ts";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { launch, nodeBinary, statusInNamespace, stopAllProcesses, tempDir, type LeafmeshProcess } from "./support/processes.ts";

const prefix = "lmhx-";
let lab: Lab;
let keys: string;
let targets: HashedTargets;
const namespaces = { f: "", b: "", proxy: "", hub: "", firewall: "" };
let nodeB: LeafmeshProcess;

interface View {
  status: { links: { direction: string; up: boolean; url?: string }[]; upstreamProblem?: string; catalogObjects: number; hubProxy?: { proxy: string; routes: { hub: string; via: string; open: number; problem?: { text: string } }[] } };
}
const statusOf = (side: "f" | "b") => statusInNamespace<View>(namespaces[side], { port: 4222, keys, as: { node: `node-${side}` } });
const attached = (view: View) => view.status.links.some((link) => link.direction === "upstream" && link.up);

/** `ip netns exec` binds /etc/netns/<namespace>/hosts over /etc/hosts: the names each network knows. */
function namespaceHosts(namespace: string, names: Record<string, string>): void {
  mkdirSync(join("/etc/netns", namespace), { recursive: true });
  writeFileSync(join("/etc/netns", namespace, "hosts"), ["127.0.0.1 localhost", ...Object.entries(names).map(([name, address]) => `${address} ${name}`), ""].join("\n"));
}

/** The block of docs/restricted-egress.md that starts with `firstLine`. */
function docBlock(firstLine: string): string {
  const doc = readFileSync(resolve(import.meta.dirname, "../docs/restricted-egress.md"), "utf8");
  for (const match of doc.matchAll(/```[a-z]*\n([\s\S]*?)```/g)) if (match[1].startsWith(firstLine)) return match[1];
  throw new Error(`docs/restricted-egress.md has no block that starts with '${firstLine}'`);
}

/** A documented `leafmesh …` command's arguments, with `values` given to the flags named, without the flags in `drop`. */
function documentedArgs(firstLine: string, values: Record<string, string>, drop: string[] = []): string[] {
  const words = docBlock(firstLine).trim().split(/\s+/).slice(1);
  const args: string[] = [];
  for (let index = 0; index < words.length; index += words[index].startsWith("--") ? 2 : 1) {
    if (drop.includes(words[index])) continue;
    args.push(words[index], ...(words[index].startsWith("--") ? [values[words[index]] ?? words[index + 1]] : []));
  }
  return args;
}

const agentArgs = (side: "f" | "b", address: string, extra: string[], drop: string[] = []) => [
  ...documentedArgs(`leafmesh agent --node node-${side}`, { "--data": tempDir(), "--keys": keys }, drop),
  "--nats-listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off", "--mdns", "off",
  "--dns", "127.0.0.1:5353", "--tunnel-listen", `/ip4/${address}/tcp/4101`, "--tunnel-tls", `${address}:4102`, ...extra,
];

beforeAll(async () => {
  lab = await createLab({ prefix });
  for (const name of Object.keys(namespaces) as (keyof typeof namespaces)[]) namespaces[name] = await lab.namespace(name);
  const { f, b, proxy, hub, firewall } = namespaces;
  const internet = await lab.bridge("net");
  await lab.link({ namespace: hub, address: "198.18.40.2/24", bridge: internet });
  await lab.link({ namespace: proxy, address: "198.18.40.3/24", bridge: internet });
  await lab.link({ namespace: firewall, address: "198.18.40.4/24", bridge: internet });
  await lab.veth({ a: f, b: proxy, nameA: "eth0", nameB: "lan", addressA: "198.18.41.2/24", addressB: "198.18.41.1/24" });
  await lab.veth({ a: b, b: firewall, nameA: "eth0", nameB: "lan", addressA: "198.18.42.2/24", addressB: "198.18.42.1/24" });
  // node-f: no default route, and the proxy host forwards nothing (a new namespace's ip_forward is 0).
  await lab.route(b, "default", { via: "198.18.42.1" });
  await lab.exec(firewall, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  for (const rule of [
    ["-P", "FORWARD", "DROP"],
    ["-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
    ["-A", "FORWARD", "-i", "lan", "-p", "tcp", "--dport", "443", "-j", "ACCEPT"],
  ]) await lab.exec(firewall, ["iptables", ...rule]);
  await lab.exec(firewall, ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE"]);
  namespaceHosts(proxy, { "hub-1.example.net": "198.18.40.2" });
  namespaceHosts(f, { "proxy.factory.lan": "198.18.41.1", "hub-1.example.net": "198.18.40.2" });
  namespaceHosts(b, { "hub-1.example.net": "198.18.40.2" });
  // The world is as said: node-f reaches nothing but the proxy, node-b the hub on 443 only.
  expect((await lab.run(f, ["ping", "-c1", "-W1", "198.18.40.2"])).code).not.toBe(0);
  expect((await lab.run(b, ["ping", "-c1", "-W1", "198.18.40.2"])).code).not.toBe(0);

  const proxyConfig = join(tempDir(), "tinyproxy.conf");
  writeFileSync(proxyConfig, docBlock("Port 3128"));
  lab.spawn(proxy, ["tinyproxy", "-d", "-c", proxyConfig]);

  keys = join(tempDir(), "keys");
  await initKeys({ dir: keys, hubHosts: ["hub-1.example.net", "localhost", "127.0.0.1"] });
  for (const node of ["node-f", "node-b"]) await issueNode({ dir: keys, node });
  const manifests = join(tempDir(), "manifests");
  writeManifest(manifests, "web.yaml", sampleService({ namespace: "shop", name: "web", clusterIP: "10.96.7.7", endpoints: [{ ip: "198.18.42.2", node: "node-b" }] }));
  launch("hub-1", [
    ...documentedArgs("leafmesh hub", { "--data": tempDir(), "--keys": keys, "--manifests": manifests }),
    "--listen", "0.0.0.0:4222", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "off",
  ], "", "", hub);
  targets = startHashedTargets(b, nodeBinary);
  nodeB = launch("node-b", agentArgs("b", "198.18.42.2", []), "", "", b);
  await targets.ready;
}, 120_000);

afterAll(async () => {
  targets?.process.kill("SIGKILL");
  await stopAllProcesses();
  await lab?.teardown();
  for (const side of ["f", "b", "proxy"] as const) if (namespaces[side]) removeNamespaceResolver(namespaces[side]);
}, 60_000);

describe("a node whose only way out is the site's HTTP proxy", () => {
  it("with HTTPS_PROXY only, as a user tries first: not attached, and its status says the proxy is not followed and what to give", { timeout: 60_000 }, async () => {
    const first = launch("node-f", agentArgs("f", "198.18.41.2", [], ["--hub-proxy"]), "", "", namespaces.f, { HTTPS_PROXY: "http://leafmesh:s3cret@proxy.factory.lan:3128" });
    try {
      // Before: its status said "not connected to any hub" and nothing more.
      const view = await eventually(async () => ((await statusOf("f")).status.upstreamProblem ? statusOf("f") : undefined), 30_000, "node-f's status to say why it is not attached");
      expect(attached(view)).toBe(false);
      expect(view.status.upstreamProblem).toBe(
        "HTTPS_PROXY=http://leafmesh:***@proxy.factory.lan:3128 is set, but the leaf link to the hubs does not use it (nats-server dials them itself): if this node reaches its hubs only through that proxy, give --hub-proxy http://leafmesh:***@proxy.factory.lan:3128 (docs/restricted-egress.md)",
      );
    } finally {
      await first.stop();
    }
  });

  it("with --hub-proxy: attached through the proxy; the catalog, DNS and a relayed stream to node-b work", { timeout: 150_000 }, async () => {
    const nodeF = launch("node-f", agentArgs("f", "198.18.41.2", ["--socks", "127.0.0.1:1080"]), "", "", namespaces.f);
    const view = await eventually(async () => {
      const now = await statusOf("f");
      return attached(now) && now.status.catalogObjects > 0 ? now : undefined;
    }, 60_000, "node-f attached, with the catalog").catch((error: Error) => {
      throw new Error(`${error.message}\n${nodeF.output().slice(-3000)}`, { cause: error });
    });
    expect(view.status.hubProxy).toMatchObject({ proxy: "http://leafmesh:***@proxy.factory.lan:3128", routes: [{ hub: "tls://hub-1.example.net:443", open: 1 }] });
    expect(view.status.hubProxy!.routes[0].problem).toBeUndefined();
    expect(nodeF.output()).toContain("the leaf reaches tls://hub-1.example.net:443 through the proxy http://leafmesh:***@proxy.factory.lan:3128");
    expect(nodeF.output()).not.toContain("s3cret");

    const answer = await eventually(async () => {
      const dig = await lab.run(namespaces.f, ["dig", "+short", "+time=2", "+tries=1", "@127.0.0.1", "-p", "5353", "web.shop.svc.cluster.local"]);
      return dig.stdout.trim() === "10.96.7.7" ? dig.stdout.trim() : undefined;
    }, 20_000, "node-f's DNS to answer from the catalog");
    expect(answer).toBe("10.96.7.7");

    await eventually(async () => attached(await statusOf("b")), 30_000, "node-b attached through the 443-only firewall").catch((error: Error) => {
      throw new Error(`${error.message}\n${nodeB.output().slice(-3000)}`, { cause: error });
    });
    const bytes = 256 * 1024;
    const upload = await eventually(async () => {
      const result = await hashedTransfer(namespaces.f, { nodeBinary, socksPort: 1080, node: "node-b", mode: "upload", bytes, timeoutMs: 20_000 });
      return result.result === "end" ? result : undefined;
    }, 60_000, "a stream from node-f to node-b");
    expect(upload.reply, "the sink's hash and count").toBe(`${upload.sha256} ${bytes}`);
    const paths = await statusInNamespace<{ status: { actors: { name: string; detail?: { paths?: Record<string, string> } }[] } }>(namespaces.f, { port: 4222, keys, as: { node: "node-f" } });
    expect(paths.status.actors.find((actor) => actor.name === "tunnel")?.detail?.paths?.["node-b"], "over the leaf link, through the proxy").toBe("relayed");
  });
});
