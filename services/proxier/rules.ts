/**
 * The interception rules as data, and their text for each backend: pure functions,
 * so the backends only run a tool with a prepared input. A rule sends
 * clusterIP:port/protocol to the traffic listener at listenHost:listenerPort.
 *
 * ```ts
 * const { rules, clashes } = buildRules(bindings, { listenHost: "127.0.0.1", catalog });
 * iptablesRestoreInput(rules);  // "*nat\n:LEAFMESH-SERVICES - [0:0]\n-A LEAFMESH-SERVICES -d ..."
 * nftInput(rules);              // "table ip leafmesh {}\ndelete table ip leafmesh\ntable ip leafmesh { ... }"
 * ```
 */
import { noProxyLabel, type CatalogReader } from "../../bus/catalog.ts";
import type { ListenerBinding } from "../../bus/events.ts";


export interface InterceptRule {
  /** The service port it serves, "namespace/name:portName/PROTOCOL". */
  key: string;
  clusterIP: string;
  port: number;
  protocol: "TCP" | "UDP";
  listenHost: string;
  listenerPort: number;
  /** A UDP service port with no endpoints: rejected with ICMP port unreachable instead of DNATed (kube-proxy's REJECT). */
  refused?: boolean;
}

export interface RuleClash {
  clusterIP: string;
  port: number;
  protocol: string;
  kept: string;
  dropped: string;
  error: string;
}

const ipv4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * Rules for the bindings traffic reported, for services the catalog still holds and
 * does not label noproxy. Two service ports claiming one clusterIP:port/protocol
 * clash: the first by key keeps it, the other is reported (an nft map cannot hold
 * both, and iptables would silently shadow one).
 */
export function buildRules(bindings: readonly ListenerBinding[], options: { listenHost: string; catalog?: CatalogReader }): { rules: InterceptRule[]; clashes: RuleClash[] } {
  const byTarget = new Map<string, InterceptRule>();
  const clashes: RuleClash[] = [];
  const sorted = [...bindings].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const binding of sorted) {
    if (options.catalog) {
      const [namespace, rest] = binding.key.split("/");
      const service = options.catalog.service(namespace, rest?.split(":")[0] ?? "");
      if (!service || Object.hasOwn(service.labels, noProxyLabel)) continue;
    }
    // Written into nft and iptables inputs: nothing but a dotted quad goes there.
    const listenHost = binding.listenerHost ?? options.listenHost;
    if (!ipv4.test(listenHost)) continue;
    for (const clusterIP of binding.clusterIPs) {
      if (!ipv4.test(clusterIP)) continue; // IPv6 cluster IPs need ip6tables / an ip6 table: not yet
      const target = `${clusterIP}:${binding.port}/${binding.protocol}`;
      const kept = byTarget.get(target);
      if (kept) {
        clashes.push({
          clusterIP,
          port: binding.port,
          protocol: binding.protocol,
          kept: kept.key,
          dropped: binding.key,
          error: `${binding.key} claims ${target}, already taken by ${kept.key}: ${binding.key} is not intercepted there (fix the Services' clusterIP or port)`,
        });
        continue;
      }
      const refused = binding.protocol === "UDP" && binding.refused === true;
      byTarget.set(target, { key: binding.key, clusterIP, port: binding.port, protocol: binding.protocol, listenHost, listenerPort: binding.listenerPort, ...(refused ? { refused } : {}) });
    }
  }
  return { rules: [...byTarget.values()], clashes };
}

export const iptablesChain = "LEAFMESH-SERVICES";
/** Built-in nat chains that jump to ours: OUTPUT for this host's own clients, PREROUTING for pods and forwarded traffic. */
export const iptablesHooks = ["OUTPUT", "PREROUTING"] as const;
/**
 * The filter chain of refused service ports (a UDP service port with no endpoints), as kube-proxy's filter
 * KUBE-SERVICES: jumped to from OUTPUT (this host's clients) and FORWARD (pods: a cluster IP is routed on lo, so
 * their packets are forwarded). Not DNATed, the packet still holds the cluster IP there.
 */
export const iptablesRejectChain = "LEAFMESH-REJECT";
export const iptablesRejectHooks = ["OUTPUT", "FORWARD"] as const;

/**
 * One `iptables-restore --noflush` input: declaring our chains flushes them, then every rule is added; applied
 * atomically per table. A refused rule is a REJECT in the filter table instead of a DNAT.
 */
export function iptablesRestoreInput(rules: readonly InterceptRule[]): string {
  const lines = ["*nat", `:${iptablesChain} - [0:0]`];
  for (const rule of rules) {
    if (rule.refused) continue;
    const protocol = rule.protocol.toLowerCase();
    lines.push(
      `-A ${iptablesChain} -d ${rule.clusterIP}/32 -p ${protocol} -m ${protocol} --dport ${rule.port} -m comment --comment "${rule.key}" -j DNAT --to-destination ${rule.listenHost}:${rule.listenerPort}`,
    );
  }
  lines.push("COMMIT", "*filter", `:${iptablesRejectChain} - [0:0]`);
  for (const rule of rules) {
    if (!rule.refused) continue;
    const protocol = rule.protocol.toLowerCase();
    lines.push(
      `-A ${iptablesRejectChain} -d ${rule.clusterIP}/32 -p ${protocol} -m ${protocol} --dport ${rule.port} -m comment --comment "${rule.key} has no endpoints" -j REJECT --reject-with icmp-port-unreachable`,
    );
  }
  lines.push("COMMIT", "");
  return lines.join("\n");
}

