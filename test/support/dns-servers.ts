/**
 * Real DNS neighbours for the tests and the benchmark: `unbound` and `dnsmasq`
 * from Debian on loopback ports (as upstreams and as baselines), a tool check
 * that names the missing Debian package, and small UDP/TCP clients and a `dig`
 * runner.
 *
 * ```ts
 * requireTools(["dig", "unbound"]);
 * const upstream = await startUnbound({ port: await freePort(), records: [{ name: "a.test", type: "A", value: "192.0.2.1", ttl: 60 }] });
 * const answer = await udpQuery(upstream.port, "a.test", "A");
 * await upstream.stop();
 * ```
 */
import { execFile, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import dnsPacket from "dns-packet";

const debianPackages: Record<string, string> = {
  dig: "dnsutils",
  unbound: "unbound",
  dnsmasq: "dnsmasq-base",
  dnsperf: "dnsperf",
  "nats-server": "nats-server",
  ip: "iproute2",
  ping: "iputils-ping",
};

const toolPaths: Record<string, string[]> = {
  unbound: ["/usr/sbin/unbound"],
  dnsmasq: ["/usr/sbin/dnsmasq"],
};

/** The path of a tool, or a thrown error that says which Debian package brings it. */
export function requireTool(tool: string): string {
  const which = spawnSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" });
  if (which.status === 0 && which.stdout.trim()) return which.stdout.trim();
  for (const path of toolPaths[tool] ?? []) if (spawnSync("test", ["-x", path]).status === 0) return path;
  throw new Error(`'${tool}' is missing: install it with apt-get install -y ${debianPackages[tool] ?? tool} (scripts/install.sh does)`);
}

export function requireTools(tools: string[]): Record<string, string> {
  const missing: string[] = [];
  const paths: Record<string, string> = {};
  for (const tool of tools) {
    try {
      paths[tool] = requireTool(tool);
    } catch {
      missing.push(tool);
    }
  }
  if (missing.length > 0) {
    throw new Error(`missing tools: ${missing.join(", ")}; install with apt-get install -y ${[...new Set(missing.map((tool) => debianPackages[tool] ?? tool))].join(" ")} (scripts/install.sh does)`);
  }
  return paths;
}

/** A decoded record or packet as the tests read them (dns-packet's own types hide `data` behind a union and omit `rcode`). */
export interface LooseRecord {
  name: string;
  type: string;
  ttl?: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  data?: any;
}
export interface LoosePacket {
  id?: number;
  rcode?: string;
  flag_tc?: boolean;
  flag_aa?: boolean;
  questions?: { name: string; type: string; class?: string }[];
  answers?: LooseRecord[];
  authorities?: LooseRecord[];
  additionals?: LooseRecord[];
}

export interface TestRecord {
  name: string;
  type: "A" | "AAAA" | "TXT";
  value: string;
  ttl?: number;
}

export interface RunningDnsServer {
  readonly port: number;
  readonly child: ChildProcess;
  output(): string;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<void>;
  /** SIGKILL (an upstream dying) and wait for the exit. */
  kill(): Promise<void>;
}

export function supervise(command: string, args: string[], port: number, dir: string): RunningDnsServer {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const end = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  return { port, child, output: () => output, stop: () => end("SIGTERM"), kill: () => end("SIGKILL") };
}

/** Waits until the server answers a query for `name` (bounded: 10 s). */
export async function waitForAnswer(server: RunningDnsServer, name: string, what: string, host = "127.0.0.1"): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (server.child.exitCode !== null) throw new Error(`${what} exited at start: ${server.output()}`);
    try {
      await udpQuery(server.port, name, "A", { timeoutMs: 300, host });
      return;
    } catch (error) {
      if (Date.now() > deadline) {
        await server.kill();
        throw new Error(`${what} did not answer on ${host}:${server.port} within 10 s: ${server.output()}`, { cause: error });
      }
    }
  }
}

/** The start of an unbound configuration for a test: one loopback address and port, in the foreground, in `dir`, no chroot, user or pid file. */
export function unboundServerLines(options: { host?: string; port: number; dir: string }): string[] {
  return [
    "server:",
    `  interface: ${options.host ?? "127.0.0.1"}`,
    `  port: ${options.port}`,
    "  do-ip6: no",
    "  do-daemonize: no",
    '  chroot: ""',
    '  username: ""',
    `  directory: "${options.dir}"`,
    '  pidfile: ""',
    "  use-syslog: no",
  ];
}

/**
 * unbound answering a static local zone per record's parent (`local-zone:
 * "<zone>." static`): NXDOMAIN with the zone's SOA for names it does not hold,
 * never a query to the Internet.
 */
export async function startUnbound(options: { port: number; records: TestRecord[]; zones?: string[]; threads?: number; host?: string }): Promise<RunningDnsServer> {
  const binary = requireTool("unbound");
  const dir = mkdtempSync(join(tmpdir(), "leafmesh-unbound-"));
  const zones = options.zones ?? [...new Set(options.records.map((record) => record.name.split(".").slice(1).join(".")))];
  const lines = [
    ...unboundServerLines({ host: options.host, port: options.port, dir }),
    "  verbosity: 0",
    `  num-threads: ${options.threads ?? 1}`,
    "  access-control: 127.0.0.0/8 allow",
    '  module-config: "iterator"',
    "  minimal-responses: yes",
    ...zones.flatMap((zone) => [`  local-zone: "${zone}." static`, `  local-data: "${zone}. 3600 IN SOA ns.${zone}. hostmaster.${zone}. 1 3600 600 86400 60"`]),
    ...options.records.map((record) => `  local-data: "${record.name}. ${record.ttl ?? 300} IN ${record.type} ${record.type === "TXT" ? JSON.stringify(record.value) : record.value}"`),
    "remote-control:",
    "  control-enable: no",
  ];
  const config = join(dir, "unbound.conf");
  writeFileSync(config, `${lines.join("\n")}\n`);
  const server = supervise(binary, ["-d", "-c", config], options.port, dir);
  await waitForAnswer(server, options.records[0]?.name ?? `probe.${zones[0]}`, "unbound", options.host);
  return server;
}

