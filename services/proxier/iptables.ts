/**
 * The iptables backend: our own nat chain LEAFMESH-SERVICES, jumped to from OUTPUT
 * and PREROUTING, and the filter chain LEAFMESH-REJECT (a UDP service port with no
 * endpoints, from OUTPUT and FORWARD), their content replaced by one `iptables-restore --noflush` per
 * change (kube-proxy's way: the restore is atomic per table, and --noflush leaves
 * everyone else's rules alone); and the localnet guard (rules.ts), a filter chain
 * LEAFMESH-LOCALNET jumped to from INPUT, from prepare to remove.
 */
import { LeafmeshError } from "../../lib/errors.ts";
import { requireTool, runTool, runToolChecked, type BackendOptions, type InterceptBackend, type InterceptState } from "./backend.ts";
import { iptablesChain, iptablesCleanupInput, iptablesGuardChain, iptablesGuardInput, iptablesHooks, iptablesRejectChain, iptablesRejectHooks, iptablesRestoreInput, type InterceptRule } from "./rules.ts";

export class IptablesBackend implements InterceptBackend {
  readonly name = "iptables" as const;
  readonly #options: BackendOptions;

  constructor(options: BackendOptions = {}) {
    this.#options = options;
  }

  async prepare(): Promise<void> {
    await requireTool("iptables-restore", "iptables", "iptables");
    await requireTool("iptables-save", "iptables", "iptables");
    await this.#clean("nat");
    // The guard's chain is flushed and filled in one restore: a crashed run's guard is replaced, never missing.
    await runToolChecked(["iptables-restore", "--noflush", "-w", "5"], { ...this.#options, input: iptablesGuardInput() });
    await this.#hook("filter", "INPUT", iptablesGuardChain);
  }

  async #hook(table: string, hook: string, chain: string): Promise<void> {
    // -C first so a re-sync never adds a second jump.
    const present = await runTool(["iptables", "-w", "5", "-t", table, "-C", hook, "-j", chain], this.#options);
    if (present.code !== 0) await runToolChecked(["iptables", "-w", "5", "-t", table, "-I", hook, "1", "-j", chain], this.#options);
  }

  async #clean(table: "nat" | "filter"): Promise<void> {
    const dump = await runToolChecked(["iptables-save", "-t", table], this.#options);
    const input = iptablesCleanupInput(dump, table);
    if (!input) return;
    const result = await runTool(["iptables-restore", "--noflush", "-w", "5"], { ...this.#options, input });
    if (result.code !== 0) throw new LeafmeshError("PROXY_FAILED", `removing leafmesh iptables rules (${table}) failed: ${result.stderr.trim()}`);
  }

  async sync(rules: readonly InterceptRule[]): Promise<void> {
    await runToolChecked(["iptables-restore", "--noflush", "-w", "5"], { ...this.#options, input: iptablesRestoreInput(rules) });
    // The jumps go in after the chain exists.
    for (const hook of iptablesHooks) await this.#hook("nat", hook, iptablesChain);
    for (const hook of iptablesRejectHooks) await this.#hook("filter", hook, iptablesRejectChain);
  }

  async remove(): Promise<void> {
    // Both tables, even when one fails: a rule left behind would outlive the agent.
    const removed = await Promise.allSettled([this.#clean("nat"), this.#clean("filter")]);
    const failed = removed.find((result) => result.status === "rejected");
    if (failed) throw failed.reason;
  }

  async inspect(): Promise<InterceptState> {
    const dump = await runToolChecked(["iptables-save", "-t", "nat"], this.#options);
    const rules: string[] = [];
    let hooks = 0;
    for (const line of dump.split("\n")) {
      if (/^-A (OUTPUT|PREROUTING) .*-j LEAFMESH-/.test(line)) hooks++;
      const rule = /^-A LEAFMESH-SERVICES -d ([\d.]+)\/32 -p (\w+) .*--dport (\d+) .*--to-destination ([\d.]+:\d+)/.exec(line);
      if (rule) rules.push(`${rule[1]}:${rule[3]}/${rule[2].toUpperCase()} -> ${rule[4]}`);
    }
    const filter = await runToolChecked(["iptables-save", "-t", "filter"], this.#options);
    for (const line of filter.split("\n")) {
      const refused = /^-A LEAFMESH-REJECT -d ([\d.]+)\/32 -p (\w+) .*--dport (\d+) .*-j REJECT/.exec(line);
      if (refused) rules.push(`${refused[1]}:${refused[3]}/${refused[2].toUpperCase()} -> refused`);
    }
    const guard = filter.includes(`-A INPUT -j ${iptablesGuardChain}`) && filter.includes(`-A ${iptablesGuardChain} ! -s 127.0.0.0/8 -d 127.0.0.0/8`);
    return { rules: rules.sort(), hooks, guard };
  }
}