/**
 * The localnet guard (kube-proxy's answer to CVE-2020-8558). DNAT from PREROUTING to a loopback listener needs
 * net.ipv4.conf.all.route_localnet=1, and with it the kernel no longer drops packets that arrive from the network
 * addressed to 127.0.0.0/8: a neighbour on the LAN that routes 127.0.0.0/8 to this node reaches everything bound to
 * loopback here (the node's nats-server, its monitor, traffic's listeners). The guard drops those packets in INPUT
 * unless they come from loopback or were DNATed (a cluster IP's traffic, which the rules send there on purpose).
 */
export const iptablesGuardChain = "LEAFMESH-LOCALNET";
export const guardComment = "leafmesh: 127.0.0.0/8 only from loopback or DNAT (route_localnet, CVE-2020-8558)";

/** One `iptables-restore --noflush` input for the filter table: declaring the chain flushes it, then its one rule. */
export function iptablesGuardInput(): string {
  return [
    "*filter",
    `:${iptablesGuardChain} - [0:0]`,
    `-A ${iptablesGuardChain} ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment "${guardComment}" -j DROP`,
    "COMMIT",
    "",
  ].join("\n");
}

/** Removes our jumps and chains from an `iptables-save -t <table>` dump, as one restore input (null when nothing is ours). */
export function iptablesCleanupInput(dump: string, table: "nat" | "filter" = "nat"): string | null {
  const deletes: string[] = [];
  const chains: string[] = [];
  for (const line of dump.split("\n")) {
    const chain = /^:(LEAFMESH-[A-Z0-9-]+) /.exec(line);
    if (chain) chains.push(chain[1]);
    else if (/^-A (?!LEAFMESH-)\S+ .*-j LEAFMESH-/.test(line)) deletes.push(line.replace(/^-A /, "-D "));
  }
  if (deletes.length === 0 && chains.length === 0) return null;
  return [`*${table}`, ...deletes, ...chains.map((chain) => `-F ${chain}`), ...chains.map((chain) => `-X ${chain}`), "COMMIT", ""].join("\n");
}

export const nftTable = "leafmesh";

function nftElements(rules: readonly InterceptRule[], protocol: "TCP" | "UDP"): string {
  const elements = rules.filter((rule) => rule.protocol === protocol && !rule.refused).map((rule) => `${rule.clusterIP} . ${rule.port} : ${rule.listenHost} . ${rule.listenerPort}`);
  return elements.length > 0 ? ` elements = { ${elements.join(", ")} }` : "";
}

function nftRefusedElements(rules: readonly InterceptRule[]): string {
  const elements = rules.filter((rule) => rule.protocol === "UDP" && rule.refused).map((rule) => `${rule.clusterIP} . ${rule.port}`);
  return elements.length > 0 ? ` elements = { ${elements.join(", ")} }` : "";
}

/**
 * One `nft -f` transaction: create-then-delete makes the delete safe when the table
 * is absent, and the new table replaces the old one atomically (no packet sees a
 * half-built ruleset).
 */
export function nftInput(rules: readonly InterceptRule[]): string {
  const map = (name: string, protocol: "TCP" | "UDP") =>
    `  map ${name} { type ipv4_addr . inet_service : ipv4_addr . inet_service;${nftElements(rules, protocol)} }`;
  const hook = (name: string, hook: string) =>
    [
      `  chain ${name} {`,
      // -100 is dstnat: where DNAT belongs in output and prerouting.
      `    type nat hook ${hook} priority -100; policy accept;`,
      "    meta l4proto tcp dnat ip to ip daddr . tcp dport map @tcp_services",
      "    meta l4proto udp dnat ip to ip daddr . udp dport map @udp_services",
      "  }",
    ].join("\n");
  // Refused UDP service ports (no endpoints): ICMP port unreachable, as iptablesRestoreInput's LEAFMESH-REJECT.
  const refuse = (name: string, hook: string) =>
    [`  chain ${name} {`, `    type filter hook ${hook} priority filter; policy accept;`, "    meta l4proto udp ip daddr . udp dport @udp_refused reject with icmp type port-unreachable", "  }"].join("\n");
  return [
    `table ip ${nftTable} {}`,
    `delete table ip ${nftTable}`,
    `table ip ${nftTable} {`,
    map("tcp_services", "TCP"),
    map("udp_services", "UDP"),
    `  set udp_refused { type ipv4_addr . inet_service;${nftRefusedElements(rules)} }`,
    hook("output", "output"),
    hook("prerouting", "prerouting"),
    refuse("refuse_output", "output"),
    refuse("refuse_forward", "forward"),
    "}",
    "",
  ].join("\n");
}

/** The localnet guard (above) as a table of its own: the DNAT table is replaced per sync, the guard stays from prepare to remove. */
export const nftGuardTable = "leafmesh-localnet";

export function nftGuardInput(): string {
  return [
    `table ip ${nftGuardTable} {}`,
    `delete table ip ${nftGuardTable}`,
    `table ip ${nftGuardTable} {`,
    "  chain input {",
    "    type filter hook input priority filter; policy accept;",
    // `ct status & dnat == 0`: not DNATed (nft prints it `ct status ! dnat`; `!= dnat` would compare the whole status).
    `    ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8 ct state != { established, related } ct status & dnat == 0 counter drop comment "${guardComment}"`,
    "  }",
    "}",
    "",
  ].join("\n");
}

export function nftCleanupInput(): string {
  return `table ip ${nftTable} {}\ndelete table ip ${nftTable}\ntable ip ${nftGuardTable} {}\ndelete table ip ${nftGuardTable}\n`;
}
