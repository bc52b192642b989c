/**
 * A route on `lo` for every intercepted cluster IP (IPv4 /32, IPv6 /128, `proto 76` so
 * they are ours to find and remove). The kernel routes a host process's packet
 * before the OUTPUT hook DNATs it to the traffic listener, so the route the
 * cluster IP takes decides two things:
 * - whether it can be reached at all: on a node with no default route (an
 *   offline site, an isolated plant network) connect() failed with ENETUNREACH
 *   before any rule was looked at;
 * - the size of what TCP sends: routed out of a LAN interface (MTU 1500) the
 *   client's socket sends 1,448-byte segments to a listener on `lo`; routed on
 *   `lo` (MTU 65,536) it sends what loopback does. Measured with iperf3 through
 *   the agent's listener, the two routes in alternating rounds on one lab
 *   (medians of 4): 5.1 Gbit/s via a veth, 5.9 via `lo`.
 * Packets of pods and forwarded traffic are DNATed in PREROUTING, before any
 * route lookup: these routes do not touch them. A cluster IP port that is not
 * intercepted was routed to nowhere before (a virtual address); it still is.
 *
 * With IPv6 it also holds what traffic's IPv6 sockets need (bus/ipv6-listeners.ts):
 * leafmesh's listener prefix routed `local` on lo (`proto 76`, table local) and its
 * listener address assigned to lo, from `prepareIpv6` to `remove`.
 *
 * ```ts
 * const routes = new ClusterRoutes({ namespace });
 * await routes.prepare();                          // leftovers of a crashed run removed
 * await routes.sync(["198.19.0.10", "fd00::10"]);     // one `ip -batch` per family for what changed
 * await routes.remove();                           // none left
 * ```
 */
import { ipv6ListenerAddress, ipv6ListenerCidr } from "../../bus/ipv6-listeners.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import { runTool, type BackendOptions } from "./backend.ts";

const families = [
  { flag: "-4", host: "/32", v6: false },
  { flag: "-6", host: "/128", v6: true },
] as const;

/** `ip -6` where the kernel has no IPv6 at all (ipv6.disable=1): nothing of ours can be there. */
const noIpv6 = /not supported|Address family/i;

/** The routing protocol number our routes carry (`ip route show proto 76`): unassigned in iproute2's rt_protos. */
export const routeProtocol = 76;

export class ClusterRoutes {
  readonly #options: BackendOptions;
  /** What the kernel held of ours at the last sync: its size for stats. */
  #current = new Set<string>();

  constructor(options: BackendOptions = {}) {
    this.#options = options;
  }

  get size(): number {
    return this.#current.size;
  }

  /** Removes what a run that did not stop cleanly left (kill -9). */
  async prepare(): Promise<void> {
    await this.remove();
  }

  /** Makes the kernel hold a route on `lo` for exactly these addresses (IPv4 and IPv6). */
  async sync(addresses: Iterable<string>): Promise<void> {
    const wanted = new Set(addresses);
    // Compared with what the kernel holds now, not with what was written last: a route someone else removed comes back.
    const held = new Set(await this.list());
    this.#current = held;
    let failure = "";
    for (const family of families) {
      const lines: string[] = [];
      for (const address of wanted) if (address.includes(":") === family.v6 && !held.has(address)) lines.push(`route replace ${address}${family.host} dev lo proto ${routeProtocol}`);
      for (const address of held) if (address.includes(":") === family.v6 && !wanted.has(address)) lines.push(`route del ${address}${family.host} dev lo proto ${routeProtocol}`);
      if (lines.length === 0) continue;
      // -force: one line that fails (a route someone else removed) does not stop the others; the exit code still says so.
      const result = await runTool(["ip", family.flag, "-force", "-batch", "-"], { ...this.#options, input: `${lines.join("\n")}\n` });
      if (result.code !== 0) failure ||= result.stderr.trim().split("\n")[0] ?? "";
    }
    if (!failure) {
      this.#current = wanted;
      return;
    }
    // Some line failed: what holds now is read back, not assumed.
    this.#current = new Set(await this.list());
    const missing = [...wanted].filter((address) => !this.#current.has(address));
    if (missing.length > 0) {
      throw new LeafmeshError("PROXY_FAILED", `could not route ${missing.length} cluster IP(s) on lo (first ${missing[0]}): ${failure}`);
    }
  }

  /** Our routes in the kernel now: the addresses, sorted (IPv4, then IPv6). */
  async list(): Promise<string[]> {
    const addresses: string[] = [];
    for (const family of families) {
      const result = await runTool(["ip", family.flag, "-o", "route", "show", "table", "main", "proto", String(routeProtocol)], this.#options);
      if (result.code !== 0 && family.v6 && noIpv6.test(result.stderr)) continue;
      if (result.code !== 0) throw new LeafmeshError("PROXY_FAILED", `ip ${family.flag} route show proto ${routeProtocol} failed: ${result.stderr.trim()}`);
      const found = result.stdout
        .split("\n")
        .map((line) => line.trim().split(/\s+/)[0]?.replace(/\/(32|128)$/, ""))
        .filter((address): address is string => Boolean(address));
      addresses.push(...found.sort());
    }
    return addresses;
  }

  /**
   * Routes leafmesh's IPv6 listener prefix `local` on lo and assigns its listener address to lo (bus/ipv6-listeners.ts).
   * Throws with the kernel's words when it cannot (IPv6 disabled on lo): the caller then leaves IPv6 alone.
   */
  async prepareIpv6(): Promise<void> {
    const lines = [`route replace local ${ipv6ListenerCidr} dev lo proto ${routeProtocol} table local`, `address replace ${ipv6ListenerAddress}/128 dev lo nodad`];
    const result = await runTool(["ip", "-6", "-batch", "-"], { ...this.#options, input: `${lines.join("\n")}\n` });
    if (result.code !== 0) throw new LeafmeshError("PROXY_FAILED", `could not route ${ipv6ListenerCidr} on lo: ${result.stderr.trim().split("\n")[0] ?? ""}`);
  }

  async remove(): Promise<void> {
    const result = await runTool(["ip", "-4", "route", "flush", "table", "main", "proto", String(routeProtocol)], this.#options);
    if (result.code !== 0) throw new LeafmeshError("PROXY_FAILED", `ip route flush proto ${routeProtocol} failed: ${result.stderr.trim()}`);
    // IPv6: cluster IPs' routes, the listener prefix and its address; where the kernel has no IPv6 there is nothing to remove.
    for (const argv of [
      ["ip", "-6", "route", "flush", "table", "main", "proto", String(routeProtocol)],
      ["ip", "-6", "route", "flush", "table", "local", "proto", String(routeProtocol)],
    ]) {
      const flushed = await runTool(argv, this.#options);
      if (flushed.code !== 0 && !noIpv6.test(flushed.stderr)) throw new LeafmeshError("PROXY_FAILED", `${argv.join(" ")} failed: ${flushed.stderr.trim()}`);
    }
    const held = await runTool(["ip", "-6", "-o", "address", "show", "dev", "lo", "to", `${ipv6ListenerAddress}/128`], this.#options);
    if (held.code === 0 && held.stdout.trim() !== "") {
      const deleted = await runTool(["ip", "-6", "address", "del", `${ipv6ListenerAddress}/128`, "dev", "lo"], this.#options);
      if (deleted.code !== 0) throw new LeafmeshError("PROXY_FAILED", `removing ${ipv6ListenerAddress} from lo failed: ${deleted.stderr.trim()}`);
    }
    this.#current.clear();
  }
}