/** dnsmasq with `host-record`s only: no upstream, no /etc/hosts. */
export async function startDnsmasq(options: { port: number; records: TestRecord[]; ttl?: number }): Promise<RunningDnsServer> {
  const binary = requireTool("dnsmasq");
  const dir = mkdtempSync(join(tmpdir(), "leafmesh-dnsmasq-"));
  const config = join(dir, "dnsmasq.conf");
  writeFileSync(config, `${options.records.filter((record) => record.type !== "TXT").map((record) => `host-record=${record.name},${record.value}`).join("\n")}\n`);
  const server = supervise(
    binary,
    ["-k", "-C", config, "--no-resolv", "--no-hosts", "--no-poll", "-u", "root", "--pid-file=", `--port=${options.port}`, "--listen-address=127.0.0.1", "--bind-interfaces", `--local-ttl=${options.ttl ?? 300}`, "--cache-size=10000", "--dns-forward-max=1000"],
    options.port,
    dir,
  );
  await waitForAnswer(server, options.records[0]?.name ?? "probe.test", "dnsmasq");
  return server;
}

/** One question over UDP with dns-packet; rejects after the timeout. */
export function udpQuery(port: number, name: string, type: string, options: { timeoutMs?: number; host?: string; edns?: number; id?: number } = {}): Promise<LoosePacket> {
  const id = options.id ?? Math.floor(Math.random() * 65536);
  const packet = dnsPacket.encode({
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: type as "A", class: "IN" }],
    additionals: options.edns ? [{ type: "OPT", name: ".", udpPayloadSize: options.edns } as dnsPacket.Answer] : [],
  });
  return udpExchange(port, packet, { ...options, id });
}

/** Sends raw bytes over UDP and decodes the reply whose id matches. */
export function udpExchange(port: number, packet: Buffer, options: { timeoutMs?: number; host?: string; id?: number } = {}): Promise<LoosePacket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket("udp4");
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`no DNS reply from ${options.host ?? "127.0.0.1"}:${port} within ${options.timeoutMs ?? 2000} ms`));
    }, options.timeoutMs ?? 2000);
    socket.on("error", (error) => {
      clearTimeout(timer);
      socket.close();
      reject(error);
    });
    socket.on("message", (message) => {
      if (options.id !== undefined && message.readUInt16BE(0) !== options.id) return;
      clearTimeout(timer);
      socket.close();
      try {
        resolve(dnsPacket.decode(message) as LoosePacket);
      } catch (error) {
        reject(error);
      }
    });
    socket.send(packet, port, options.host ?? "127.0.0.1");
  });
}

/** Sends raw frames (already length-prefixed or not) over one TCP connection and collects `expected` replies. */
export function tcpExchange(port: number, bytes: Buffer, expected: number, timeoutMs = 3000): Promise<LoosePacket[]> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port });
    let buffered = Buffer.alloc(0);
    const replies: LoosePacket[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`got ${replies.length} of ${expected} TCP replies within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on("connect", () => socket.write(bytes));
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on("data", (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        replies.push(dnsPacket.decode(buffered.subarray(2, 2 + buffered.readUInt16BE(0))) as LoosePacket);
        buffered = buffered.subarray(2 + buffered.readUInt16BE(0));
      }
      if (replies.length >= expected) {
        clearTimeout(timer);
        socket.destroy();
        resolve(replies);
      }
    });
    socket.on("close", () => {
      if (replies.length < expected) {
        clearTimeout(timer);
        reject(Object.assign(new Error(`connection closed after ${replies.length} of ${expected} replies`), { replies }));
      }
    });
  });
}

export function frame(packet: Buffer): Buffer {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(packet.length);
  return Buffer.concat([length, packet]);
}

/** Runs real dig against 127.0.0.1:port (or `host`); returns its stdout. */
export function dig(port: number, args: string[], host = "127.0.0.1"): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("dig", [`@${host}`, "-p", String(port), "+time=2", "+tries=1", "+nocookie", ...args], { timeout: 15_000 }, (error, stdout, stderr) => {
      if (error && !stdout) reject(new Error(`dig ${args.join(" ")} failed: ${stderr || error.message}`));
      else resolve(stdout);
    });
  });
}

/** `dig +short`-style lines of the answer section. */
export async function digShort(port: number, name: string, type: string, extra: string[] = []): Promise<string[]> {
  const out = await dig(port, [name, type, "+short", ...extra].filter((arg) => arg !== ""));
  return out
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith(";"))
    .sort();
}

/** Status, flags and section counts from dig's comment lines. */
export function digHeader(output: string): { status: string; flags: string[]; answer: number; authority: number; additional: number } {
  const status = output.match(/status: (\w+)/)?.[1] ?? "none";
  const flags = output.match(/;; flags: ([a-z ]+);/)?.[1].trim().split(/\s+/) ?? [];
  const count = (section: string) => Number(output.match(new RegExp(`${section}: (\\d+)`))?.[1] ?? -1);
  return { status, flags, answer: count("ANSWER"), authority: count("AUTHORITY"), additional: count("ADDITIONAL") };
}
