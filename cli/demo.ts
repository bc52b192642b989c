/**
 * `leafmesh demo`: the whole mesh on one machine, no root: a hub and agents on
 * loopback (each a real `leafmesh` process with its own nats-server), sample
 * services whose backends are small HTTP servers "running on" different nodes,
 * and a live view of the mesh's events until Ctrl-C.
 */
import { commandSummaries } from "./command-list.ts";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import type { Server } from "node:http";
import { http } from "../lib/node-http.ts";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { rpcRequest } from "../bus/bus.ts";
import { connectNats } from "../bus/connect.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { clientConnectOptions } from "./security-options.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { defineCommand, parsePositiveInt } from "./command.ts";
import { rpc } from "../bus/rpc.ts";
import { makeDirectories } from "../lib/make-dirs.ts";
import { dataDirectory } from "./server-options.ts";

const cliPath = resolve(import.meta.dirname, "../bin/leafmesh.js");

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createNetServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** A backend of a sample service: answers with the node it "runs on". */
async function startBackend(service: string, node: string): Promise<{ server: Server; port: number }> {
  const port = await freePort();
  const server = http.createServer((request, response) => {
    response.setHeader("content-type", "text/plain");
    response.end(`hello from ${service}, served by a backend on node ${node} (${request.method} ${request.url})\n`);
  });
  await new Promise<void>((resolveListen) => server.listen(port, "127.0.0.1", resolveListen));
  return { server, port };
}

/**
 * The demo's ingress (docs/gateway.md): an Istio Gateway on `gatewayPort` served by the first
 * agent (started with --gateway), host shop.demo.example: /api to api, the rest to web.
 */
function demoIngress(gatewayPort: number): object[] {
  const istio = "networking.istio.io/v1beta1";
  const to = (host: string) => ({ destination: { host, port: { number: 80 } } });
  return [
    { apiVersion: istio, kind: "Gateway", metadata: { name: "demo", namespace: "demo" }, spec: { selector: {}, servers: [{ port: { number: gatewayPort, name: "http", protocol: "HTTP" }, hosts: ["shop.demo.example"] }] } },
    {
      apiVersion: istio,
      kind: "VirtualService",
      metadata: { name: "shop", namespace: "demo" },
      spec: { gateways: ["demo"], hosts: ["shop.demo.example"], http: [{ name: "api", match: [{ uri: { prefix: "/api" } }], route: [to("api")] }, { name: "web", route: [to("web")] }] },
    },
  ];
}

export function demoManifests(backends: { service: string; node: string; port: number }[], clusterIPs: Record<string, string>, gatewayPort?: number): string {
  const documents: object[] = gatewayPort ? demoIngress(gatewayPort) : [];
  for (const service of Object.keys(clusterIPs)) {
    documents.push({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: service, namespace: "demo", labels: { app: service } },
      spec: { clusterIP: clusterIPs[service], ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }] },
    });
  }
  for (const backend of backends) {
    documents.push({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: `${backend.service}-${backend.node}`, namespace: "demo", labels: { "kubernetes.io/service-name": backend.service } },
      addressType: "IPv4",
      endpoints: [{ addresses: ["127.0.0.1"], nodeName: backend.node, conditions: { ready: true } }],
      ports: [{ name: "http", port: backend.port, protocol: "TCP" }],
    });
  }
  return documents.map((document) => stringify(document)).join("---\n");
}

