/**
 * The iptables backend: our own nat chain LEAFMESH-SERVICES, jumped to from OUTPUT
 * and PREROUTING, and the filter chain LEAFMESH-REJECT (a UDP service port with no
 * endpoints, from OUTPUT and FORWARD), their content replaced by one `iptables-restore --noflush` per
 * change (kube-proxy's way: the restore is atomic per table, and --noflush leaves
 * everyone else's rules alone); and the localnet guard (rules.ts), a filter chain
 * LEAFMESH-LOCALNET jumped to from INPUT, from prepare to remove. With IPv6 the
 * same chains again in ip6tables, for IPv6 cluster IPs (the guard there keeps
 * leafmesh's listener prefix, bus/ipv6-listeners.ts, closed to the network).
 */
import { ipv6ListenerCidr, ipv6RefusalAddress } from "../../bus/ipv6-listeners.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import { requireTool, runTool, runToolChecked, toolPresent, unlessNoIpv6, type BackendOptions, type InterceptBackend, type InterceptState, type PrepareOptions, type PrepareResult } from "./backend.ts";
import { hostPort, iptablesChain, iptablesCleanupInput, iptablesGuardChain, iptablesGuardInput, iptablesHooks, iptablesRejectChain, iptablesRejectHooks, iptablesRestoreInput, type InterceptRule, type IpFamily } from "./rules.ts";

/** One family's tools: iptables for IPv4, ip6tables for IPv6. */
class IptablesFamily {
  readonly family: IpFamily;
  readonly #tool: string;
  readonly #options: BackendOptions;

  constructor(family: IpFamily, options: BackendOptions) {
    this.family = family;
    this.#tool = family === 4 ? "iptables" : "ip6tables";
    this.#options = options;
  }

  get tool(): string {
    return this.#tool;
  }

