/**
 * The network lab's primitive: network namespaces, veth pairs, bridges, addresses
 * and routes, commands and long-lived processes run inside a namespace, and a
 * teardown that removes everything it made. Needs root and `ip` (iproute2).
 *
 * Every name the lab makes (namespaces, host-side links, bridges) starts with its
 * prefix, so `cleanupPrefix(prefix)` can also remove what a crashed earlier run
 * left behind. Interface names are at most 15 characters (IFNAMSIZ - 1): keep the
 * prefix short (`lmpx-`) and the suffixes shorter.
 *
 * ```ts
 * const lab = await createLab({ prefix: "lmpx-" });  // also removes leftovers of that prefix
 * const client = await lab.namespace("cli");          // "lmpx-cli", loopback up
 * const server = await lab.namespace("srv");
 * const bridge = await lab.bridge("br0");             // "lmpx-br0" in the host namespace, up
 * await lab.link({ namespace: client, address: "198.18.1.2/24", bridge });  // veth: eth0 in cli, peer on the bridge
 * await lab.link({ namespace: server, address: "198.18.1.3/24", bridge });
 * await lab.veth({ a: client, b: server, nameA: "p0", nameB: "p0", addressA: "198.18.2.1/30", addressB: "198.18.2.2/30" });
 * await lab.route(client, "198.19.0.0/16", { device: "eth0" });
 * await lab.exec(client, ["ping", "-c1", "198.18.1.3"]);            // rejects with stderr on a non-zero exit
 * const child = lab.spawn(server, ["socat", "TCP-LISTEN:80,fork", "EXEC:cat"]); // killed by teardown
 * await lab.teardown();                                // kills children, deletes namespaces and links
 * ```
 *
 * A namespace is passed around as its full name (a string); the host namespace is
 * the string "host".
 */
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { runChecked, runCommand, type ExecResult } from "../lib/command.ts";
import { LeafmeshError } from "../lib/errors.ts";

export type NamespaceName = string;
/** The root (host) network namespace. */
export const hostNamespace = "host";

export { runChecked, runCommand, type ExecResult } from "../lib/command.ts";

/**
 * Checks that the lab can run here: root and the `ip` tool. Throws a message that
 * says what is missing (tests call it in beforeAll and fail with that message).
 */
export async function checkLabPrerequisites(extraTools: { tool: string; debianPackage: string }[] = []): Promise<void> {
  if (process.getuid?.() !== 0) throw new LeafmeshError("TOOL_MISSING", "the network lab needs root (network namespaces, veth, iptables)");
  for (const { tool, debianPackage } of [{ tool: "ip", debianPackage: "iproute2" }, ...extraTools]) {
    const found = await runCommand(["sh", "-c", `command -v ${tool}`]);
    if (found.code !== 0) throw new LeafmeshError("TOOL_MISSING", `${tool} is not installed: apt-get install -y ${debianPackage}`);
  }
}

/** The argv that runs `argv` inside a namespace (unchanged for the host). */
export function inNamespace(namespace: NamespaceName, argv: string[]): string[] {
  return namespace === hostNamespace ? argv : ["ip", "netns", "exec", namespace, ...argv];
}

/**
 * Removes every namespace and host link whose name starts with `prefix`, killing
 * the processes still inside those namespaces (a namespace lives on while a
 * process holds it, so deleting the name alone would leak it).
 */
export async function cleanupPrefix(prefix: string): Promise<void> {
  checkPrefix(prefix);
  const list = await runChecked(["ip", "netns", "list"]);
  for (const line of list.split("\n")) {
    const name = line.split(" ")[0];
    if (!name?.startsWith(prefix)) continue;
    await killNamespaceProcesses(name);
    await runCommand(["ip", "netns", "delete", name]);
  }
  const links = await runChecked(["ip", "-o", "link", "show"]);
  for (const line of links.split("\n")) {
    // "12: lmpx-br0: <...>" or "13: lmpx-h1@if12: <...>"
    const name = line.split(": ")[1]?.split("@")[0];
    if (name?.startsWith(prefix)) await runCommand(["ip", "link", "delete", name]);
  }
}

async function killNamespaceProcesses(namespace: NamespaceName): Promise<void> {
  const pids = await runCommand(["ip", "netns", "pids", namespace]);
  killPids(pids.stdout);
}

function killPids(list: string): void {
  for (const pid of list.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
    }
  }
}

function checkPrefix(prefix: string): void {
  // A short, specific prefix: cleanupPrefix("") would delete every namespace on the machine.
  if (!/^[a-z][a-z0-9]{1,6}-$/.test(prefix)) {
    throw new LeafmeshError("CONFIG_INVALID", `lab prefix '${prefix}' must be 2-7 lowercase letters or digits followed by '-' (e.g. "lmpx-")`);
  }
}