export const demoCommand = defineCommand({
  name: "demo",
  summary: commandSummaries.demo,
  description: `
Starts, on loopback: a hub publishing sample manifests, N agents (edge-1 …), and
small HTTP backends for the sample services, each on one node. Prints what to
try (leafmesh status, leafmesh sub, and the agents' addresses), then shows
catalog, link and path changes live until Ctrl-C, and stops everything.
Stop the hub process (its pid is printed) to see the agents carry on from
their mirrors; edit the manifest file it prints to see changes propagate.`,
  options: {
    agents: { type: "string", default: "2", value: "N", description: "number of agents (nodes) to start" },
    data: { type: "string", value: "DIR", description: "where to keep the demo's data (default: a new directory under the system temp dir)" },
    lab: { type: "boolean", description: "as root: the same mesh in network namespaces behind NATs (full cone, port-restricted, symmetric), with real cluster IPs, DNS and hole punching" },
    logLevel: { type: "string", default: "warn", value: "LEVEL", description: "log level of the hub and agents (their logs go to DIR/<name>.log)" },
  },
  async run(options, _positionals, io) {
    if (options.lab) {
      // The namespace mode is built on the network lab (lab/), which only tests, benches and this mode use:
      // loaded on demand, so the product never loads lab code unless asked to.
      const { runLabDemo } = await import("../lab/demo-lab.ts");
      return runLabDemo(io, { logLevel: options.logLevel });
    }
    const agentCount = parsePositiveInt(options.agents, "--agents");
    if (agentCount > 9) throw new LeafmeshError("CONFIG_INVALID", "--agents: at most 9 on one machine");
    const base = options.data ? dataDirectory(options.data, "demo") : mkdtempSync(join(tmpdir(), "leafmesh-demo-"));
    makeDirectories(join(base, "manifests"));
    const say = (line: string) => io.stdout.write(`${line}\n`);
    const nodes = Array.from({ length: agentCount }, (_, index) => `edge-${index + 1}`);

    say(`leafmesh demo: data in ${base}`);
    const backends = [
      { service: "web", node: nodes[nodes.length - 1] },
      { service: "api", node: nodes[0] },
    ];
    const started = await Promise.all(backends.map(async (backend) => ({ ...backend, ...(await startBackend(backend.service, backend.node)) })));
    const manifestFile = join(base, "manifests", "demo.yaml");
    const gatewayPort = await freePort();
    writeFileSync(manifestFile, demoManifests(started, { web: "198.19.0.10", api: "198.19.0.11" }, gatewayPort));

    // Security on, as in a real mesh: the demo's own keys (operator, accounts, CA, PSK) and one identity per node.
    const keys = join(base, "keys");
    if (!existsSync(join(keys, "hub"))) {
      say("creating the demo mesh's keys (leafmesh keys init / issue) …");
      await initKeys({ dir: keys });
      for (const node of nodes) await issueNode({ dir: keys, node });
    }

    const children: { name: string; child: ChildProcess }[] = [];
    const spawnLeafmesh = (name: string, args: string[]) => {
      const log = join(base, `${name}.log`);
      const child = spawn(process.execPath, [cliPath, ...args, "--log-level", options.logLevel], { stdio: ["ignore", "ignore", "pipe"], env: childEnvironment() });
      const chunks: Buffer[] = [];
      child.stderr!.on("data", (chunk: Buffer) => {
        chunks.push(chunk);
        writeFileSync(log, Buffer.concat(chunks));
      });
      child.once("exit", (code, signal) => {
        if (!io.signal.aborted) say(`! ${name} exited (${signal ?? `code ${code}`}); its log: ${log}`);
      });
      children.push({ name, child });
      return child;
    };

    const hubPorts = { client: await freePort(), leaf: await freePort(), monitor: await freePort(), metrics: await freePort() };
    const hub = spawnLeafmesh("hub-1", [
      "hub", "--name", "hub-1", "--data", join(base, "hub-1"),
      "--listen", `127.0.0.1:${hubPorts.client}`, "--leaf-listen", `127.0.0.1:${hubPorts.leaf}`, "--monitor-listen", `127.0.0.1:${hubPorts.monitor}`,
      "--metrics-listen", `127.0.0.1:${hubPorts.metrics}`, "--manifests", join(base, "manifests"), "--keys", keys,
    ]);
    const stopAll = async () => {
      await Promise.all(
        children.map(
          ({ child }) =>
            new Promise<void>((resolveExit) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolveExit();
              child.once("exit", () => resolveExit());
              child.kill("SIGTERM");
            }),
        ),
      );
      for (const backend of started) backend.server.close();
    };

    // Watch the mesh from the hub: the same view as `leafmesh sub`.
    say("starting the hub …");
    let connection;
    const deadline = performance.now() + 30_000;
    for (;;) {
      try {
        connection = await connectNats({ ...clientConnectOptions({ keys }), servers: [`nats://127.0.0.1:${hubPorts.client}`], name: "leafmesh-demo", keepReconnecting: true });
        break;
      } catch (error) {
        if (performance.now() > deadline || hub.exitCode !== null) {
          await stopAll();
          throw new LeafmeshError("NATS_SERVER_FAILED", `the demo hub did not start; see ${join(base, "hub-1.log")}`, { cause: error });
        }
        await new Promise((resolveWait) => setTimeout(resolveWait, 250));
      }
    }
    // Agents start once the hub answers: their first node records and mirrors then land at once.
    while (!(await rpcRequest(connection, "hub-1", rpc.status, undefined, 1_000).then(() => true, () => false))) {
      if (performance.now() > deadline || hub.exitCode !== null) {
        await stopAll();
        throw new LeafmeshError("NATS_SERVER_FAILED", `the demo hub did not become ready; see ${join(base, "hub-1.log")}`);
      }
      await new Promise((resolveWait) => setTimeout(resolveWait, 250));
    }
    say(`starting ${nodes.length} agents …`);
    const agentPorts: Record<string, { client: number; monitor: number; metrics: number; dns: number; socks: number }> = {};
    for (const node of nodes) {
      agentPorts[node] = { client: await freePort(), monitor: await freePort(), metrics: await freePort(), dns: await freePort(), socks: await freePort() };
      spawnLeafmesh(node, [
        "agent", "--node", node, "--hub", `nats://127.0.0.1:${hubPorts.leaf}`, "--data", join(base, node),
        "--nats-listen", `127.0.0.1:${agentPorts[node].client}`, "--monitor-listen", `127.0.0.1:${agentPorts[node].monitor}`,
        "--metrics-listen", `127.0.0.1:${agentPorts[node].metrics}`,
        "--dns", `127.0.0.1:${agentPorts[node].dns}`, "--socks", `127.0.0.1:${agentPorts[node].socks}`,
        "--keys", keys, "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off",
        // The first agent is also the ingress gateway: clients outside the mesh reach Services through it.
        ...(node === nodes[0] ? ["--gateway", "127.0.0.1"] : []),
      ]);
    }

    // Each agent's proxy listeners (one per service port), from its status reply.
    const proxies: { node: string; key: string; host: string; port: number }[] = [];
    say("waiting for the agents' proxies …");
    for (const node of nodes) {
      const until = performance.now() + 45_000;
      while (performance.now() < until) {
        const agentConnection = await connectNats({ ...clientConnectOptions({ keys, node }), servers: [`nats://127.0.0.1:${agentPorts[node].client}`], name: "leafmesh-demo", keepReconnecting: false }).catch(() => undefined);
        const status = agentConnection ? await rpcRequest(agentConnection, node, rpc.status, undefined, 2_000).catch(() => undefined) : undefined;
        await agentConnection?.close();
        const listeners = (status?.actors.find((actor) => actor.name === "traffic")?.detail?.listeners ?? []) as { key: string; listenerHost?: string; listenerPort: number }[];
        // Ready when its proxies listen and its tunnel knows every other node's record.
        const knownPeers = Object.keys((status?.actors.find((actor) => actor.name === "tunnel")?.detail?.paths ?? {}) as object).length;
        if (listeners.length >= 2 && knownPeers >= nodes.length - 1) {
          for (const listener of listeners) proxies.push({ node, key: listener.key, host: listener.listenerHost ?? "127.0.0.1", port: listener.listenerPort });
          break;
        }
        await new Promise((resolveWait) => setTimeout(resolveWait, 500));
      }
    }
    say("");
    say("The mesh is up. Try, in another terminal:");
    for (const proxy of proxies) {
      const backend = started.find((candidate) => proxy.key.startsWith(`demo/${candidate.service}:`));
      const via = backend && backend.node !== proxy.node ? `, tunnelled to ${backend.node}` : "";
      say(`  curl http://${proxy.host}:${proxy.port}/     # ${proxy.key} through ${proxy.node}'s proxy${via}`);
    }
    say(`  curl -H 'Host: shop.demo.example' http://127.0.0.1:${gatewayPort}/api     # ${nodes[0]}'s ingress gateway, as a client outside the mesh: /api to api, the rest to web (docs/gateway.md)`);
    say(`  curl --socks5-hostname 127.0.0.1:${agentPorts[nodes[0]].socks} http://web.demo.svc.cluster.local/     # ${nodes[0]}'s SOCKS5 proxy: Services and nodes by name`);
    say(`  dig @127.0.0.1 -p ${agentPorts[nodes[0]].dns} web.demo.svc.cluster.local     # ${nodes[0]}'s cluster DNS (SRV: _http._tcp.web.demo.svc.cluster.local SRV)`);
    say(`  npx leafmesh status --keys ${keys} --node ${nodes[0]} --nats nats://127.0.0.1:${agentPorts[nodes[0]].client}     # what ${nodes[0]} knows: catalog, links, actors`);
    say(`  npx leafmesh status --keys ${keys} --nats nats://127.0.0.1:${hubPorts.client}     # the hub`);
    say(`  npx leafmesh sub --keys ${keys} --nats nats://127.0.0.1:${hubPorts.client}        # every mesh event, live`);
    say(`  npx leafmesh status --tree --keys ${keys} --nats nats://127.0.0.1:${hubPorts.client}     # the fabric as a tree`);
    say(`  npx leafmesh keys list --dir ${keys}     # the nodes' identities (revoke one with keys revoke --dir ${keys} --node NAME --hub …)`);
    say(`  curl http://127.0.0.1:${agentPorts[nodes[0]].metrics}/metrics     # ${nodes[0]}'s Prometheus metrics`);
    say(`  $EDITOR ${manifestFile}     # change the catalog: agents follow within a second`);
    say(`  kill ${hub.pid}     # stop the hub: agents keep serving their catalog from their mirrors`);
    say("");
    say("Live events (catalog, links, paths); Ctrl-C stops everything:");
    const decoder = new TextDecoder();
    for (const subject of ["mesh.*.controller.sync", "mesh.*.fabric.link", "mesh.*.tunnel.path", "mesh.*.publisher.*", "mesh.*.controller.catalog"]) {
      connection.subscribe(subject, {
        callback: (_error, message) => {
          const payload = JSON.parse(decoder.decode(message.data)) as Record<string, unknown>;
          const { at: _at, object: _object, ...rest } = payload;
          say(`  ${new Date().toISOString().slice(11, 19)} ${message.subject} ${JSON.stringify(rest)}`);
        },
      });
    }
    await new Promise<void>((resolveAbort) => io.signal.addEventListener("abort", () => resolveAbort(), { once: true }));
    say("stopping …");
    await connection.close();
    await stopAll();
    say("stopped.");
    return 0;
  },
});

/**
 * The demo's environment for the processes it starts, without the one malloc arena bin/leafmesh.js set for the
 * demo itself (LEAFMESH_ARENAS_DEFAULTED): each child decides for its role, and the hub keeps glibc's default.
 */
function childEnvironment(): NodeJS.ProcessEnv {
  if (process.env.LEAFMESH_ARENAS_DEFAULTED !== "1") return process.env;
  const { MALLOC_ARENA_MAX: _arenas, LEAFMESH_ARENAS_DEFAULTED: _defaulted, ...rest } = process.env;
  return rest;
}
