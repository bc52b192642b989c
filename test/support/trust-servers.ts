/**
 * Test support for trust/: real nats-server processes on loopback with their
 * whole log kept (the tests assert on what the hub and the leaf say), a secured
 * hub and agent leaf servers configured from a keys directory. Not used by the
 * product.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, eventually } from "./ports.ts";
import { renderLeafConfig, routeAuthorizationLines, withRouteCredentials } from "../../nats/render.ts";
import { markAccountsForLoadAtStart } from "../../nats/account-preload.ts";
import { loadHubSecurity, loadNodeSecurity, type HubSecurity, type NodeSecurity } from "../../trust/security.ts";

export interface TestServer {
  name: string;
  clientUrl: string;
  monitorPort: number;
  configFile: string;
  /** Everything the server printed so far. */
  log(): string;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

const running = new Set<TestServer>();

export function requireTools(): void {
  for (const [tool, args, pkg] of [["nats-server", ["--version"], "nats-server"], ["openssl", ["version"], "openssl"]] as const) {
    const result = spawnSync(tool, args);
    if (result.error) throw new Error(`trust tests need ${tool} (Debian package ${pkg}; scripts/install.sh installs it): ${result.error.message}`);
  }
}

export async function startNatsServer(options: {
  name: string;
  dir: string;
  config: (ports: { client: number; monitor: number }) => string;
  debug?: boolean;
  /** Secured servers, as the supervisor does for leafmesh's hubs and sites (nats-config/account-preload.ts). */
  loadAccountsAtStart?: () => { storeDir: string; accounts: readonly string[] };
}): Promise<TestServer> {
  const ports = { client: await freePort(), monitor: await freePort() };
  mkdirSync(options.dir, { recursive: true });
  const configFile = join(options.dir, `${options.name}.conf`);
  let output = "";
  let child: ChildProcess;
  // The config is rendered at every (re)start, as leafmesh does: a restart picks up what changed on disk.
  const launch = async () => {
    writeFileSync(configFile, options.config(ports), { mode: 0o600 });
    const load = options.loadAccountsAtStart?.();
    if (load) markAccountsForLoadAtStart(load.storeDir, load.accounts);
    child = spawn("nats-server", ["-c", configFile, ...(options.debug ? ["-D"] : [])], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    await eventually(
      async () => {
        if (child.exitCode !== null) throw new Error(`${options.name} exited with ${child.exitCode}:\n${output.slice(-3000)}`);
        const response = await fetch(`http://127.0.0.1:${ports.monitor}/healthz`).catch(() => undefined);
        return response?.ok === true;
      },
      20_000,
      `${options.name} to be healthy`,
    ).catch((error: Error) => {
      child.kill("SIGKILL");
      throw new Error(`${error.message}\n--- ${options.name} ---\n${output.slice(-3000)}`, { cause: error });
    });
  };
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
  };
  await launch();
  const server: TestServer = {
    name: options.name,
    clientUrl: `nats://127.0.0.1:${ports.client}`,
    monitorPort: ports.monitor,
    configFile,
    log: () => output,
    stop: async () => {
      running.delete(server);
      await stop();
    },
    restart: async () => {
      await stop();
      await launch();
    },
  };
  running.add(server);
  return server;
}

export async function stopAllServers(): Promise<void> {
  await Promise.all([...running].map((server) => server.stop()));
}

export interface SecuredHub extends TestServer {
  leafPort: number;
  leafUrl: string;
  security: HubSecurity;
}

export async function startSecuredHub(options: { keysDir: string; dir: string; debug?: boolean; name?: string; cluster?: { port: number; routes: number[] } }): Promise<SecuredHub> {
  const leafPort = await freePort();
  const name = options.name ?? "hub";
  const resolverDir = join(options.dir, `${name}-accounts`);
  let security = loadHubSecurity(options.keysDir, { resolverDir });
  const server = await startNatsServer({
    name,
    dir: options.dir,
    debug: options.debug,
    loadAccountsAtStart: () => ({ storeDir: join(options.dir, `${name}-js`), accounts: security.accounts }),
    config: (ports) => {
      security = loadHubSecurity(options.keysDir, { resolverDir });
      return [
        `server_name: ${JSON.stringify(name)}`,
        `listen: "127.0.0.1:${ports.client}"`,
        `http: "127.0.0.1:${ports.monitor}"`,
        `ping_interval: "1s"`,
        `jetstream { domain: "hub", store_dir: ${JSON.stringify(join(options.dir, `${name}-js`))}, max_memory_store: 268435456, max_file_store: 268435456 }`,
        ...(options.cluster
          ? [
              `cluster {`,
              `  name: "hubs"`,
              `  listen: "127.0.0.1:${options.cluster.port}"`,
              `  routes: ${JSON.stringify(options.cluster.routes.map((port) => withRouteCredentials(`nats-route://localhost:${port}`, security.routeCredentials)))}`,
              `  no_advertise: true`,
              security.routesFragment,
              ...routeAuthorizationLines(security.routeCredentials),
              `}`,
            ]
          : []),
        `leafnodes {`,
        `  listen: "127.0.0.1:${leafPort}"`,
        `  no_advertise: true`,
        security.leafnodesFragment,
        `}`,
        security.configFragment,
      ].join("\n");
    },
  });
  return Object.assign(server, { leafPort, leafUrl: `nats-leaf://127.0.0.1:${leafPort}`, security });
}

export interface SecuredLeaf extends TestServer {
  security: NodeSecurity;
}

/** An agent's leaf server (domain = node), attached to the hub with the node's bundle. */
export async function startSecuredLeaf(options: { node: string; bundleDir: string; hubLeafUrl: string; dir: string; remoteFragment?: string; waitConnected?: boolean }): Promise<SecuredLeaf> {
  const security = loadNodeSecurity(options.bundleDir, options.node);
  // The agent side goes through the lead's renderer, as `leafmesh agent` will: the fragments must splice in as they are.
  const server = await startNatsServer({
    name: options.node,
    dir: options.dir,
    config: (ports) =>
      renderLeafConfig({
        serverName: options.node,
        storeDir: join(options.dir, `${options.node}-js`),
        client: { host: "127.0.0.1", port: ports.client },
        monitor: { host: "127.0.0.1", port: ports.monitor },
        pingInterval: "1s",
        maxMemoryStore: 64 << 20,
        maxFileStore: 64 << 20,
        domain: options.node,
        upstreams: [options.hubLeafUrl],
        remoteSecurity: options.remoteFragment ?? security.leafRemoteFragment,
        security: security.localAuthFragment,
      }),
  });
  const leaf = Object.assign(server, { security });
  if (options.waitConnected !== false) await waitLeafConnected(leaf);
  return leaf;
}

export async function leafConnections(server: TestServer): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${server.monitorPort}/leafz`);
  const body = (await response.json()) as { leafnodes: number };
  return body.leafnodes;
}

export async function waitLeafConnected(server: TestServer, timeoutMs = 10_000): Promise<void> {
  await eventually(async () => (await leafConnections(server)) > 0, timeoutMs, `${server.name}'s leaf connection to the hub`).catch((error: Error) => {
    throw new Error(`${error.message}\n--- ${server.name} ---\n${server.log().slice(-3000)}`, { cause: error });
  });
}
