/**
 * Test tool: a real forward proxy, Debian's tinyproxy (package tinyproxy-bin,
 * scripts/packages.d/egress.txt), as a factory runs one: CONNECT allowed to the
 * ports given (all when none), optionally with a user and password (BasicAuth,
 * answered 407 without them). With `hosts`, it resolves names the machine does
 * not know (hub-1.example.net) from a hosts file bound over /etc/hosts in a mount
 * namespace of its own (`unshare --mount`, root), as hosts-file.ts does for nats-server.
 *
 * ```ts
 * const proxy = await startTinyproxy({ dir, port, basicAuth: { user: "leafmesh", password: "secret" }, hosts: { "hub-1.example.net": "127.0.0.1" } });
 * proxy.log(); // CONNECT lines
 * await proxy.stop();
 * ```
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { eventually } from "./ports.ts";

export interface TinyproxyOptions {
  dir: string;
  port: number;
  /** @default "127.0.0.1" */
  listen?: string;
  basicAuth?: { user: string; password: string };
  /** Ports CONNECT may reach; none: any (tinyproxy's rule when no ConnectPort is given). */
  connectPorts?: number[];
  hosts?: Record<string, string>;
}

/** tinyproxy's config file and the argv that runs it in the foreground (for a lab namespace's spawn). */
export function tinyproxyCommand(options: TinyproxyOptions): string[] {
  const config = join(options.dir, `tinyproxy-${options.port}.conf`);
  writeFileSync(
    config,
    [
      `Port ${options.port}`,
      `Listen ${options.listen ?? "127.0.0.1"}`,
      "Timeout 60",
      "LogLevel Info",
      "MaxClients 50",
      ...(options.basicAuth ? [`BasicAuth ${options.basicAuth.user} ${options.basicAuth.password}`] : []),
      ...(options.connectPorts ?? []).map((port) => `ConnectPort ${port}`),
      "",
    ].join("\n"),
  );
  if (!options.hosts) return ["tinyproxy", "-d", "-c", config];
  const hosts = join(options.dir, `tinyproxy-${options.port}.hosts`);
  writeFileSync(hosts, ["127.0.0.1 localhost", ...Object.entries(options.hosts).map(([name, address]) => `${address} ${name}`), ""].join("\n"));
  return ["unshare", "--mount", "--", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec tinyproxy -d -c "$1"', hosts, config];
}

export interface Tinyproxy {
  url: string;
  process: ChildProcess;
  log(): string;
  stop(): Promise<void>;
}

/** tinyproxy on loopback, started and listening. */
export async function startTinyproxy(options: TinyproxyOptions): Promise<Tinyproxy> {
  const [command, ...args] = tinyproxyCommand(options);
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const spawned = new Promise<void>((resolve, reject) => {
    child.once("spawn", resolve);
    child.once("error", (error) => reject(new Error(`tinyproxy did not start (apt-get install -y tinyproxy-bin; scripts/install.sh does): ${error.message}`)));
  });
  await spawned;
  await eventually(() => {
    if (child.exitCode !== null) throw new Error(`tinyproxy exited with ${child.exitCode}: ${output}`);
    return output.includes("Accepting connections");
  }, 5_000, "tinyproxy to listen");
  return {
    url: `http://${options.listen ?? "127.0.0.1"}:${options.port}`,
    process: child,
    log: () => output,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    },
  };
}
