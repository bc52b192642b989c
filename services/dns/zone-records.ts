/**
 * What one Service puts into the cluster zone, as a pure function of the
 * Service and its EndpointSlices (Kubernetes DNS-Based Service Discovery 1.1.0):
 * its names and their records, and the reverse names (PTR) of its addresses.
 * The zone (zone-index.ts) is the sum of these, kept up to date one Service at a
 * time as the catalog changes.
 *
 * ```ts
 * const records = serviceZoneRecords(service, reader.slices("shop", "web"), "cluster.local");
 * records?.names; // ["web.shop.svc.cluster.local", { a: ["10.96.0.10"], … }, "_http._tcp.web.shop.svc.cluster.local", { srv: […] }, …]
 * ```
 */
import { isIPv4, isIPv6 } from "node:net";
import type { EndpointSlice, Service } from "../../bus/catalog.ts";

export interface ZoneOptions {
  /** @default "cluster.local" — the Kubernetes default; the agent's --cluster-domain. */
  clusterDomain?: string;
  /** @default 5 — seconds, as CoreDNS's kubernetes plugin: a changed catalog reaches clients' caches within seconds. */
  ttl?: number;
  /**
   * Services whose names answer SERVFAIL for now (bus/partition.ts: fail-closed while the node cannot
   * reach its upstream, or while its site is cut off and a backend is outside the site). Read when a
   * Service is (re)applied: its feed must say it changed when the answer does.
   */
  withheld?: (service: Service, slices: readonly EndpointSlice[]) => boolean;
}

export interface NameRecords {
  a: string[];
  aaaa: string[];
  cname?: string;
  srv: { priority: number; weight: number; port: number; target: string }[];
  txt: string[];
}

export interface ClusterZone {
  domain: string;
  ttl: number;
  /** Changes with every change of the zone (SOA serial). */
  serial: number;
  /** Every name of the zone, lower case, no trailing dot; empty non-terminals hold no records. */
  names: Map<string, NameRecords>;
  /** Reverse names (`4.3.2.1.in-addr.arpa`, nibbles in ip6.arpa) to their targets. */
  pointers: Map<string, string[]>;
  /** `<svc>.<ns>.svc.<domain>` of withheld services (ZoneOptions.withheld): they and every name under them answer SERVFAIL. */
  withheld: Set<string>;
}

/** The version of the specification implemented, served as TXT at `dns-version.<domain>` (spec §2.2). */
export const specVersion = "1.1.0";

/** The name of the zone's nameserver: the apex NS target and the SOA's MNAME (CoreDNS's kubernetes plugin uses the same). */
export const nameserverName = (domain: string): string => `ns.dns.${domain}`;

export const emptyRecords = (): NameRecords => ({ a: [], aaaa: [], srv: [], txt: [] });

/** The one empty list every finished record shares (frozen: a write to it throws). */
const none = Object.freeze([]) as unknown as never[];
/** The one finished record with nothing in it: every empty non-terminal (`_tcp.<base>`) of every Service. */
const nothing: NameRecords = Object.freeze({ a: none, aaaa: none, srv: none, txt: none });

/**
 * A Service's records once built: empty lists become the shared `none`, an empty name the shared `nothing`.
 * Most of a Service's names hold one kind of record or none (its own name A, `_port._tcp` SRV, `_tcp` nothing),
 * and four lists a name were a large part of the zone's memory.
 */
function finished(names: Map<string, NameRecords>): NamesAndRecords {
  const flat: NamesAndRecords = [];
  for (const [name, records] of names) {
    if (records.cname === undefined && records.a.length + records.aaaa.length + records.srv.length + records.txt.length === 0) {
      flat.push(name, nothing);
      continue;
    }
    if (records.a.length === 0) records.a = none;
    if (records.aaaa.length === 0) records.aaaa = none;
    if (records.srv.length === 0) records.srv = none;
    if (records.txt.length === 0) records.txt = none;
    flat.push(name, records);
  }
  return flat;
}

