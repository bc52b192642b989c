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
import { isIPv6 } from "node:net";
import { noProxyLabel, type CatalogReader } from "../../bus/catalog.ts";
import type { ListenerBinding } from "../../bus/events.ts";
import { ipv6ListenerCidr, ipv6ListenerPrefix, ipv6RefusalAddress } from "../../bus/ipv6-listeners.ts";

export type IpFamily = 4 | 6;


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
 * An IPv6 address in the one form the kernel tools print (RFC 5952: lower case, the longest zero run as ::), or
 * undefined for anything else: a zone ("fe80::1%eth0") or an embedded IPv4 form would break the whole restore or
 * nft transaction, and two spellings of one address would slip past the clash check into one nft map twice.
 */
export function canonicalIpv6(address: string): string | undefined {
  if (!isIPv6(address) || address.includes("%") || address.includes(".")) return undefined;
  return new URL(`http://[${address}]/`).hostname.slice(1, -1);
}

export function ruleFamily(rule: Pick<InterceptRule, "clusterIP">): IpFamily {
  return rule.clusterIP.includes(":") ? 6 : 4;
}

/** "198.19.0.1:80", "[fd00::1]:80": an address and port as the rules' text and the state's lines write them. */
export function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Rules for the bindings traffic reported, for services the catalog still holds and
 * does not label noproxy. Two service ports claiming one clusterIP:port/protocol
 * clash: the first by key keeps it, the other is reported (an nft map cannot hold
 * both, and iptables would silently shadow one). IPv6 cluster IPs get rules with
 * `ipv6` (the host has IPv6) when traffic has an IPv6 socket for the port
 * (bus/ipv6-listeners.ts); a cluster IP in leafmesh's own prefix never does.
 */