export interface LabOptions {
  /** Prefix of every name the lab makes, e.g. "lmpx-"; leftovers of it are removed on creation. */
  prefix: string;
}

export interface VethOptions {
  a: NamespaceName;
  b: NamespaceName;
  /** Interface names in a and b; a host-side name gets the prefix added. */
  nameA: string;
  nameB: string;
  /** CIDR addresses, e.g. "198.18.2.1/30"; none when omitted. */
  addressA?: string;
  addressB?: string;
}

export interface LinkOptions {
  namespace: NamespaceName;
  /** The bridge (a name from `lab.bridge`) the host-side end joins. */
  bridge: string;
  address?: string;
  /** @default "eth0" */
  name?: string;
}

export interface Lab {
  readonly prefix: string;
  /** Creates namespace `<prefix><name>` with loopback up; returns its full name. */
  namespace(name: string): Promise<NamespaceName>;
  /** Creates a bridge `<prefix><name>` in the host namespace, up; returns its full name. */
  bridge(name: string): Promise<string>;
  /** A veth pair between two namespaces (or a namespace and "host"), both ends up. */
  veth(options: VethOptions): Promise<void>;
  /** A namespace attached to a host bridge by a veth pair; returns the host-side name. */
  link(options: LinkOptions): Promise<string>;
  address(namespace: NamespaceName, device: string, cidr: string): Promise<void>;
  /** Adds a route: via a gateway, or straight out of a device. */
  route(namespace: NamespaceName, destination: string, next: { via?: string; device?: string }): Promise<void>;
  /** Runs a command in the namespace; rejects with stderr on a non-zero exit. */
  exec(namespace: NamespaceName, argv: string[], options?: { input?: string; timeoutMs?: number }): Promise<string>;
  /** Same, resolving with output and exit code whatever the code. */
  run(namespace: NamespaceName, argv: string[], options?: { input?: string; timeoutMs?: number }): Promise<ExecResult>;
  /**
   * Many at once, one `ip` process for all (each process costs this machine ~10 ms of CPU, more from a big parent):
   * namespaces `<prefix><name>`, loopback still down (bring it up in the namespace's `batch`).
   */
  namespaces(names: string[]): Promise<NamespaceName[]>;
  /** Bridges `<prefix><name>` in the host namespace, up, in one `ip` process; returns their full names. */
  bridges(names: string[]): Promise<string[]>;
  /**
   * Veth pairs, one `ip` process for all: `name` (default eth0, left down: set it up in the namespace's `batch`)
   * in the namespace, its peer on the host bridge, up. Returns the host-side names, in order.
   */
  links(links: { namespace: NamespaceName; bridge: string; name?: string }[]): Promise<string[]>;
  /** `ip` commands (argv after `ip`) in one `ip -batch` process, in the namespace; rejects on the first that fails. */
  batch(namespace: NamespaceName, commands: string[][]): Promise<void>;
  /** Starts a long-lived process in the namespace; teardown kills it. */
  spawn(namespace: NamespaceName, argv: string[], options?: SpawnOptions): ChildProcess;
  /** Kills spawned processes, deletes the namespaces and links made; safe to call twice. */
  teardown(): Promise<void>;
}