/**
 * Names and their records in one array, name then records: a Service's part of the zone is kept for every
 * Service, and a Map each (184 bytes empty) was about a third of it (570 bytes a Service in a heap snapshot
 * of an agent at 10,000 services).
 */
export type NamesAndRecords = (string | NameRecords)[];

export function normaliseDomain(domain: string): string {
  return domain.toLowerCase().replace(/^\.+|\.+$/g, "");
}

/** `10.0.0.1` → `1.0.0.10.in-addr.arpa`; IPv6 → 32 nibbles under ip6.arpa (RFC 3596 §2.5). */
export function reverseName(ip: string): string | undefined {
  if (isIPv4(ip)) return `${ip.split(".").reverse().join(".")}.in-addr.arpa`;
  if (!isIPv6(ip)) return undefined;
  const nibbles = expandIPv6(ip).replaceAll(":", "");
  return `${[...nibbles].reverse().join(".")}.ip6.arpa`;
}

/** The eight groups of an IPv6 address, four hex digits each. */
export function expandIPv6(ip: string): string {
  let text = ip.toLowerCase();
  // an embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups
  const v4 = text.match(/(\d+\.\d+\.\d+\.\d+)$/);
  if (v4) {
    const octets = v4[1].split(".").map(Number);
    text = text.slice(0, -v4[1].length) + `${((octets[0] << 8) | octets[1]).toString(16)}:${((octets[2] << 8) | octets[3]).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const headGroups = head ? head.split(":") : [];
  const tailGroups = tail ? tail.split(":") : [];
  const missing = 8 - headGroups.length - tailGroups.length;
  const groups = tail === undefined ? headGroups : [...headGroups, ...Array<string>(missing).fill("0"), ...tailGroups];
  return groups.map((group) => group.padStart(4, "0")).join(":");
}

/**
 * The DNS label of an endpoint that has no hostname: its address with dashes, as
 * CoreDNS names them (`10-1-2-3`, `fd00--1`), so that SRV targets always resolve.
 */
export function endpointLabel(hostname: string | undefined, address: string): string {
  if (hostname) return hostname.toLowerCase();
  return address.toLowerCase().replaceAll(".", "-").replaceAll(":", "-");
}

/** publishNotReadyAddresses, or the annotation that preceded it (spec §2.1 "ready"). */
function publishesNotReady(service: Service): boolean {
  return service.publishNotReadyAddresses || service.annotations["service.alpha.kubernetes.io/tolerate-unready-endpoints"] === "true";
}

/** Addresses a headless Service publishes: ready endpoints, plus the rest with publishNotReadyAddresses (spec §2.4.1). */
function publishedEndpoints(service: Service, slices: readonly EndpointSlice[]) {
  const out: { label: string; addresses: string[]; slice: EndpointSlice }[] = [];
  for (const slice of slices) {
    if (slice.addressType === "FQDN") continue;
    for (const endpoint of slice.endpoints) {
      if (!endpoint.conditions.ready && !publishesNotReady(service)) continue;
      const addresses = endpoint.addresses.filter((address) => (slice.addressType === "IPv4" ? isIPv4(address) : isIPv6(address)));
      if (addresses.length === 0) continue;
      out.push({ label: endpointLabel(endpoint.hostname, addresses[0]), addresses, slice });
    }
  }
  return out;
}

/** The port an endpoint serves for a Service port: the slice's port of that name and protocol (spec §2.4.2 "the endpoint's port"). */
function endpointPort(slice: EndpointSlice, name: string, protocol: string, fallback: number): number | undefined {
  if (slice.ports.length === 0) return fallback;
  const match = slice.ports.find((port) => port.name === name && port.protocol === protocol);
  if (!match) return undefined;
  return match.port ?? fallback;
}

function addUnique(list: string[], value: string): void {
  if (!list.includes(value)) list.push(value);
}

/** One Service's part of the zone. */
export interface ServiceRecords {
  /** Its names (its own empty non-terminals, such as `_tcp.<base>`, included), each owned by this Service alone, then its records. */
  names: NamesAndRecords;
  /** `<namespace>.svc.<domain>`: shared with the namespace's other Services. */
  namespaceName: string;
  /** Reverse name, target, reverse name, target, …: one pair for each address it publishes (several Services may publish one address). */
  pointers: string[];
}

/** The names and reverse names of one Service; undefined when it has none (a headless Service without ready endpoints, spec §2.4.1). */
export function serviceZoneRecords(service: Service, slices: readonly EndpointSlice[], domain: string): ServiceRecords | undefined {
  const namespaceName = `${service.namespace}.svc.${domain}`.toLowerCase();
  const base = `${service.name}.${namespaceName}`.toLowerCase();
  const headless = service.headless && service.type !== "ExternalName";
  const endpoints = headless ? publishedEndpoints(service, slices) : [];
  if (headless && endpoints.length === 0) return undefined;
  const names = new Map<string, NameRecords>();
  const pointers: string[] = [];
  // A name and its ancestors up to the Service's own name (an empty non-terminal answers NODATA, RFC 8020).
  const node = (name: string) => {
    let records = names.get(name);
    if (records) return records;
    names.set(name, (records = emptyRecords()));
    for (let parent = name.slice(name.indexOf(".") + 1); parent.length > base.length && !names.has(parent); parent = parent.slice(parent.indexOf(".") + 1)) names.set(parent, emptyRecords());
    return records;
  };
  const pointer = (ip: string, target: string) => {
    const reverse = reverseName(ip);
    if (!reverse) return;
    for (let index = 0; index < pointers.length; index += 2) if (pointers[index] === reverse && pointers[index + 1] === target) return;
    pointers.push(reverse, target);
  };
  const records = node(base);
  if (service.type === "ExternalName") {
    if (service.externalName) records.cname = normaliseDomain(service.externalName);
    return { names: finished(names), namespaceName, pointers };
  }
  const namedPorts = service.ports.filter((port) => port.name !== "");
  if (!headless) {
    for (const ip of service.clusterIPs) {
      if (isIPv4(ip)) addUnique(records.a, ip);
      else if (isIPv6(ip)) addUnique(records.aaaa, ip);
      else continue;
      pointer(ip, base);
    }
    for (const port of namedPorts) node(`_${port.name}._${port.protocol}.${base}`.toLowerCase()).srv.push({ priority: 0, weight: 100, port: port.port, target: base });
    return { names: finished(names), namespaceName, pointers };
  }
  for (const endpoint of endpoints) {
    const hostName = `${endpoint.label}.${base}`;
    const host = node(hostName);
    for (const address of endpoint.addresses) {
      addUnique(isIPv4(address) ? records.a : records.aaaa, address);
      addUnique(isIPv4(address) ? host.a : host.aaaa, address);
      pointer(address, hostName);
    }
  }
  for (const port of namedPorts) {
    const srv = node(`_${port.name}._${port.protocol}.${base}`.toLowerCase()).srv;
    const fallback = typeof port.targetPort === "number" ? port.targetPort : port.port;
    const targets = new Set<string>();
    for (const endpoint of endpoints) {
      const number = endpointPort(endpoint.slice, port.name, port.protocol, fallback);
      const target = `${endpoint.label}.${base}`;
      if (number === undefined || targets.has(`${target}:${number}`)) continue;
      targets.add(`${target}:${number}`);
      srv.push({ priority: 0, weight: 0, port: number, target });
    }
    // Equal weights that add up to about 100, as CoreDNS spreads them.
    for (const record of srv) record.weight = Math.max(1, Math.floor(100 / srv.length));
  }
  return { names: finished(names), namespaceName, pointers };
}