  async guard(): Promise<void> {
    // The guard's chain is flushed and filled in one restore: a crashed run's guard is replaced, never missing.
    await runToolChecked([`${this.#tool}-restore`, "--noflush", "-w", "5"], { ...this.#options, input: iptablesGuardInput(this.family) });
    await this.#hook("filter", "INPUT", iptablesGuardChain);
  }

  async #hook(table: string, hook: string, chain: string): Promise<void> {
    // -C first so a re-sync never adds a second jump.
    const present = await runTool([this.#tool, "-w", "5", "-t", table, "-C", hook, "-j", chain], this.#options);
    if (present.code !== 0) await runToolChecked([this.#tool, "-w", "5", "-t", table, "-I", hook, "1", "-j", chain], this.#options);
  }

  async clean(table: "nat" | "filter"): Promise<void> {
    const dump = await runToolChecked([`${this.#tool}-save`, "-t", table], this.#options);
    const input = iptablesCleanupInput(dump, table);
    if (!input) return;
    const result = await runTool([`${this.#tool}-restore`, "--noflush", "-w", "5"], { ...this.#options, input });
    if (result.code !== 0) throw new LeafmeshError("PROXY_FAILED", `removing leafmesh ${this.#tool} rules (${table}) failed: ${result.stderr.trim()}`);
  }

  async sync(rules: readonly InterceptRule[]): Promise<void> {
    await runToolChecked([`${this.#tool}-restore`, "--noflush", "-w", "5"], { ...this.#options, input: iptablesRestoreInput(rules, this.family) });
    // The jumps go in after the chain exists.
    for (const hook of iptablesHooks) await this.#hook("nat", hook, iptablesChain);
    for (const hook of iptablesRejectHooks) await this.#hook("filter", hook, iptablesRejectChain);
  }

  async remove(): Promise<void> {
    // Both tables, even when one fails: a rule left behind would outlive the agent.
    const removed = await Promise.allSettled([this.clean("nat"), this.clean("filter")]);
    const failed = removed.find((result) => result.status === "rejected");
    if (failed) throw failed.reason;
  }

  async inspect(): Promise<{ rules: string[]; hooks: number; guard: boolean }> {
    const dump = await runToolChecked([`${this.#tool}-save`, "-t", "nat"], this.#options);
    const rules: string[] = [];
    let hooks = 0;
    const address = this.family === 4 ? "([\\d.]+)\\/32" : "([\\da-f:]+)\\/128";
    const dnat = new RegExp(`^-A LEAFMESH-SERVICES -d ${address} -p (\\w+) .*--dport (\\d+) .*--to-destination (\\S+)`);
    for (const line of dump.split("\n")) {
      if (/^-A (OUTPUT|PREROUTING) .*-j LEAFMESH-/.test(line)) hooks++;
      const rule = dnat.exec(line);
      if (rule) rules.push(`${hostPort(rule[1], Number(rule[3]))}/${rule[2].toUpperCase()} -> ${rule[4].startsWith(`[${ipv6RefusalAddress}]:`) ? "refused" : rule[4]}`);
    }
    const filter = await runToolChecked([`${this.#tool}-save`, "-t", "filter"], this.#options);
    const reject = new RegExp(`^-A LEAFMESH-REJECT -d ${address} -p (\\w+) .*--dport (\\d+) .*-j REJECT`);
    for (const line of filter.split("\n")) {
      const refused = reject.exec(line);
      if (refused) rules.push(`${hostPort(refused[1], Number(refused[3]))}/${refused[2].toUpperCase()} -> refused`);
    }
    const guardRule = this.family === 4 ? `-A ${iptablesGuardChain} ! -s 127.0.0.0/8 -d 127.0.0.0/8` : `-A ${iptablesGuardChain} -d ${ipv6ListenerCidr} ! -i lo`;
    const guard = filter.includes(`-A INPUT -j ${iptablesGuardChain}`) && filter.includes(guardRule);
    return { rules, hooks, guard };
  }
}

export class IptablesBackend implements InterceptBackend {
  readonly name = "iptables" as const;
  readonly #options: BackendOptions;
  readonly #v4: IptablesFamily;
  readonly #v6: IptablesFamily;
  /** IPv6 rules are kept (prepare was asked for them and ip6tables is there). */
  #ipv6 = false;

  constructor(options: BackendOptions = {}) {
    this.#options = options;
    this.#v4 = new IptablesFamily(4, options);
    this.#v6 = new IptablesFamily(6, options);
  }

  async prepare(options: PrepareOptions = {}): Promise<PrepareResult> {
    await requireTool("iptables-restore", "iptables", "iptables");
    await requireTool("iptables-save", "iptables", "iptables");
    await this.#v4.clean("nat");
    await this.#v4.guard();
    // A crashed run's IPv6 rules go whether or not this run wants IPv6.
    const ip6tables = (await toolPresent("ip6tables-restore", this.#options)) && (await toolPresent("ip6tables-save", this.#options));
    this.#ipv6 = false;
    if (!options.ipv6) {
      if (ip6tables) await unlessNoIpv6(this.#v6.remove(), undefined);
      return { ipv6: false };
    }
    if (ip6tables) await this.#v6.clean("nat");
    if (!ip6tables) return { ipv6: false, reason: "ip6tables is not installed (apt-get install -y iptables)" };
    await this.#v6.guard();
    this.#ipv6 = true;
    return { ipv6: true };
  }

  async sync(rules: readonly InterceptRule[]): Promise<void> {
    await this.#v4.sync(rules);
    if (this.#ipv6) await this.#v6.sync(rules);
  }

  async remove(): Promise<void> {
    const removed = await Promise.allSettled([this.#v4.remove(), (async () => (await toolPresent("ip6tables-save", this.#options)) && unlessNoIpv6(this.#v6.remove(), undefined))()]);
    this.#ipv6 = false;
    const failed = removed.find((result) => result.status === "rejected");
    if (failed) throw failed.reason;
  }

  async inspect(): Promise<InterceptState> {
    const v4 = await this.#v4.inspect();
    const v6 = (await toolPresent("ip6tables-save", this.#options)) ? await unlessNoIpv6(this.#v6.inspect(), undefined) : undefined;
    const rules = [...v4.rules, ...(v6?.rules ?? [])].sort();
    const ipv6 = v6 && (v6.hooks > 0 || v6.guard) ? { ipv6: { hooks: v6.hooks, guard: v6.guard } } : {};
    return { rules, hooks: v4.hooks, guard: v4.guard, ...ipv6 };
  }
}
