/**
 * Real leafmesh processes for end-to-end tests: `leafmesh hub` and `leafmesh
 * agent` started as the user would (bin/leafmesh.js under Node 24), on free
 * loopback ports, with their logs kept for assertions and failure reports.
 *
 * ```ts
 * const hub = await startHubProcess({ name: "hub-1", manifests });
 * const agent = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl] });
 * const view = await agent.view();
 * await agent.stop();
 * ```
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { fetchNodeView } from "../../cli/status.ts";
import { clientConnectOptions } from "../../cli/security-options.ts";
import { eventually, freePort } from "./ports.ts";
import { memoryStart } from "../../bin/memory.js";
import { stopNamespaceForwards } from "./namespace-status.ts";

const root = resolve(import.meta.dirname, "../..");
export const nodeBinary = join(root, "node_modules/.bin/node");
export const cliPath = join(root, "bin/leafmesh.js");

export interface LeafmeshProcess {
  readonly name: string;
  readonly clientUrl: string;
  readonly dataDir: string;
  readonly child: ChildProcess;
  /** Everything the process printed so far (stdout + stderr). */
  output(): string;
  connection(): Promise<NatsConnection>;
  /** The node's status and catalog over its own NATS server; `timeoutMs` for each request (2 s). */
  view(timeoutMs?: number): ReturnType<typeof fetchNodeView>;
  /** SIGTERM and wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL (a crash) and wait for exit. */
  kill(): Promise<void>;
}

const started: LeafmeshProcess[] = [];
const dataDirs: string[] = [];