export async function createLab(options: LabOptions): Promise<Lab> {
  checkPrefix(options.prefix);
  await checkLabPrerequisites();
  await cleanupPrefix(options.prefix);
  const prefix = options.prefix;
  const namespaces: NamespaceName[] = [];
  const hostLinks: string[] = [];
  const children = new Set<ChildProcess>();
  let linkCounter = 0;

  const ip = (namespace: NamespaceName, args: string[]) => runChecked(inNamespace(namespace, ["ip", ...args]));
  const hostName = (name: string) => (name.startsWith(prefix) ? name : `${prefix}${name}`);
  const checkIfName = (name: string) => {
    if (name.length > 15) throw new LeafmeshError("CONFIG_INVALID", `interface name '${name}' is longer than 15 characters`);
    return name;
  };

  const lab: Lab = {
    prefix,
    async namespace(name) {
      const full = hostName(name);
      await runChecked(["ip", "netns", "add", full]);
      namespaces.push(full);
      await ip(full, ["link", "set", "lo", "up"]);
      return full;
    },
    async bridge(name) {
      const full = checkIfName(hostName(name));
      await runChecked(["ip", "link", "add", full, "type", "bridge"]);
      hostLinks.push(full);
      await runChecked(["ip", "link", "set", full, "up"]);
      return full;
    },
    async veth({ a, b, nameA, nameB, addressA, addressB }) {
      const deviceA = checkIfName(a === hostNamespace ? hostName(nameA) : nameA);
      const deviceB = checkIfName(b === hostNamespace ? hostName(nameB) : nameB);
      // Made in the host under unique temporary names, then moved: two namespaces may both want "eth0".
      const temporaryA = checkIfName(`${prefix}t${++linkCounter}a`);
      const temporaryB = checkIfName(`${prefix}t${linkCounter}b`);
      await runChecked(["ip", "link", "add", temporaryA, "type", "veth", "peer", "name", temporaryB]);
      for (const [temporary, namespace, device, address] of [
        [temporaryA, a, deviceA, addressA],
        [temporaryB, b, deviceB, addressB],
      ] as const) {
        if (namespace === hostNamespace) {
          await runChecked(["ip", "link", "set", temporary, "name", device]);
          hostLinks.push(device);
        } else {
          await runChecked(["ip", "link", "set", temporary, "netns", namespace, "name", device]);
        }
        if (address) await ip(namespace, ["address", "add", address, "dev", device]);
        await ip(namespace, ["link", "set", device, "up"]);
      }
    },
    async link({ namespace, bridge, address, name = "eth0" }) {
      const hostSide = `h${++linkCounter}`;
      await lab.veth({ a: namespace, b: hostNamespace, nameA: name, nameB: hostSide, addressA: address });
      const full = hostName(hostSide);
      await runChecked(["ip", "link", "set", full, "master", bridge]);
      return full;
    },
    async address(namespace, device, cidr) {
      await ip(namespace, ["address", "add", cidr, "dev", device]);
    },
    async route(namespace, destination, next) {
      const args = ["route", "add", destination];
      if (next.via) args.push("via", next.via);
      if (next.device) args.push("dev", next.device);
      await ip(namespace, args);
    },
    async namespaces(names) {
      const full = names.map(hostName);
      await runChecked(["ip", "-batch", "-"], { input: full.map((name) => `netns add ${name}\n`).join("") });
      namespaces.push(...full);
      return full;
    },
    async bridges(names) {
      const full = names.map((name) => checkIfName(hostName(name)));
      hostLinks.push(...full);
      await runChecked(["ip", "-batch", "-"], { input: full.map((name) => `link add ${name} type bridge\nlink set ${name} up\n`).join("") });
      return full;
    },
    async links(specs) {
      const hostSides = specs.map(() => checkIfName(hostName(`h${++linkCounter}`)));
      hostLinks.push(...hostSides);
      // Made straight in their namespaces (ip link add … netns), not made in the host and moved, as `veth` does.
      const lines = specs.map(({ namespace, bridge, name = "eth0" }, index) => `link add ${checkIfName(name)} netns ${namespace} type veth peer name ${hostSides[index]}\nlink set ${hostSides[index]} master ${bridge} up\n`);
      await runChecked(["ip", "-batch", "-"], { input: lines.join("") });
      return hostSides;
    },
    async batch(namespace, commands) {
      if (commands.length === 0) return;
      const argv = namespace === hostNamespace ? ["ip", "-batch", "-"] : ["ip", "-n", namespace, "-batch", "-"];
      await runChecked(argv, { input: commands.map((command) => `${command.join(" ")}\n`).join("") });
    },
    exec(namespace, argv, execOptions) {
      return runChecked(inNamespace(namespace, argv), execOptions);
    },
    run(namespace, argv, execOptions) {
      return runCommand(inNamespace(namespace, argv), execOptions);
    },
    spawn(namespace, argv, spawnOptions) {
      const full = inNamespace(namespace, argv);
      const child = spawn(full[0], full.slice(1), { stdio: ["ignore", "pipe", "pipe"], ...spawnOptions });
      children.add(child);
      child.once("exit", () => children.delete(child));
      return child;
    },
    async teardown() {
      await Promise.all(
        [...children].map(
          (child) =>
            new Promise<void>((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolve();
              child.once("exit", () => resolve());
              child.kill("SIGKILL");
            }),
        ),
      );
      children.clear();
      // One `ip` process per step for every namespace and link, not one per namespace or link (-force: go on past
      // one already gone, such as a veth's host end that left with its namespace).
      const made = namespaces.splice(0);
      if (made.length > 0) {
        const pids = await runCommand(["ip", "-force", "-batch", "-"], { input: made.map((namespace) => `netns pids ${namespace}\n`).join("") });
        killPids(pids.stdout);
        await runCommand(["ip", "-force", "-batch", "-"], { input: made.map((namespace) => `netns delete ${namespace}\n`).join("") });
      }
      const links = hostLinks.splice(0);
      if (links.length > 0) await runCommand(["ip", "-force", "-batch", "-"], { input: links.map((link) => `link delete ${link}\n`).join("") });
      // Anything made under the prefix that the lists above missed (a step that failed half-way).
      await cleanupPrefix(prefix);
    },
  };
  return lab;
}
