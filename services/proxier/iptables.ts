/**
 * The iptables backend: our own nat chain LEAFMESH-SERVICES, jumped to from OUTPUT
 * and PREROUTING, its content replaced by one `iptables-restore --noflush` per
 * change (kube-proxy's way: the restore is atomic per table, and --noflush leaves
 * everyone else's rules alone).
 */
import { LeafmeshError } from "../../lib/errors.ts";
import { requireTool, runTool, runToolChecked, type BackendOptions, type InterceptBackend, type InterceptState } from "./backend.ts";
import { iptablesChain, iptablesCleanupInput, iptablesHooks, iptablesRestoreInput, type InterceptRule } from "./rules.ts";

export class IptablesBackend implements InterceptBackend {
  readonly name = "iptables" as const;
  readonly #options: BackendOptions;

  constructor(options: BackendOptions = {}) {
    this.#options = options;
  }

  async prepare(): Promise<void> {
    await requireTool("iptables-restore", "iptables", "iptables");
    await requireTool("iptables-save", "iptables", "iptables");
    await this.remove();
  }

  async sync(rules: readonly InterceptRule[]): Promise<void> {
    await runToolChecked(["iptables-restore", "--noflush", "-w", "5"], { ...this.#options, input: iptablesRestoreInput(rules) });
    // The jumps go in after the chain exists; -C first so a re-sync never adds a second jump.
    for (const hook of iptablesHooks) {
      const present = await runTool(["iptables", "-w", "5", "-t", "nat", "-C", hook, "-j", iptablesChain], this.#options);
      if (present.code === 0) continue;
      await runToolChecked(["iptables", "-w", "5", "-t", "nat", "-I", hook, "1", "-j", iptablesChain], this.#options);
    }
  }

  async remove(): Promise<void> {
    const dump = await runToolChecked(["iptables-save", "-t", "nat"], this.#options);
    const input = iptablesCleanupInput(dump);
    if (!input) return;
    const result = await runTool(["iptables-restore", "--noflush", "-w", "5"], { ...this.#options, input });
    if (result.code !== 0) throw new LeafmeshError("PROXY_FAILED", `removing leafmesh iptables rules failed: ${result.stderr.trim()}`);
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
    return { rules: rules.sort(), hooks };
  }
}
