/**
 * The nftables backend: one table `ip leafmesh` with two maps (TCP and UDP) from
 * clusterIP . port to listenHost . listenerPort, and nat chains on output and
 * prerouting that DNAT through them; a set of refused UDP service ports (no
 * endpoints) that filter chains on output and forward reject with ICMP port
 * unreachable, as kube-proxy does. Each change is one `nft -f` transaction that
 * replaces the table: a map lookup costs the same for 10 services or 10,000. The
 * localnet guard (rules.ts) is a table of its own, `ip leafmesh-localnet`, from
 * prepare to remove.
 */
import { requireTool, runToolChecked, type BackendOptions, type InterceptBackend, type InterceptState } from "./backend.ts";
import { nftCleanupInput, nftGuardInput, nftGuardTable, nftInput, nftTable, type InterceptRule } from "./rules.ts";

export class NftablesBackend implements InterceptBackend {
  readonly name = "nftables" as const;
  readonly #options: BackendOptions;

  constructor(options: BackendOptions = {}) {
    this.#options = options;
  }

  async prepare(): Promise<void> {
    await requireTool("nft", "nftables", "nftables");
    // One transaction: a crashed run's DNAT table goes, its guard is replaced, never missing in between.
    await runToolChecked(["nft", "-f", "-"], { ...this.#options, input: `table ip ${nftTable} {}\ndelete table ip ${nftTable}\n${nftGuardInput()}` });
  }

  async sync(rules: readonly InterceptRule[]): Promise<void> {
    await runToolChecked(["nft", "-f", "-"], { ...this.#options, input: nftInput(rules) });
  }

  async remove(): Promise<void> {
    await runToolChecked(["nft", "-f", "-"], { ...this.#options, input: nftCleanupInput() });
  }

  async inspect(): Promise<InterceptState> {
    const dump = await runToolChecked(["nft", "-j", "list", "ruleset"], this.#options);
    const parsed = JSON.parse(dump) as { nftables: Record<string, { family?: string; name?: string; table?: string; type?: string; hook?: string; elem?: unknown[] }>[] };
    const rules: string[] = [];
    let hooks = 0;
    let guard = false;
    for (const item of parsed.nftables) {
      if (item.chain && item.chain.table === nftTable && item.chain.hook && item.chain.type === "nat") hooks++;
      const set = item.set;
      if (set && set.table === nftTable && set.name === "udp_refused") {
        for (const element of set.elem ?? []) {
          const key = element as { concat: [string, number] };
          rules.push(`${key.concat[0]}:${key.concat[1]}/UDP -> refused`);
        }
      }
      if (item.chain && item.chain.table === nftGuardTable && item.chain.hook === "input") guard = true;
      const map = item.map;
      if (!map || map.table !== nftTable || !map.name) continue;
      const protocol = map.name.startsWith("tcp") ? "TCP" : "UDP";
      for (const element of map.elem ?? []) {
        // [{ concat: [ip, port] }, { concat: [ip, port] }]
        const [key, value] = element as [{ concat: [string, number] }, { concat: [string, number] }];
        rules.push(`${key.concat[0]}:${key.concat[1]}/${protocol} -> ${value.concat[0]}:${value.concat[1]}`);
      }
    }
    return { rules: rules.sort(), hooks, guard };
  }
}
