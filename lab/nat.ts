/**
 * The NAT lab: a WAN segment, a hub host on it, and sites behind routers that
 * NAT in each of the four ways of docs/nat.md, each site with one or more hosts. Built
 * on lab/netns.ts; every name starts with the prefix (default `lmtn-`) and every
 * address comes from 198.18.64.0/18, nothing routed out of the lab.
 *
 * Addresses: WAN 198.18.64.0/24 (hub .1 and .2, site routers .10+n); site n's
 * LAN 198.18.(64+n).0/24 (router .1, hosts .10, .11, ...).
 *
 * How each NAT type is made (iptables in the router's namespace):
 * - every type: MASQUERADE out of the WAN; new connections from the WAN to the
 *   router itself or past it are dropped (a real NAT drops unsolicited traffic;
 *   without this the router's own stack would answer with RSTs).
 * - full cone (NAT1): plus a DNAT of every inbound TCP connection to the first host.
 * - restricted cone (NAT2): the same DNAT, only from addresses the site has sent
 *   to (the `recent` match records each destination going out).
 * - port-restricted (NAT3): plain MASQUERADE (conntrack admits only replies,
 *   and a simultaneous open's SYN, which matches the outgoing SYN's entry).
 * - symmetric (NAT4): MASQUERADE --random-fully (a new random port per connection).
 * - blocked: the site cannot reach the hub at all (for "hub unreachable" tests).
 *
 * What a router does with unsolicited traffic from the WAN (`router`), as routers
 * in the field do, since a probe or a punch meets it:
 * - "drop" (default): drops it silently.
 * - "rst": answers a TCP SYN with an RST and UDP with ICMP port unreachable, from
 *   its own stack (OpenWrt's default REJECT on the WAN zone).
 * - "icmp": answers with ICMP port unreachable (REJECT's default).
 * - "linux": no filter at all on the router itself: a plain Linux router, whose
 *   kernel answers a SYN to a port nothing listens on with an RST.
 *
 * Double NAT (`cgnat`): the site router's WAN side sits in 100.64.n.0/24 behind a
 * carrier-grade NAT (`<prefix><name>c`), which NATs again onto the lab's WAN
 * (its own `cgnat` type, port-restricted by default, as carriers' are). The node
 * then sees the composition: the stricter of the two (`composedNat`).
 *
 * Links are veth pairs, as fast as the CPU moves bytes, unless `links` limits their
 * rate (a token bucket on both ends), like an edge site's uplink.
 *
 * ```ts
 * const lab = await buildNatLab({ sites: [{ name: "s1", nat: "full-cone", hosts: 1 }] });
 * lab.sites[0].hosts[0]; // { namespace: "lmtn-s1h1", address: "198.18.65.10" }
 * await lab.teardown();
 * ```
 */
import type { NatType } from "../bus/node-record.ts";
import { LeafmeshError } from "../lib/errors.ts";
import { checkLabPrerequisites, createLab, hostNamespace, type Lab, type NamespaceName } from "./netns.ts";

export type LabNat = Exclude<NatType, "unknown" | "none">;

/** What a router does with unsolicited traffic from its WAN side. */
export type RouterKind = "drop" | "rst" | "icmp" | "linux";

export interface SiteSpec {
  /** Short name (a few letters): namespaces are `<prefix><name>r` and `<prefix><name>h<k>`. */
  name: string;
  nat: LabNat;
  /** @default "drop" */
  router?: RouterKind;
  /** Put the site behind a carrier-grade NAT of this type too (100.64.0.0/10 between the two). */
  cgnat?: LabNat;
  /** @default 1 */
  hosts?: number;
  /** The site cannot reach the hub (its router drops everything towards the WAN's hub addresses). */
  hubBlocked?: boolean;
}

/** A link made as slow as a real one: a rate each way (a token bucket on both ends). */
export interface LinkShape {
  rateMbit: number;
}

/**
 * The qdisc (tc argv) that limits one end of a link to that rate. Pure, so it can be
 * read and tested. A token bucket (tbf), not netem: this machine's kernel has no
 * sch_netem (nor fq, fq_codel, cake), so the lab shapes rates but adds no delay.
 */
export function shapeCommand(device: string, shape: LinkShape): string[] {
  if (!(shape.rateMbit > 0) || !Number.isFinite(shape.rateMbit)) throw new LeafmeshError("CONFIG_INVALID", `a link shape needs a rate above 0 Mbit/s (got ${shape.rateMbit})`);
  // burst: veth hands over GSO segments of up to 64 KiB, and a bucket smaller than a segment drops it; latency 20 ms bounds the queue.
  return ["tc", "qdisc", "replace", "dev", device, "root", "tbf", "rate", `${shape.rateMbit}mbit`, "burst", "256kb", "latency", "20ms"];
}

export interface LabHost {
  namespace: NamespaceName;
  address: string;
}

export interface LabSite {
  spec: SiteSpec;
  router: NamespaceName;
  /** The site's public address on the lab's WAN (the CGNAT's, behind one). */
  routerWanAddress: string;
  /** The carrier-grade NAT in front of the site router, if any. */
  cgnat?: NamespaceName;
  /** The NAT type its hosts see from the WAN (composedNat of the router's and the CGNAT's). */
  effectiveNat: LabNat;
  hosts: LabHost[];
}

