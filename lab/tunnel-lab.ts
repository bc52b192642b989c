/**
 * The tunnel lab: the NAT lab (nat.ts) populated with a hub (nats-server + NAT
 * observer) and, on every site host, a leaf nats-server and a tunnel agent
 * (tunnel-node.ts) driven over stdin/stdout. Used by the NAT matrix test and
 * the tunnel benchmark.
 *
 * ```ts
 * const lab = await startTunnelLab({ sites: [{ name: "s1", nat: "full-cone" }, { name: "s2", nat: "symmetric" }] });
 * await lab.call("s1h1", { op: "roundtrip", node: "s2h1", bytes: 65536 }); // { ok, kind, ms }
 * await lab.teardown();
 * ```
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { withCompileCache } from "../bin/compile-cache.js";
import { renderHubConfig, renderLeafConfig } from "../nats/render.ts";
import { checkNatsServerBinary } from "../nats/supervisor.ts";
import { buildNatLab, hubAddresses, type LinkShape, type NatLab, type SiteSpec } from "./nat.ts";
import { inNamespace } from "./netns.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { loadNodeSecurity, nodeIdentityPems } from "../trust/security.ts";
import type { NodeIdentity } from "../services/tunnel/index.ts";

export const labPsk = `/key/swarm/psk/1.0.0/\n/base16/\n${"6c".repeat(32)}\n`;
export const observerPorts: [number, number] = [3478, 3479];

export interface AgentReply {
  id: number;
  ok: boolean;
  error?: string;
  [key: string]: unknown;
}

export interface TunnelLab {
  nat: NatLab;
  /** Agent names: `<site><h><k>`, e.g. "s1h1". */
  agents: string[];
  call(agent: string, request: Record<string, unknown>, timeoutMs?: number): Promise<AgentReply>;
  /** Polls every agent until its NAT type is known (or the site has no hub). */
  teardown(): Promise<void>;
}

/** Timings every agent of the lab gets (TunnelOptions of the same names); undefined: the tunnel's defaults. */
export interface AgentTimings {
  connectionPingIntervalMs?: number;
}

const runner = fileURLToPath(new URL("./tunnel-node.ts", import.meta.url));

/**
 * `secured`: every agent gets a mesh certificate (`leafmesh keys` code) as its tunnel
 * identity, and serves streams on direct paths over TLS (services/tunnel/tls-streams.ts).
 */