/** Stops every process started by this module and removes their data; call in afterAll. */
export async function stopAllProcesses(): Promise<void> {
  await Promise.all(started.splice(0).map((process) => process.stop().catch(() => undefined)));
  stopNamespaceForwards();
  for (const dir of dataDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

export function tempDir(prefix = "leafmesh-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dataDirs.push(dir);
  return dir;
}

/** Starts `leafmesh ARGS` (inside a network namespace when given) and tracks it for stopAllProcesses(). */
/**
 * The memory settings bin/leafmesh.js would start ROLE again with (bin/memory.js), given at the first start: a
 * long-running role otherwise boots Node twice (~90 ms of CPU each time on a 2-core test machine, where a page fault
 * costs ~10 µs). `plainStart` starts as a shell does, `node bin/leafmesh.js ROLE …`, for the tests of that re-exec.
 */
function roleStart(role: string | undefined, env: NodeJS.ProcessEnv, plainStart: boolean): { nodeFlags: string[]; env: NodeJS.ProcessEnv } {
  const memory = plainStart ? undefined : memoryStart(role, [], env);
  return memory ? { nodeFlags: memory.flags, env: { ...env, ...memory.env } } : { nodeFlags: [], env };
}

export function launch(name: string, args: string[], clientUrl: string, dataDir: string, namespace?: string, env?: NodeJS.ProcessEnv, security?: { keys: string; node?: string; site?: string }, wrapper: string[] = [], plainStart = false): LeafmeshProcess {
  // Read when a connection is made: an agent that joins with a token (--join) has its keys only once it runs.
  const connectOptions = () => (security ? clientConnectOptions(security) : {});
  const start = roleStart(args[0], env ? { ...process.env, ...env } : process.env, plainStart);
  const argv = [...(namespace ? ["ip", "netns", "exec", namespace] : []), ...wrapper, nodeBinary, ...start.nodeFlags, cliPath, ...args];
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], env: start.env });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolveExit) => child.once("exit", (code) => resolveExit(code)));
  const connections: NatsConnection[] = [];
  const handle: LeafmeshProcess = {
    name,
    clientUrl,
    dataDir,
    child,
    output: () => output,
    async connection() {
      const connection = await connect({ ...connectOptions(), servers: clientUrl, reconnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
      connections.push(connection);
      return connection;
    },
    async view(timeoutMs = 2_000) {
      const connection = await connect({ ...connectOptions(), servers: clientUrl, reconnect: false, timeout: 2_000 });
      try {
        return await fetchNodeView(connection, timeoutMs);
      } finally {
        await connection.close();
      }
    },
    async stop() {
      await Promise.all(connections.splice(0).map((connection) => connection.close().catch(() => undefined)));
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
  started.push(handle);
  return handle;
}

async function waitReady(process: LeafmeshProcess, timeoutMs = 30_000): Promise<void> {
  // A status request made once the node's nats-server is up, but before the process answers on it, is not refused: it
  // waits out its timeout (no "no responders" comes back; why is not known). With 2 s each, a start that answered in
  // ~1 s was seen ~2.5 s after it began. So the first request waits briefly, and each one after a request that timed
  // out twice as long (up to 2 s): a slow machine still gets its answer, a quick start is seen when it is ready.
  let requestTimeoutMs = 200;
  await eventually(
    async () => {
      if (process.child.exitCode !== null) throw new Error(`${process.name} exited with ${process.child.exitCode}:\n${process.output().slice(-3000)}`);
      const asked = performance.now();
      try {
        await process.view(requestTimeoutMs);
      } catch (error) {
        if (performance.now() - asked >= requestTimeoutMs) requestTimeoutMs = Math.min(2_000, requestTimeoutMs * 2);
        throw error;
      }
      return true;
    },
    timeoutMs,
    `${process.name} to answer status`,
  ).catch((error: Error) => {
    throw new Error(`${error.message}\n--- ${process.name} output ---\n${process.output().slice(-4000)}`, { cause: error });
  });
}

export interface HubProcess extends LeafmeshProcess {
  readonly leafUrl: string;
  readonly routeUrl: string;
  readonly monitorPort: number;
  readonly metricsUrl: string | undefined;
  /** Starts the same hub again (same ports and data) after stop() or kill(). */
  restart(): Promise<HubProcess>;
}

export interface HubProcessOptions {
  name: string;
  manifests?: string;
  kubeconfig?: string;
  /** Route URLs of the whole cluster; with `clusterPort`. */
  routes?: string[];
  clusterPort?: number;
  ports?: { client: number; leaf: number; monitor: number; metrics?: number };
  dataDir?: string;
  leaseTtlMs?: number;
  /** The mesh's keys directory; without it the hub runs --insecure. */
  keys?: string;
  /** What --keys gets when it is not `keys` itself: a keys Secret's mount (trust/flat-keys.ts), which the hub unpacks into `keys`. */
  keysMount?: string;
  extraArgs?: string[];
  waitReady?: boolean;
  /** More environment for the hub's process. */
  env?: NodeJS.ProcessEnv;
  /** Started as a shell does, without the harness's memory flags (see roleStart). */
  plainStart?: boolean;
}

export async function hubPorts(): Promise<{ client: number; leaf: number; monitor: number; cluster: number; metrics: number }> {
  return { client: await freePort(), leaf: await freePort(), monitor: await freePort(), cluster: await freePort(), metrics: await freePort() };
}

export async function startHubProcess(options: HubProcessOptions): Promise<HubProcess> {
  const ports = options.ports ?? (await hubPorts());
  const dataDir = options.dataDir ?? tempDir(`leafmesh-${options.name}-`);
  const args = [
    "hub",
    "--name", options.name,
    "--data", dataDir,
    "--listen", `127.0.0.1:${ports.client}`,
    "--leaf-listen", `127.0.0.1:${ports.leaf}`,
    "--monitor-listen", `127.0.0.1:${ports.monitor}`,
    "--metrics-listen", ports.metrics ? `127.0.0.1:${ports.metrics}` : "off",
    ...(options.manifests ? ["--manifests", options.manifests] : []),
    ...(options.kubeconfig ? ["--kubeconfig", options.kubeconfig] : []),
    ...(options.routes ? ["--routes", options.routes.join(","), "--cluster-listen", `127.0.0.1:${options.clusterPort}`] : []),
    ...(options.leaseTtlMs ? ["--lease-ttl", String(options.leaseTtlMs)] : []),
    ...(options.keys ? ["--keys", options.keysMount ?? options.keys] : ["--insecure"]),
    ...(options.extraArgs ?? []),
  ];
  const base = launch(options.name, args, `nats://127.0.0.1:${ports.client}`, dataDir, undefined, options.env, options.keys ? { keys: options.keys } : undefined, [], options.plainStart);
  const hub: HubProcess = {
    ...base,
    leafUrl: `nats://127.0.0.1:${ports.leaf}`,
    routeUrl: `nats-route://127.0.0.1:${options.clusterPort ?? 0}`,
    monitorPort: ports.monitor,
    metricsUrl: ports.metrics ? `http://127.0.0.1:${ports.metrics}` : undefined,
    restart: () => startHubProcess({ ...options, ports, dataDir }),
  };
  if (options.waitReady !== false) await waitReady(hub, 45_000);
  return hub;
}

/** Three hubs in one cluster; `sources` says which of them get the manifest directory. */
export async function startHubCluster(options: { names: string[]; manifests?: string; sources?: string[]; leaseTtlMs?: number; keys?: string }): Promise<HubProcess[]> {
  const ports = await Promise.all(options.names.map(() => hubPorts()));
  const routes = ports.map((port) => `nats-route://127.0.0.1:${port.cluster}`);
  // Cluster members must start together: JetStream waits for a quorum before it answers.
  const hubs = await Promise.all(
    options.names.map((name, index) =>
      startHubProcess({
        name,
        ports: ports[index],
        clusterPort: ports[index].cluster,
        routes,
        manifests: !options.sources || options.sources.includes(name) ? options.manifests : undefined,
        leaseTtlMs: options.leaseTtlMs,
        keys: options.keys,
      }),
    ),
  );
  return hubs;
}

export interface AgentProcess extends LeafmeshProcess {
  readonly metricsUrl: string;
  restart(): Promise<AgentProcess>;
}

export async function startAgentProcess(options: {
  node: string;
  hubs: string[];
  dataDir?: string;
  ports?: { client: number; monitor: number; metrics: number };
  keys?: string;
  /** A join token (agent --join) instead of keys: the agent's identity lands in DATA/keys. */
  join?: string;
  /** A file holding the join token (agent --join-file), as the docs advise. */
  joinFile?: string;
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
  waitReady?: boolean;
  /** A command the agent runs under (e.g. `prlimit --nofile=256:4096`), which execs it (the child's pid is the agent's). */
  wrapper?: string[];
  /** Started as a shell does, without the harness's memory flags (see roleStart). */
  plainStart?: boolean;
}): Promise<AgentProcess> {
  const ports = options.ports ?? { client: await freePort(), monitor: await freePort(), metrics: await freePort() };
  const dataDir = options.dataDir ?? tempDir(`leafmesh-${options.node}-`);
  const base = launch(
    options.node,
    [
      "agent",
      "--node", options.node,
      "--hub", options.hubs.join(","),
      "--data", dataDir,
      "--nats-listen", `127.0.0.1:${ports.client}`,
      "--monitor-listen", `127.0.0.1:${ports.monitor}`,
      "--metrics-listen", `127.0.0.1:${ports.metrics}`,
      ...(options.join ? ["--join", options.join] : options.joinFile ? ["--join-file", options.joinFile] : options.keys ? ["--keys", options.keys] : ["--insecure"]),
      ...loopbackTunnel(options.extraArgs ?? []),
      ...(options.extraArgs ?? []),
    ],
    `nats://127.0.0.1:${ports.client}`,
    dataDir,
    undefined,
    options.env,
    options.join || options.joinFile ? { keys: join(dataDir, "keys"), node: options.node } : options.keys ? { keys: options.keys, node: options.node } : undefined,
    options.wrapper,
    options.plainStart,
  );
  const agent: AgentProcess = { ...base, metricsUrl: `http://127.0.0.1:${ports.metrics}`, restart: () => startAgentProcess({ ...options, ports, dataDir }) };
  if (options.waitReady !== false) await waitReady(agent);
  return agent;
}

/**
 * The tunnel's listeners on loopback ports of the kernel's choosing, unless the
 * test names them: the defaults (0.0.0.0:4101 and :4102) are one per machine,
 * and test files run side by side (a secured agent once died of EADDRINUSE on
 * 4102 in CI because another file's agent held it).
 */
function loopbackTunnel(extraArgs: readonly string[]): string[] {
  return [
    ...(extraArgs.includes("--tunnel-listen") ? [] : ["--tunnel-listen", "/ip4/127.0.0.1/tcp/0"]),
    ...(extraArgs.includes("--tunnel-tls") ? [] : ["--tunnel-tls", "127.0.0.1:0"]),
  ];
}

/** Runs `leafmesh ARGS` to completion; returns exit code and output. */
export async function runCli(args: string[], timeoutMs = 90_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(nodeBinary, [cliPath, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await new Promise<number | null>((resolveExit) => child.once("exit", (exitCode) => resolveExit(exitCode)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Runs `leafmesh ARGS` and returns its stdout; a non-zero exit throws, with the command and its output. */
export async function runCliOk(...args: string[]): Promise<string> {
  const result = await runCli(args);
  if (result.code !== 0) throw new Error(`leafmesh ${args.join(" ")} exited with ${result.code}:\n${result.stdout}${result.stderr}`);
  return result.stdout;
}

export interface SiteProcess extends LeafmeshProcess {
  readonly leafUrl: string;
  restart(): Promise<SiteProcess>;
}

/** The revocation list an agent enforces, as its trust actor reports it (`leafmesh status`). */
export async function trustOf(agent: LeafmeshProcess): Promise<{ revocationList: number; revoked: string[] } | undefined> {
  const view = await agent.view();
  const detail = view.status.actors.find((actor) => actor.name === "trust")?.detail as { revocationList: number; revoked: string[] } | undefined;
  // The revocations only (the detail also shows when the node's certificate ends: trust/status-ends.test.ts).
  return detail && { revocationList: detail.revocationList, revoked: detail.revoked };
}

/** Ports for the servers of one site, to know their leaf URLs before they start (startSiteCluster's `ports`). */
export async function siteClusterPorts(servers: number): Promise<Awaited<ReturnType<typeof hubPorts>>[]> {
  return Promise.all(Array.from({ length: servers }, () => hubPorts()));
}

/**
 * The servers of one site (one to three), attached to `upstreams` (hub leaf URLs), started together: `--insecure`, or
 * with `keys` (the mesh's keys directory, which holds the site's bundle) over TLS to the hubs.
 */
export async function startSiteCluster(options: { site: string; servers: string[]; upstreams: string[]; ports?: Awaited<ReturnType<typeof hubPorts>>[]; keys?: string; extraArgs?: string[] }): Promise<SiteProcess[]> {
  const ports = options.ports ?? (await siteClusterPorts(options.servers.length));
  const routes = ports.map((port) => `nats-route://127.0.0.1:${port.cluster}`);
  const dataDirs = options.servers.map((server) => tempDir(`leafmesh-${server}-`));
  const startOne = async (index: number): Promise<SiteProcess> => {
    const server = options.servers[index];
    const port = ports[index];
    const base = launch(
      server,
      [
        "site",
        "--name", options.site,
        "--server", server,
        "--data", dataDirs[index],
        "--upstream", (options.keys ? options.upstreams.map((url) => url.replace(/^nats:/, "tls:")) : options.upstreams).join(","),
        "--listen", `127.0.0.1:${port.client}`,
        "--leaf-listen", `127.0.0.1:${port.leaf}`,
        "--monitor-listen", `127.0.0.1:${port.monitor}`,
        "--metrics-listen", `127.0.0.1:${port.metrics}`,
        ...(options.keys ? ["--keys", options.keys] : ["--insecure"]),
        ...(options.servers.length > 1 ? ["--routes", routes.join(","), "--cluster-listen", `127.0.0.1:${port.cluster}`] : []),
        ...(options.extraArgs ?? []),
      ],
      `nats://127.0.0.1:${port.client}`,
      dataDirs[index],
      undefined,
      undefined,
      options.keys ? { keys: options.keys, site: options.site, node: server } : undefined,
    );
    const site: SiteProcess = { ...base, leafUrl: `nats://127.0.0.1:${port.leaf}`, restart: () => startOne(index) };
    await waitReady(site, 60_000);
    return site;
  };
  return Promise.all(options.servers.map((_server, index) => startOne(index)));
}

// Asked from this process over a socat forward into the namespace (was a `leafmesh status` process per question).
export { statusInNamespace } from "./namespace-status.ts";

/** Where an agent's proxy listener takes a service port key (its own address on the shared TCP listener, or 127.0.0.1), from its status. */
export async function proxyListener(agent: LeafmeshProcess, key: string): Promise<{ host: string; port: number }> {
  return eventually(async () => {
    const traffic = (await agent.view()).status.actors.find((actor) => actor.name === "traffic");
    const listeners = (traffic?.detail?.listeners ?? []) as { key: string; listenerHost?: string; listenerPort: number }[];
    const found = listeners.find((listener) => listener.key === key);
    return found && { host: found.listenerHost ?? "127.0.0.1", port: found.listenerPort };
  }, 15_000, `${agent.name}'s listener for ${key}`);
}
