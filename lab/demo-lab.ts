/**
 * `leafmesh demo --lab` (root): the mesh in network namespaces behind NATs, so
 * cluster IPs (nftables), the cluster DNS and node-to-node paths are real. A
 * hub on a WAN; three edge sites behind a port-restricted, a full-cone and a
 * symmetric NAT, each with one node running a real agent; backends on two of
 * them. Prints the commands to try inside the namespaces, shows path changes
 * live, and tears everything down on Ctrl-C.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { buildNatLab, hubAddresses } from "./nat.ts";
import { inNamespace, runCommand } from "./netns.ts";
import { namespaceResolver, removeNamespaceResolver } from "./netns-resolver.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import type { CommandIO } from "../cli/command.ts";

const cliPath = resolve(import.meta.dirname, "../bin/leafmesh.js");

export async function runLabDemo(io: CommandIO, options: { logLevel: string }): Promise<number> {
  if (process.getuid?.() !== 0) throw new LeafmeshError("CONFIG_INVALID", "--lab builds network namespaces and NAT routers: run it as root (or run `leafmesh demo` without --lab)");
  const say = (line: string) => io.stdout.write(`${line}\n`);
  const base = mkdtempSync(join(tmpdir(), "leafmesh-lab-demo-"));
  // What a killed earlier run left: buildNatLab removes its namespaces, this its resolver files.
  for (const site of ["a", "b", "c"]) removeNamespaceResolver(`lmdm-${site}h1`);
  say(`leafmesh demo --lab: building the lab (namespaces lmdm-*, addresses 198.18.64.0/18) …`);
  const lab = await buildNatLab({
    prefix: "lmdm-",
    sites: [
      { name: "a", nat: "port-restricted" },
      { name: "b", nat: "full-cone" },
      { name: "c", nat: "symmetric" },
    ],
  });
  const children: ChildProcess[] = [];
  const resolverRemovals: (() => void)[] = [];
  const stop = async () => {
    // Resolver files first (they live outside the namespaces), then every process and namespace of the lab.
    for (const remove of resolverRemovals) remove();
    for (const child of children) child.kill("SIGKILL");
    try {
      await lab.teardown();
    } catch (error) {
      io.stderr.write(`leafmesh demo --lab: teardown failed (${(error as Error).message}); the next run removes what is left\n`);
    }
  };
  try {
    const nodes = lab.sites.map((site, index) => ({ node: `node-${"abc"[index]}`, nat: site.spec.nat, ...site.hosts[0] }));
    const keys = join(base, "keys");
    await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", ...hubAddresses] });
    for (const { node } of nodes) await issueNode({ dir: keys, node });

    const manifests = join(base, "manifests");
    mkdirSync(manifests);
    const documents = [
      ["web", "198.19.0.10", nodes[1]],
      ["api", "198.19.0.11", nodes[2]],
    ].flatMap(([name, clusterIP, host]) => {
      const target = host as (typeof nodes)[number];
      return [
        { apiVersion: "v1", kind: "Service", metadata: { name, namespace: "demo" }, spec: { clusterIP, ports: [{ name: "http", port: 80, targetPort: 8080 }] } },
        {
          apiVersion: "discovery.k8s.io/v1",
          kind: "EndpointSlice",
          metadata: { name: `${name}-1`, namespace: "demo", labels: { "kubernetes.io/service-name": name } },
          addressType: "IPv4",
          endpoints: [{ addresses: [target.address], nodeName: target.node, conditions: { ready: true } }],
          ports: [{ name: "http", port: 8080, protocol: "TCP" }],
        },
      ];
    });
    writeFileSync(join(manifests, "demo.yaml"), documents.map((document) => stringify(document)).join("---\n"));

    const start = (namespace: string, name: string, argv: string[]) => {
      const full = inNamespace(namespace, argv);
      const child = spawn(full[0], full.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
      const log = join(base, `${name}.log`);
      child.stderr!.on("data", (chunk: Buffer) => writeFileSync(log, chunk, { flag: "a" }));
      children.push(child);
    };
    for (const [index, name] of ["web", "api"].entries()) {
      const target = nodes[index + 1];
      const script = `require("node:http").createServer((q, s) => s.end("hello from ${name} on ${target.node}, behind a ${target.nat} NAT\\n")).listen(8080, "0.0.0.0")`;
      start(target.namespace, `backend-${name}`, [process.execPath, "-e", script]);
    }
    start(lab.hub.namespace, "hub-1", [
      process.execPath, cliPath, "hub", "--name", "hub-1", "--data", join(base, "hub-1"), "--listen", "0.0.0.0:4222", "--leaf-listen", "0.0.0.0:7422",
      "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "127.0.0.1:9464", "--manifests", manifests, "--keys", keys,
      "--observer", `${hubAddresses[0]},${hubAddresses[1]}:3478,3479`, "--log-level", options.logLevel,
    ]);
    await new Promise((resolveWait) => setTimeout(resolveWait, 2_000));
    for (const { node, namespace, address } of nodes) {
      resolverRemovals.push(namespaceResolver(namespace, address));
      start(namespace, node, [
        process.execPath, cliPath, "agent", "--node", node, "--hub", `nats://${hubAddresses[0]}:7422`, "--data", join(base, node),
        "--nats-listen", "127.0.0.1:4222", "--monitor-listen", "127.0.0.1:8222", "--metrics-listen", "127.0.0.1:9465",
        "--dns", `${address}:53`, "--upstream", "127.0.0.1:1", "--intercept", "nftables", "--keys", keys,
        "--tunnel-listen", "/ip4/0.0.0.0/tcp/4101", "--observer", `${hubAddresses[0]}:3478,3479`, "--mdns", "off", "--socks", "127.0.0.1:1080",
        "--log-level", options.logLevel,
      ]);
    }
    // Ready when node A answers web by name.
    const deadline = Date.now() + 90_000;
    for (;;) {
      const reply = await runCommand(inNamespace(nodes[0].namespace, ["curl", "-s", "--max-time", "5", "http://web.demo.svc.cluster.local/"]), { timeoutMs: 10_000 });
      if (reply.code === 0 && reply.stdout) break;
      if (Date.now() > deadline) throw new LeafmeshError("NATS_SERVER_FAILED", `the lab mesh did not come up; logs in ${base}`);
      await new Promise((resolveWait) => setTimeout(resolveWait, 1_000));
    }
    say("");
    say(`The lab is up (logs and keys in ${base}). Nodes: ${nodes.map((node) => `${node.node} (${node.nat} NAT, ${node.namespace})`).join(", ")}.`);
    say("Try, as root, in another terminal:");
    say(`  ip netns exec ${nodes[0].namespace} curl http://web.demo.svc.cluster.local/     # node-a → web on node-b, across two NATs`);
    say(`  ip netns exec ${nodes[0].namespace} curl http://198.19.0.11/                     # node-a → api on node-c (symmetric NAT) by cluster IP`);
    say(`  ip netns exec ${nodes[0].namespace} dig web.demo.svc.cluster.local +short        # the node's cluster DNS`);
    say(`  ip netns exec ${nodes[0].namespace} ${process.execPath} ${cliPath} status --keys ${keys} --node node-a     # node-a's NODES table: NAT types, path kinds, RTT`);
    say(`  ip netns exec ${nodes[0].namespace} nft list table ip leafmesh                  # the cluster-IP rules`);
    say("Path changes (mesh.*.tunnel.path) live; Ctrl-C stops and removes the lab:");
    const watcher = inNamespace(lab.hub.namespace, [process.execPath, cliPath, "sub", "--keys", keys, "--nats", "nats://127.0.0.1:4222", "mesh.*.tunnel.path"]);
    const sub = spawn(watcher[0], watcher.slice(1), { stdio: ["ignore", "pipe", "ignore"] });
    children.push(sub);
    sub.stdout!.on("data", (chunk: Buffer) => io.stdout.write(chunk.toString().replace(/^/gm, "  ")));
    await new Promise<void>((resolveAbort) => (io.signal.aborted ? resolveAbort() : io.signal.addEventListener("abort", () => resolveAbort(), { once: true })));
    say("stopping and removing the lab …");
    return 0;
  } finally {
    await stop();
    say("stopped.");
  }
}
