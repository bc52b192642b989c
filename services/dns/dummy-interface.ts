/**
 * The node-local DNS address, as EdgeMesh does it: a dummy interface holding the
 * link-local 169.254.96.16/32, so that pods' resolv.conf can name one address on
 * every node and no real interface is touched. Idempotent: an existing interface
 * is reused and left in place on remove(); one this call created is deleted.
 * On a kernel without the dummy driver (some VMs and sandboxes) the address goes
 * on `lo` instead, which answers the same for local clients; remove() then takes
 * only the address away.
 *
 * What this makes is marked as leafmesh's (the interface's alias `leafmesh`, or the
 * address's label `lo:leafmesh`): after a kill -9 the next start found the
 * interface or address there, took it for the operator's, and left it on the host
 * for good at its clean stop. A marked one found at start is `leftover`; the caller
 * `adopt()`s it once it knows no other agent serves on it (its DNS socket bound
 * there), and remove() then takes it away as if this run had made it.
 *
 * ```ts
 * const dummy = await ensureDummyInterface();          // "leafmesh-dns" with 169.254.96.16/32, up
 * createDnsActor({ ..., listen: { host: dummy.address, port: 53 } });
 * if (dummy.leftover) dummy.adopt();                    // a crashed run's, now that our DNS server is bound on it
 * await dummy.remove();                                // only if ensureDummyInterface created it, or adopted
 * ```
 */
import { runCommand } from "../../lib/command.ts";
import { LeafmeshError } from "../../lib/errors.ts";

export interface DummyInterfaceOptions {
  /** @default "leafmesh-dns" — at most 15 characters (IFNAMSIZ). */
  name?: string;
  /** @default "169.254.96.16" — EdgeMesh's node-local DNS address, link-local so it never routes off the node. */
  address?: string;
  /** Work inside this network namespace (`ip -n`); the current one when omitted. */
  namespace?: string;
}

export interface DummyInterface {
  /** The interface holding the address: the dummy, or "lo" on a kernel without the dummy driver. */
  readonly name: string;
  readonly address: string;
  /** True when this call made the interface (and remove() will delete it). */
  readonly created: boolean;
  /** It was there, marked as made by a leafmesh run that did not remove it (a kill -9), or by one still running. */
  readonly leftover: boolean;
  /** Takes a leftover as this run's own: remove() deletes it. Only once no other agent uses it. */
  adopt(): void;
  remove(): Promise<void>;
}

/** The alias of a dummy interface leafmesh made, and the label (after `lo:`) of an address it put on lo. */
const mark = "leafmesh";

export async function ensureDummyInterface(options: DummyInterfaceOptions = {}): Promise<DummyInterface> {
  const name = options.name ?? "leafmesh-dns";
  const address = options.address ?? "169.254.96.16";
  if (name.length > 15) throw new LeafmeshError("CONFIG_INVALID", `dummy interface name '${name}' is longer than 15 characters`);
  const ip = (args: string[]) => runCommand(["ip", ...(options.namespace ? ["-n", options.namespace] : []), ...args]);
  const checked = async (args: string[]) => {
    const result = await ip(args);
    if (result.code !== 0) {
      throw new LeafmeshError("DNS_FAILED", `ip ${args.join(" ")} failed: ${result.stderr.trim()} (the agent needs root or CAP_NET_ADMIN to create the DNS interface)`);
    }
  };
  const shown = await ip(["-j", "link", "show", "dev", name]);
  const exists = shown.code === 0;
  const leftover = exists && (JSON.parse(shown.stdout) as { ifalias?: string }[])[0]?.ifalias === mark;
  if (!exists) {
    const added = await ip(["link", "add", name, "type", "dummy"]);
    if (added.code !== 0 && /Unknown device type/.test(added.stderr)) return onLoopback(address, ip, checked);
    if (added.code !== 0) await checked(["link", "add", name, "type", "dummy"]);
    await checked(["link", "set", name, "alias", mark]);
  }
  await checked(["addr", "replace", `${address}/32`, "dev", name]);
  await checked(["link", "set", name, "up"]);
  let ours = !exists;
  return {
    name,
    address,
    created: !exists,
    leftover,
    adopt() {
      if (leftover) ours = true;
    },
    async remove() {
      if (!ours) return;
      const result = await ip(["link", "del", name]);
      if (result.code !== 0 && !/Cannot find device/.test(result.stderr)) throw new LeafmeshError("DNS_FAILED", `ip link del ${name} failed: ${result.stderr.trim()}`);
    },
  };
}

/** The fallback: the address on lo, removed again only if this call added it. */
async function onLoopback(
  address: string,
  ip: (args: string[]) => ReturnType<typeof runCommand>,
  checked: (args: string[]) => Promise<void>,
): Promise<DummyInterface> {
  const line = (await ip(["-o", "addr", "show", "dev", "lo"])).stdout.split("\n").find((shown) => shown.includes(` ${address}/32 `));
  const present = line !== undefined;
  // `ip -o` ends the address's fields with its label and a backslash: "... scope global lo:leafmesh\       valid_lft ...".
  const leftover = line !== undefined && line.includes(` lo:${mark}\\`);
  // The label marks the address as ours (a label is the device's name, a colon and up to 15 characters in all).
  if (!present) await checked(["addr", "add", `${address}/32`, "dev", "lo", "label", `lo:${mark}`]);
  let ours = !present;
  return {
    name: "lo",
    address,
    created: !present,
    leftover,
    adopt() {
      if (leftover) ours = true;
    },
    async remove() {
      if (!ours) return;
      const result = await ip(["addr", "del", `${address}/32`, "dev", "lo"]);
      if (result.code !== 0 && !/Cannot assign requested address/.test(result.stderr)) throw new LeafmeshError("DNS_FAILED", `ip addr del ${address}/32 dev lo failed: ${result.stderr.trim()}`);
    },
  };
}
