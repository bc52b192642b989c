/**
 * A route on `lo` for every intercepted cluster IP (IPv4, /32, `proto 76` so
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
 * ```ts
 * const routes = new ClusterRoutes({ namespace });
 * await routes.prepare();                          // leftovers of a crashed run removed
 * await routes.sync(["198.19.0.10", "198.19.0.11"]); // one `ip -batch` for what changed
 * await routes.remove();                           // none left
 * ```
 */
import { LeafmeshError } from "../../lib/errors.ts";
import { runTool, type BackendOptions } from "./backend.ts";

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

  /** Makes the kernel hold a route on `lo` for exactly these IPv4 addresses. */
  async sync(addresses: Iterable<string>): Promise<void> {
    const wanted = new Set(addresses);
    // Compared with what the kernel holds now, not with what was written last: a route someone else removed comes back.
    const held = new Set(await this.list());
    this.#current = held;
    const lines: string[] = [];
    for (const address of wanted) if (!held.has(address)) lines.push(`route replace ${address}/32 dev lo proto ${routeProtocol}`);
    for (const address of held) if (!wanted.has(address)) lines.push(`route del ${address}/32 dev lo proto ${routeProtocol}`);
    if (lines.length === 0) return;
    // -force: one line that fails (a route someone else removed) does not stop the others; the exit code still says so.
    const result = await runTool(["ip", "-4", "-force", "-batch", "-"], { ...this.#options, input: `${lines.join("\n")}\n` });
    if (result.code === 0) {
      this.#current = wanted;
      return;
    }
    // Some line failed: what holds now is read back, not assumed.
    this.#current = new Set(await this.list());
    const missing = [...wanted].filter((address) => !this.#current.has(address));
    if (missing.length > 0) {
      throw new LeafmeshError("PROXY_FAILED", `could not route ${missing.length} cluster IP(s) on lo (first ${missing[0]}): ${result.stderr.trim().split("\n")[0] ?? ""}`);
    }
  }

  /** Our routes in the kernel now: the addresses, sorted. */
  async list(): Promise<string[]> {
    const result = await runTool(["ip", "-4", "-o", "route", "show", "table", "main", "proto", String(routeProtocol)], this.#options);
    if (result.code !== 0) throw new LeafmeshError("PROXY_FAILED", `ip route show proto ${routeProtocol} failed: ${result.stderr.trim()}`);
    return result.stdout
      .split("\n")
      .map((line) => line.trim().split(/\s+/)[0]?.replace(/\/32$/, ""))
      .filter((address): address is string => Boolean(address))
      .sort();
  }

  async remove(): Promise<void> {
    const result = await runTool(["ip", "-4", "route", "flush", "table", "main", "proto", String(routeProtocol)], this.#options);
    if (result.code !== 0) throw new LeafmeshError("PROXY_FAILED", `ip route flush proto ${routeProtocol} failed: ${result.stderr.trim()}`);
    this.#current.clear();
  }
}