export async function startTunnelLab(options: { sites: SiteSpec[]; prefix?: string; secured?: boolean; links?: { wan?: LinkShape; lan?: LinkShape }; agents?: AgentTimings }): Promise<TunnelLab> {
  checkNatsServerBinary();
  const nat = await buildNatLab(options);
  const dir = mkdtempSync(join(tmpdir(), "lm-tunnel-lab-"));
  const children: ChildProcess[] = [];
  const agents = new Map<string, { child: ChildProcess; pending: Map<number, (reply: AgentReply) => void>; ready: Promise<void> }>();
  let nextId = 1;

  const launch = (namespace: string, argv: string[], name: string) => {
    const full = inNamespace(namespace, argv);
    // With leafmesh's compile cache, as `leafmesh` starts: a node then takes ~0.8 s of CPU to start instead of ~1.2.
    const child = spawn(full[0], full.slice(1), { stdio: ["pipe", "pipe", "pipe"], env: withCompileCache() });
    children.push(child);
    const stderr: string[] = [];
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr.push(chunk.toString());
      if (process.env.LEAFMESH_LAB_VERBOSE) process.stderr.write(`[${name}] ${chunk.toString()}`);
      if (stderr.length > 50) stderr.shift();
    });
    child.once("exit", (code) => {
      if (code && code !== 0) process.stderr.write(`[tunnel-lab] ${name} exited with ${code}: ${stderr.join("").slice(-2000)}\n`);
    });
    return child;
  };

  const teardown = async () => {
    // SIGTERM first (agents exit cleanly, so NODE_OPTIONS=--cpu-prof writes its profiles), SIGKILL what is left after 2 s.
    const exited = children.filter((child) => child.exitCode === null && child.signalCode === null).map((child) => new Promise((resolve) => child.once("exit", resolve)));
    for (const child of children) child.kill("SIGTERM");
    await Promise.race([Promise.all(exited), new Promise((resolve) => setTimeout(resolve, 2_000))]);
    for (const child of children) child.kill("SIGKILL");
    await nat.teardown();
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const keys = join(dir, "keys");
    if (options.secured) await initKeys({ dir: keys });
    const identityOf = async (node: string): Promise<NodeIdentity | undefined> => {
      if (!options.secured) return undefined;
      await issueNode({ dir: keys, node });
      return nodeIdentityPems(loadNodeSecurity(keys, node));
    };
    const hubConfig = join(dir, "hub.conf");
    writeFileSync(
      hubConfig,
      renderHubConfig({
        serverName: "hub",
        storeDir: join(dir, "hub-js"),
        client: { host: "0.0.0.0", port: 4222 },
        monitor: { host: "127.0.0.1", port: 8222 },
        leaf: { host: "0.0.0.0", port: 7422 },
        pingInterval: "2s",
      }),
    );
    launch(nat.hub.namespace, ["nats-server", "-c", hubConfig], "hub nats-server");
    launch(nat.hub.namespace, [process.execPath, runner, "observer", JSON.stringify({ hosts: hubAddresses, ports: observerPorts })], "observer");
    for (const site of nat.sites) {
      for (const [index, host] of site.hosts.entries()) {
        const name = `${site.spec.name}h${index + 1}`;
        const leafConfig = join(dir, `${name}.conf`);
        writeFileSync(
          leafConfig,
          renderLeafConfig({
            serverName: name,
            domain: name,
            storeDir: join(dir, `${name}-js`),
            client: { host: "127.0.0.1", port: 4222 },
            monitor: { host: "127.0.0.1", port: 8222 },
            upstreams: [`nats-leaf://${hubAddresses[0]}:7422`],
            pingInterval: "2s",
          }),
        );
        launch(host.namespace, ["nats-server", "-c", leafConfig], `${name} nats-server`);
        const child = launch(
          host.namespace,
          [
            process.execPath,
            runner,
            "agent",
            JSON.stringify({ node: name, natsUrl: "nats://127.0.0.1:4222", hubs: [`nats-leaf://${hubAddresses[0]}:7422`], psk: labPsk, site: site.spec.name, observer: { host: hubAddresses[0], ports: observerPorts }, identity: await identityOf(name), ...options.agents }),
          ],
          `${name} agent`,
        );
        const pending = new Map<number, (reply: AgentReply) => void>();
        const ready = new Promise<void>((resolve, reject) => {
          child.once("exit", (code) => reject(new Error(`agent ${name} exited with ${code} before it was ready`)));
          createInterface({ input: child.stdout! }).on("line", (line) => {
            let message: AgentReply & { event?: string };
            try {
              message = JSON.parse(line) as AgentReply & { event?: string };
            } catch {
              // Not a reply (node's own --trace-gc, for one): shown with the agent's stderr.
              if (process.env.LEAFMESH_LAB_VERBOSE) process.stderr.write(`[${name}] ${line}\n`);
              return;
            }
            if (message.event === "ready") resolve();
            else pending.get(message.id)?.(message);
          });
        });
        ready.catch(() => undefined);
        agents.set(name, { child, pending, ready });
      }
    }
    await Promise.all([...agents.values()].map((agent) => agent.ready));
  } catch (error) {
    await teardown();
    throw error;
  }

  return {
    nat,
    agents: [...agents.keys()],
    call(agent, request, timeoutMs = 60_000) {
      const handle = agents.get(agent);
      if (!handle) return Promise.reject(new Error(`no agent ${agent}`));
      const id = nextId++;
      return new Promise<AgentReply>((resolve, reject) => {
        const timer = setTimeout(() => {
          handle.pending.delete(id);
          reject(new Error(`agent ${agent} did not answer ${JSON.stringify(request)} within ${timeoutMs} ms`));
        }, timeoutMs);
        handle.pending.set(id, (reply) => {
          clearTimeout(timer);
          handle.pending.delete(id);
          resolve(reply);
        });
        handle.child.stdin!.write(`${JSON.stringify({ ...request, id })}\n`);
      });
    },
    teardown,
  };
}