export interface NatLab {
  lab: Lab;
  hub: { namespace: NamespaceName; addresses: [string, string] };
  sites: LabSite[];
  /** Drops every packet to and from the hub host (cuts the relay and the fabric). */
  cutHub(): Promise<void>;
  teardown(): Promise<void>;
}

export const wanPrefix = "198.18.64";
export const hubAddresses: [string, string] = [`${wanPrefix}.1`, `${wanPrefix}.2`];

const strictness: LabNat[] = ["full-cone", "restricted-cone", "port-restricted", "symmetric"];

/** What hosts behind two NATs in a row see: the stricter of the two (a mapping that varies varies; a filter that filters filters). */
export function composedNat(inner: LabNat, outer: LabNat | undefined): LabNat {
  if (!outer) return inner;
  return strictness[Math.max(strictness.indexOf(inner), strictness.indexOf(outer))];
}

/** The iptables commands (argv lists) that make a router NAT one way. Pure, so the table can be read and tested. */
export function natRules(nat: LabNat, options: { wan: string; lan: string; firstHost: string; hubBlocked?: boolean; router?: RouterKind }): string[][] {
  const { wan, firstHost } = options;
  const rules: string[][] = [];
  if (options.hubBlocked) {
    for (const hub of hubAddresses) rules.push(["iptables", "-A", "FORWARD", "-d", hub, "-j", "DROP"]);
  }
  rules.push(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", wan, "-j", "MASQUERADE", ...(nat === "symmetric" ? ["--random-fully"] : [])]);
  if (nat === "full-cone") {
    rules.push(["iptables", "-t", "nat", "-A", "PREROUTING", "-i", wan, "-p", "tcp", "-j", "DNAT", "--to-destination", firstHost]);
  }
  if (nat === "restricted-cone") {
    rules.push(["iptables", "-t", "mangle", "-A", "POSTROUTING", "-o", wan, "-m", "recent", "--name", "lmcontacted", "--rdest", "--set"]);
    rules.push([
      "iptables", "-t", "nat", "-A", "PREROUTING", "-i", wan, "-p", "tcp",
      "-m", "recent", "--name", "lmcontacted", "--rcheck", "--rsource", "--seconds", "300",
      "-j", "DNAT", "--to-destination", firstHost,
    ]);
  }
  const unsolicited = (chain: "INPUT" | "FORWARD"): string[][] => {
    const match = ["iptables", "-A", chain, "-i", wan, "-m", "conntrack", "--ctstate", "NEW"];
    switch (options.router ?? "drop") {
      case "drop":
        return [[...match, "-j", "DROP"]];
      case "rst":
        return [
          [...match.slice(0, 5), "-p", "tcp", ...match.slice(5), "-j", "REJECT", "--reject-with", "tcp-reset"],
          [...match, "-j", "REJECT", "--reject-with", "icmp-port-unreachable"],
        ];
      case "icmp":
        return [[...match, "-j", "REJECT", "--reject-with", "icmp-port-unreachable"]];
      case "linux":
        // Nothing on the router's own input: its kernel answers what reaches no socket (RST, ICMP).
        return chain === "INPUT" ? [] : [[...match, "-j", "DROP"]];
    }
  };
  rules.push(...unsolicited("INPUT"));
  rules.push(["iptables", "-A", "FORWARD", "-i", wan, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"]);
  rules.push(...unsolicited("FORWARD"));
  return rules;
}

/**
 * The rules of `natRules` as one iptables-restore input (appended, nothing flushed): a router's whole table in one
 * process instead of one `iptables` per rule. Each table's rules keep their order.
 */
export function restoreInput(rules: string[][]): string {
  const tables = new Map<string, string[]>();
  for (const rule of rules) {
    const [table, args] = rule[1] === "-t" ? [rule[2], rule.slice(3)] : ["filter", rule.slice(1)];
    tables.set(table, [...(tables.get(table) ?? []), args.join(" ")]);
  }
  return [...tables].map(([table, lines]) => `*${table}\n${lines.join("\n")}\nCOMMIT\n`).join("");
}

export async function buildNatLab(options: {
  prefix?: string;
  sites: SiteSpec[];
  /** Shapes (none: veth as fast as the CPU moves it): `wan` each site router's uplink, `lan` each host's link to its site's LAN. */
  links?: { wan?: LinkShape; lan?: LinkShape };
}): Promise<NatLab> {
  await checkLabPrerequisites([{ tool: "iptables", debianPackage: "iptables" }]);
  if (options.sites.length > 60) throw new LeafmeshError("CONFIG_INVALID", "the NAT lab has room for 60 sites (198.18.65-124.0/24)");
  const lab = await createLab({ prefix: options.prefix ?? "lmtn-" });
  try {
    // Planned first, then made in a few processes: every namespace and bridge in one `ip`, every veth in one, each
    // namespace's addresses and routes in one, each router's forwarding and NAT table in one. Made one command a
    // process, an eleven-site lab ran ~600 processes, ~13 s of CPU on this machine.
    const full = (name: string) => `${lab.prefix}${name}`;
    const hub = full("hub");
    const namespaceNames: NamespaceName[] = [hub];
    const bridgeNames: string[] = ["wan"];
    const links: { namespace: NamespaceName; bridge: string; name?: string; shape?: LinkShape }[] = [];
    const commands = new Map<NamespaceName, string[][]>();
    const routers: { namespace: NamespaceName; rules: string[][] }[] = [];
    /** Adds a veth from the namespace to the bridge, up, with its address: the namespace side's commands. */
    const attach = (namespace: NamespaceName, bridge: string, address: string, name = "eth0", shape?: LinkShape) => {
      links.push({ namespace, bridge: full(bridge), name, shape });
      commandsOf(namespace).push(["link", "set", name, "up"], ["address", "add", address, "dev", name]);
    };
    const commandsOf = (namespace: NamespaceName) => {
      if (!commands.has(namespace)) commands.set(namespace, [["link", "set", "lo", "up"]]);
      return commands.get(namespace)!;
    };
    attach(hub, "wan", `${hubAddresses[0]}/24`);
    commandsOf(hub).push(["address", "add", `${hubAddresses[1]}/24`, "dev", "eth0"]);
    const sites: LabSite[] = [];
    for (const [index, spec] of options.sites.entries()) {
      const n = index + 1;
      const lanPrefix = `198.18.${64 + n}`;
      const router = full(`${spec.name}r`);
      namespaceNames.push(router);
      let routerWanAddress = `${wanPrefix}.${10 + n}`;
      let cgnat: NamespaceName | undefined;
      if (spec.cgnat) {
        // The carrier's NAT on the WAN; the site router's uplink in the carrier's 100.64.n.0/24 behind it.
        cgnat = full(`${spec.name}c`);
        namespaceNames.push(cgnat);
        routerWanAddress = `${wanPrefix}.${100 + n}`;
        attach(cgnat, "wan", `${routerWanAddress}/24`, "wan", options.links?.wan);
        bridgeNames.push(`${spec.name}g`);
        attach(cgnat, `${spec.name}g`, `100.64.${n}.1/24`, "lan");
        attach(router, `${spec.name}g`, `100.64.${n}.2/24`, "wan");
        commandsOf(router).push(["route", "add", "default", "via", `100.64.${n}.1`]);
        commandsOf(cgnat).push(["route", "add", `198.18.${64 + n}.0/24`, "via", `100.64.${n}.2`]);
        // A carrier NAT forwards unsolicited traffic to no one: its DNAT (a cone) goes to the site router.
        routers.push({ namespace: cgnat, rules: natRules(spec.cgnat, { wan: "wan", lan: "lan", firstHost: `100.64.${n}.2`, hubBlocked: spec.hubBlocked }) });
      } else {
        attach(router, "wan", `${routerWanAddress}/24`, "wan", options.links?.wan);
      }
      bridgeNames.push(`${spec.name}l`);
      attach(router, `${spec.name}l`, `${lanPrefix}.1/24`, "lan");
      const hosts: LabHost[] = [];
      for (let k = 1; k <= (spec.hosts ?? 1); k++) {
        const namespace = full(`${spec.name}h${k}`);
        namespaceNames.push(namespace);
        const address = `${lanPrefix}.${9 + k}`;
        attach(namespace, `${spec.name}l`, `${address}/24`, "eth0", options.links?.lan);
        commandsOf(namespace).push(["route", "add", "default", "via", `${lanPrefix}.1`]);
        hosts.push({ namespace, address });
      }
      routers.push({ namespace: router, rules: natRules(spec.nat, { wan: "wan", lan: "lan", firstHost: hosts[0].address, hubBlocked: spec.hubBlocked, router: spec.router }) });
      sites.push({ spec, router, routerWanAddress, cgnat, effectiveNat: composedNat(spec.nat, spec.cgnat), hosts });
    }
    await lab.namespaces(namespaceNames);
    await lab.bridges(bridgeNames);
    const hostSides = await lab.links(links);
    await Promise.all([...commands].map(([namespace, list]) => lab.batch(namespace, list)));
    await Promise.all(
      routers.map(({ namespace, rules }) =>
        lab.exec(namespace, ["sh", "-c", "sysctl -qw net.ipv4.ip_forward=1 && iptables-restore --noflush"], { input: restoreInput(rules) }),
      ),
    );
    for (const [index, link] of links.entries()) {
      if (!link.shape) continue;
      await lab.exec(link.namespace, shapeCommand(link.name ?? "eth0", link.shape));
      await lab.exec(hostNamespace, shapeCommand(hostSides[index], link.shape));
    }
    return {
      lab,
      hub: { namespace: hub, addresses: hubAddresses },
      sites,
      async cutHub() {
        await lab.exec(hub, ["iptables", "-A", "INPUT", "-j", "DROP"]);
        await lab.exec(hub, ["iptables", "-A", "OUTPUT", "-j", "DROP"]);
      },
      teardown: () => lab.teardown(),
    };
  } catch (error) {
    await lab.teardown();
    throw error;
  }
}