export function buildRules(
  bindings: readonly ListenerBinding[],
  options: { listenHost: string; catalog?: CatalogReader; ipv6?: boolean },
): { rules: InterceptRule[]; clashes: RuleClash[]; withoutIpv6Listener: string[] } {
  const byTarget = new Map<string, InterceptRule>();
  const clashes: RuleClash[] = [];
  /** Service ports with an IPv6 cluster IP that traffic has no IPv6 socket for (a TCP port off the shared listener). */
  const withoutIpv6Listener: string[] = [];
  const sorted = [...bindings].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const binding of sorted) {
    if (options.catalog) {
      const [namespace, rest] = binding.key.split("/");
      const service = options.catalog.service(namespace, rest?.split(":")[0] ?? "");
      if (!service || Object.hasOwn(service.labels, noProxyLabel)) continue;
    }
    // Written into nft and iptables inputs: nothing but a dotted quad, or an IPv6 address in canonical form, goes there.
    const listenHost = binding.listenerHost ?? options.listenHost;
    const listenHost6 = binding.listenerHost6 === undefined ? undefined : canonicalIpv6(binding.listenerHost6);
    const ipv6Listener = listenHost6?.startsWith(ipv6ListenerPrefix) && Number.isInteger(binding.listenerPort6) ? { listenHost: listenHost6, listenerPort: binding.listenerPort6! } : undefined;
    for (const given of binding.clusterIPs) {
      const clusterIP = ipv4.test(given) ? given : canonicalIpv6(given);
      if (clusterIP === undefined) continue;
      const family: IpFamily = clusterIP.includes(":") ? 6 : 4;
      // IPv6 rules only where the caller wants them (the host has IPv6) and traffic has an IPv6 socket for the port.
      if (family === 6 && options.ipv6 && !ipv6Listener) withoutIpv6Listener.push(binding.key);
      if (family === 6 && (!options.ipv6 || !ipv6Listener || clusterIP.startsWith(ipv6ListenerPrefix))) continue;
      if (family === 4 && !ipv4.test(listenHost)) continue;
      const to = family === 6 ? ipv6Listener! : { listenHost, listenerPort: binding.listenerPort };
      const target = `${hostPort(clusterIP, binding.port)}/${binding.protocol}`;
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
      byTarget.set(target, { key: binding.key, clusterIP, port: binding.port, protocol: binding.protocol, ...to, ...(refused ? { refused } : {}) });
    }
  }
  return { rules: [...byTarget.values()], clashes, withoutIpv6Listener };
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
export function iptablesRestoreInput(rules: readonly InterceptRule[], family: IpFamily = 4): string {
  const lines = ["*nat", `:${iptablesChain} - [0:0]`];
  const mine = rules.filter((rule) => ruleFamily(rule) === family);
  const host = family === 4 ? "/32" : "/128";
  for (const rule of mine) {
    // IPv6: a refused port is DNATed where the kernel itself answers port unreachable (ipv6RefusalAddress).
    if (rule.refused && family === 4) continue;
    const protocol = rule.protocol.toLowerCase();
    const [to, comment] = rule.refused ? [hostPort(ipv6RefusalAddress, rule.listenerPort), `${rule.key} has no endpoints`] : [hostPort(rule.listenHost, rule.listenerPort), rule.key];
    lines.push(`-A ${iptablesChain} -d ${rule.clusterIP}${host} -p ${protocol} -m ${protocol} --dport ${rule.port} -m comment --comment "${comment}" -j DNAT --to-destination ${to}`);
  }
  lines.push("COMMIT", "*filter", `:${iptablesRejectChain} - [0:0]`);
  for (const rule of mine) {
    if (!rule.refused || family === 6) continue;
    const protocol = rule.protocol.toLowerCase();
    lines.push(
      `-A ${iptablesRejectChain} -d ${rule.clusterIP}${host} -p ${protocol} -m ${protocol} --dport ${rule.port} -m comment --comment "${rule.key} has no endpoints" -j REJECT --reject-with ${family === 4 ? "icmp-port-unreachable" : "icmp6-port-unreachable"}`,
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
/** The same for IPv6: leafmesh's listener prefix (bus/ipv6-listeners.ts), routed local on lo, only from lo or DNAT. */
export const guardComment6 = `leafmesh: ${ipv6ListenerCidr} only from lo or DNAT`;

/** One `iptables-restore --noflush` input for the filter table: declaring the chain flushes it, then its one rule. */
export function iptablesGuardInput(family: IpFamily = 4): string {
  const rule =
    family === 4
      ? `! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment "${guardComment}"`
      : `! -i lo -d ${ipv6ListenerCidr} -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment "${guardComment6}"`;
  return [
    "*filter",
    `:${iptablesGuardChain} - [0:0]`,
    `-A ${iptablesGuardChain} ${rule} -j DROP`,
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
  // IPv6: a refused port maps to ipv6RefusalAddress, where the kernel answers port unreachable (IPv4: the udp_refused set).
  const elements = rules
    .filter((rule) => rule.protocol === protocol && (!rule.refused || ruleFamily(rule) === 6))
    .map((rule) => `${rule.clusterIP} . ${rule.port} : ${rule.refused ? ipv6RefusalAddress : rule.listenHost} . ${rule.listenerPort}`);
  return elements.length > 0 ? ` elements = { ${elements.join(", ")} }` : "";
}

function nftRefusedElements(rules: readonly InterceptRule[]): string {
  const elements = rules.filter((rule) => rule.protocol === "UDP" && rule.refused && ruleFamily(rule) === 4).map((rule) => `${rule.clusterIP} . ${rule.port}`);
  return elements.length > 0 ? ` elements = { ${elements.join(", ")} }` : "";
}

/**
 * One `nft -f` transaction: create-then-delete makes the delete safe when the table
 * is absent, and the new table replaces the old one atomically (no packet sees a
 * half-built ruleset).
 */
export function nftInput(rules: readonly InterceptRule[], family: IpFamily = 4): string {
  const mine = rules.filter((rule) => ruleFamily(rule) === family);
  const [table, addr, ip] = family === 4 ? ["ip", "ipv4_addr", "ip"] : ["ip6", "ipv6_addr", "ip6"];
  const map = (name: string, protocol: "TCP" | "UDP") =>
    `  map ${name} { type ${addr} . inet_service : ${addr} . inet_service;${nftElements(mine, protocol)} }`;
  const hook = (name: string, hook: string) =>
    [
      `  chain ${name} {`,
      // -100 is dstnat: where DNAT belongs in output and prerouting.
      `    type nat hook ${hook} priority -100; policy accept;`,
      `    meta l4proto tcp dnat ${ip} to ${ip} daddr . tcp dport map @tcp_services`,
      `    meta l4proto udp dnat ${ip} to ${ip} daddr . udp dport map @udp_services`,
      "  }",
    ].join("\n");
  // Refused UDP service ports (no endpoints): ICMP port unreachable, as iptablesRestoreInput's LEAFMESH-REJECT.
  const refuse = (name: string, hook: string) =>
    [
      `  chain ${name} {`,
      `    type filter hook ${hook} priority filter; policy accept;`,
      `    meta l4proto udp ${ip} daddr . udp dport @udp_refused reject with ${family === 4 ? "icmp" : "icmpv6"} type port-unreachable`,
      "  }",
    ].join("\n");
  return [
    `table ${table} ${nftTable} {}`,
    `delete table ${table} ${nftTable}`,
    `table ${table} ${nftTable} {`,
    map("tcp_services", "TCP"),
    map("udp_services", "UDP"),
    `  set udp_refused { type ${addr} . inet_service;${nftRefusedElements(mine)} }`,
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

export function nftGuardInput(family: IpFamily = 4): string {
  const table = family === 4 ? "ip" : "ip6";
  const match = family === 4 ? "ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8" : `ip6 daddr ${ipv6ListenerCidr} iifname != "lo"`;
  return [
    `table ${table} ${nftGuardTable} {}`,
    `delete table ${table} ${nftGuardTable}`,
    `table ${table} ${nftGuardTable} {`,
    "  chain input {",
    "    type filter hook input priority filter; policy accept;",
    // `ct status & dnat == 0`: not DNATed (nft prints it `ct status ! dnat`; `!= dnat` would compare the whole status).
    `    ${match} ct state != { established, related } ct status & dnat == 0 counter drop comment "${family === 4 ? guardComment : guardComment6}"`,
    "  }",
    "}",
    "",
  ].join("\n");
}

/** One family's tables (a run killed with IPv6 rules left ip6 ones too), both when no family is given. */
export function nftCleanupInput(family?: IpFamily): string {
  const tables = family === undefined ? ["ip", "ip6"] : [family === 4 ? "ip" : "ip6"];
  return tables.flatMap((table) => [nftTable, nftGuardTable].map((name) => `table ${table} ${name} {}\ndelete table ${table} ${name}\n`)).join("");
}
