/**
 * The nftables backend: one table `ip leafmesh` with two maps (TCP and UDP) from
 * clusterIP . port to listenHost . listenerPort, and nat chains on output and
 * prerouting that DNAT through them; a set of refused UDP service ports (no
 * endpoints) that filter chains on output and forward reject with ICMP port
 * unreachable, as kube-proxy does. Each change is one `nft -f` transaction that
 * replaces the table: a map lookup costs the same for 10 services or 10,000. The
 * localnet guard (rules.ts) is a table of its own, `ip leafmesh-localnet`, from
 * prepare to remove. With IPv6 the same again as `ip6 leafmesh` and
 * `ip6 leafmesh-localnet`, in the same transaction.
 */
import { ipv6RefusalAddress } from "../../bus/ipv6-listeners.ts";
import { requireTool, runToolChecked, unlessNoIpv6, type BackendOptions, type InterceptBackend, type InterceptState, type PrepareOptions, type PrepareResult } from "./backend.ts";
import { hostPort, nftCleanupInput, nftGuardInput, nftGuardTable, nftInput, nftTable, type InterceptRule } from "./rules.ts";

type NftItem = Record<string, { family?: string; name?: string; table?: string; type?: string; hook?: string; elem?: unknown[] }>;

export class NftablesBackend implements InterceptBackend {
  readonly name = "nftables" as const;
  readonly #options: BackendOptions;
  #ipv6 = false;

  constructor(options: BackendOptions = {}) {
    this.#options = options;
  }

  async prepare(options: PrepareOptions = {}): Promise<PrepareResult> {
    await requireTool("nft", "nftables", "nftables");
    // One transaction per family: a crashed run's DNAT table goes, its guard is replaced, never missing in between.
    await runToolChecked(["nft", "-f", "-"], { ...this.#options, input: `table ip ${nftTable} {}\ndelete table ip ${nftTable}\n${nftGuardInput()}` });
    const ip6 = `table ip6 ${nftTable} {}\ndelete table ip6 ${nftTable}\n${options.ipv6 ? nftGuardInput(6) : `table ip6 ${nftGuardTable} {}\ndelete table ip6 ${nftGuardTable}\n`}`;
    const cleaned = runToolChecked(["nft", "-f", "-"], { ...this.#options, input: ip6 });
    // Without IPv6 wanted, a kernel without IPv6 (which refuses any ip6 table) has nothing of ours to remove.
    await (options.ipv6 ? cleaned : unlessNoIpv6(cleaned, ""));
    this.#ipv6 = options.ipv6 === true;
    return { ipv6: this.#ipv6 };
  }

  async sync(rules: readonly InterceptRule[]): Promise<void> {
    await runToolChecked(["nft", "-f", "-"], { ...this.#options, input: nftInput(rules) + (this.#ipv6 ? nftInput(rules, 6) : "") });
  }

  async remove(): Promise<void> {
    // IPv4 first, on its own: a kernel without IPv6 refuses the ip6 part, and the IPv4 tables must go all the same.
    await runToolChecked(["nft", "-f", "-"], { ...this.#options, input: nftCleanupInput(4) });
    await unlessNoIpv6(runToolChecked(["nft", "-f", "-"], { ...this.#options, input: nftCleanupInput(6) }), "");
    this.#ipv6 = false;
  }

  async inspect(): Promise<InterceptState> {
    const dump = await runToolChecked(["nft", "-j", "list", "ruleset"], this.#options);
    const parsed = JSON.parse(dump) as { nftables: NftItem[] };
    const rules: string[] = [];
    const hooks = { ip: 0, ip6: 0 };
    const guard = { ip: false, ip6: false };
    for (const item of parsed.nftables) {
      const family = (item.chain ?? item.set ?? item.map)?.family;
      if (family !== "ip" && family !== "ip6") continue;
      if (item.chain && item.chain.table === nftTable && item.chain.hook && item.chain.type === "nat") hooks[family]++;
      if (item.chain && item.chain.table === nftGuardTable && item.chain.hook === "input") guard[family] = true;
      const set = item.set;
      if (set && set.table === nftTable && set.name === "udp_refused") {
        for (const element of set.elem ?? []) {
          const key = element as { concat: [string, number] };
          rules.push(`${hostPort(key.concat[0], key.concat[1])}/UDP -> refused`);
        }
      }
      const map = item.map;
      if (!map || map.table !== nftTable || !map.name) continue;
      const protocol = map.name.startsWith("tcp") ? "TCP" : "UDP";
      for (const element of map.elem ?? []) {
        // [{ concat: [ip, port] }, { concat: [ip, port] }]
        const [key, value] = element as [{ concat: [string, number] }, { concat: [string, number] }];
        rules.push(`${hostPort(key.concat[0], key.concat[1])}/${protocol} -> ${value.concat[0] === ipv6RefusalAddress ? "refused" : hostPort(value.concat[0], value.concat[1])}`);
      }
    }
    const ipv6 = hooks.ip6 > 0 || guard.ip6 ? { ipv6: { hooks: hooks.ip6, guard: guard.ip6 } } : {};
    return { rules: rules.sort(), hooks: hooks.ip, guard: guard.ip, ...ipv6 };
  }
}
