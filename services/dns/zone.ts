/**
 * The cluster zone as a pure function of the catalog: `answerQuestion(catalog,
 * question, options)` answers a question under the cluster domain (or a PTR for
 * a cluster IP) following the Kubernetes DNS-Based Service Discovery
 * specification 1.1.0, with no socket in sight. The zone is derived from the
 * catalog once per catalog version and kept beside it, so that a question costs
 * one map lookup.
 *
 * ```ts
 * const reply = answerQuestion(feed.reader, { name: "web.shop.svc.cluster.local", type: "A" }, { clusterDomain: "cluster.local" });
 * reply?.rcode;    // "NOERROR"
 * reply?.answers;  // [{ name: "web.shop.svc.cluster.local", type: "A", ttl: 5, data: "10.96.0.10" }]
 * answerQuestion(reader, { name: "example.com", type: "A" }, options); // undefined: forward it
 * ```
 */
import { isIPv4, isIPv6 } from "node:net";
import type { Answer, SrvAnswer } from "dns-packet";
import type { CatalogReader, EndpointSlice, Service } from "../../bus/catalog.ts";

export interface ZoneOptions {
  /** @default "cluster.local" — the Kubernetes default; the agent's --cluster-domain. */
  clusterDomain?: string;
  /** @default 5 — seconds, as CoreDNS's kubernetes plugin: a changed catalog reaches clients' caches within seconds. */
  ttl?: number;
  /**
   * Services whose names answer SERVFAIL for now (bus/partition.ts: fail-closed while the node cannot
   * reach its upstream). Read when the zone is built: the catalog's version must move when it changes.
   */
  withheld?: (service: Service) => boolean;
}

export type QuestionType = "A" | "AAAA" | "CNAME" | "SRV" | "PTR" | "TXT" | "SOA" | "NS" | "ANY" | (string & {});

export interface ClusterQuestion {
  /** Any case, with or without the trailing dot. */
  name: string;
  type: QuestionType;
  /** @default "IN" */
  class?: string;
}

export interface ClusterReply {
  rcode: "NOERROR" | "NXDOMAIN" | "REFUSED" | "SERVFAIL";
  /** Always true: the agent is the authority for its cluster domain and cluster IPs. */
  authoritative: true;
  answers: Answer[];
  authorities: Answer[];
  additionals: Answer[];
}

/** The version of the specification implemented, served as TXT at `dns-version.<domain>` (spec §2.2). */
export const specVersion = "1.1.0";

interface NameRecords {
  a: string[];
  aaaa: string[];
  cname?: string;
  srv: { priority: number; weight: number; port: number; target: string }[];
  txt: string[];
}

export interface ClusterZone {
  domain: string;
  ttl: number;
  serial: number;
  /** Every name of the zone, lower case, no trailing dot; empty non-terminals hold no records. */
  names: Map<string, NameRecords>;
  /** Reverse names (`4.3.2.1.in-addr.arpa`, nibbles in ip6.arpa) to their targets. */
  pointers: Map<string, string[]>;
  /** `<svc>.<ns>.svc.<domain>` of withheld services (ZoneOptions.withheld): they and every name under them answer SERVFAIL. */
  withheld: Set<string>;
}

const emptyRecords = (): NameRecords => ({ a: [], aaaa: [], srv: [], txt: [] });

function normaliseDomain(domain: string): string {
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

/** Builds the zone of one catalog version. */
export function buildClusterZone(catalog: CatalogReader, options: ZoneOptions = {}): ClusterZone {
  const domain = normaliseDomain(options.clusterDomain ?? "cluster.local");
  const ttl = options.ttl ?? 5;
  const names = new Map<string, NameRecords>();
  const pointers = new Map<string, string[]>();
  const node = (name: string) => {
    let records = names.get(name);
    if (!records) names.set(name, (records = emptyRecords()));
    return records;
  };
  // Every ancestor inside the zone exists too (an empty non-terminal answers NODATA, RFC 8020).
  const nodeWithAncestors = (name: string) => {
    const records = node(name);
    let parent = name;
    while (parent.length > domain.length) {
      const dot = parent.indexOf(".");
      if (dot < 0) break;
      parent = parent.slice(dot + 1);
      if (names.has(parent)) break;
      node(parent);
    }
    return records;
  };
  const pointer = (ip: string, target: string) => {
    const reverse = reverseName(ip);
    if (!reverse) return;
    let targets = pointers.get(reverse);
    if (!targets) pointers.set(reverse, (targets = []));
    addUnique(targets, target);
  };

  const withheld = new Set<string>();
  node(domain);
  nodeWithAncestors(`svc.${domain}`);
  nodeWithAncestors(`dns-version.${domain}`).txt.push(specVersion);

  for (const service of catalog.services()) {
    const base = `${service.name}.${service.namespace}.svc.${domain}`.toLowerCase();
    if (options.withheld?.(service)) {
      withheld.add(base);
      continue;
    }
    const endpoints = service.headless && service.type !== "ExternalName" ? publishedEndpoints(service, catalog.slices(service.namespace, service.name)) : [];
    // Spec §2.4.1: a headless Service without ready endpoints answers NXDOMAIN, so its names do not exist.
    if (service.headless && service.type !== "ExternalName" && endpoints.length === 0) continue;
    const records = nodeWithAncestors(base);
    if (service.type === "ExternalName") {
      if (service.externalName) records.cname = normaliseDomain(service.externalName);
      continue;
    }
    const namedPorts = service.ports.filter((port) => port.name !== "");
    if (!service.headless) {
      for (const ip of service.clusterIPs) {
        if (isIPv4(ip)) addUnique(records.a, ip);
        else if (isIPv6(ip)) addUnique(records.aaaa, ip);
        else continue;
        pointer(ip, base);
      }
      for (const port of namedPorts) {
        nodeWithAncestors(`_${port.name}._${port.protocol}.${base}`.toLowerCase()).srv.push({ priority: 0, weight: 100, port: port.port, target: base });
      }
      continue;
    }
    for (const endpoint of endpoints) {
      const hostName = `${endpoint.label}.${base}`;
      const host = nodeWithAncestors(hostName);
      for (const address of endpoint.addresses) {
        const list = isIPv4(address) ? records.a : records.aaaa;
        addUnique(list, address);
        addUnique(isIPv4(address) ? host.a : host.aaaa, address);
        pointer(address, hostName);
      }
    }
    for (const port of namedPorts) {
      const srvName = `_${port.name}._${port.protocol}.${base}`.toLowerCase();
      const srv = nodeWithAncestors(srvName).srv;
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
  }
  return { domain, ttl, serial: catalog.version >>> 0, names, pointers, withheld };
}

const zoneCache = new WeakMap<CatalogReader, { version: number; key: string; zone: ClusterZone }>();

/** The zone of the catalog's current version, built at most once per version and options. */
export function clusterZone(catalog: CatalogReader, options: ZoneOptions = {}): ClusterZone {
  const key = `${options.clusterDomain ?? ""}|${options.ttl ?? ""}`;
  const cached = zoneCache.get(catalog);
  if (cached && cached.version === catalog.version && cached.key === key) return cached.zone;
  const zone = buildClusterZone(catalog, options);
  zoneCache.set(catalog, { version: catalog.version, key, zone });
  return zone;
}

function soaRecord(zone: ClusterZone): Answer {
  return {
    name: zone.domain,
    type: "SOA",
    class: "IN",
    ttl: zone.ttl,
    data: {
      mname: `ns.dns.${zone.domain}`,
      rname: `hostmaster.${zone.domain}`,
      serial: zone.serial,
      refresh: 7200,
      retry: 1800,
      expire: 86400,
      // RFC 2308 §4: resolvers cache a negative answer for min(SOA TTL, minimum).
      minimum: zone.ttl,
    },
  };
}

function recordsOf(zone: ClusterZone, name: string, records: NameRecords, type: string): { answers: Answer[]; additionals: Answer[] } {
  const ttl = zone.ttl;
  const answers: Answer[] = [];
  const additionals: Answer[] = [];
  if (records.cname) {
    // A CNAME owns its name alone (RFC 1034 §3.6.2): whatever the type, the answer is the alias.
    answers.push({ name, type: "CNAME", class: "IN", ttl, data: records.cname });
    return { answers, additionals };
  }
  const any = type === "ANY";
  if (type === "A" || any) for (const ip of records.a) answers.push({ name, type: "A", class: "IN", ttl, data: ip });
  if (type === "AAAA" || any) for (const ip of records.aaaa) answers.push({ name, type: "AAAA", class: "IN", ttl, data: ip });
  if (type === "TXT" || any) for (const text of records.txt) answers.push({ name, type: "TXT", class: "IN", ttl, data: text });
  if (type === "SRV" || any) {
    const seen = new Set<string>();
    for (const srv of records.srv) {
      answers.push({ name, type: "SRV", class: "IN", ttl, data: { priority: srv.priority, weight: srv.weight, port: srv.port, target: srv.target } } satisfies SrvAnswer);
      if (seen.has(srv.target)) continue;
      seen.add(srv.target);
      // Spec §2.4.2: the additional section may carry the targets' addresses.
      const target = zone.names.get(srv.target);
      if (!target) continue;
      for (const ip of target.a) additionals.push({ name: srv.target, type: "A", class: "IN", ttl, data: ip });
      for (const ip of target.aaaa) additionals.push({ name: srv.target, type: "AAAA", class: "IN", ttl, data: ip });
    }
  }
  if ((type === "SOA" || any) && name === zone.domain) answers.push(soaRecord(zone));
  return { answers, additionals };
}

/**
 * Spec §2.6 (deprecated, still required): `<a>-<b>-<c>-<d>.<ns>.pod.<zone>` has
 * the A record a.b.c.d for any namespace, as CoreDNS's "pods insecure"; IPv6
 * with dashes for colons (`fd00--1`) has the AAAA record.
 */
function podRecords(zone: ClusterZone, name: string): NameRecords | undefined {
  const suffix = `.pod.${zone.domain}`;
  if (!name.endsWith(suffix)) return name === `pod.${zone.domain}` ? emptyRecords() : undefined;
  const labels = name.slice(0, -suffix.length).split(".");
  if (labels.length === 1 && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(labels[0])) return emptyRecords(); // the namespace itself
  if (labels.length !== 2) return undefined;
  const v4 = labels[0].replaceAll("-", ".");
  if (isIPv4(v4)) return { ...emptyRecords(), a: [v4] };
  const v6 = labels[0].replaceAll("-", ":");
  if (isIPv6(v6)) return { ...emptyRecords(), aaaa: [v6] };
  return undefined;
}

function isUnder(name: string, zone: string): boolean {
  return name === zone || (name.length > zone.length && name.endsWith(zone) && name[name.length - zone.length - 1] === ".");
}

/**
 * The answer to one question, or undefined when the question is not the cluster's
 * to answer (a name outside the cluster domain, a reverse name of no cluster IP):
 * the server forwards those upstream.
 */
export function answerQuestion(catalog: CatalogReader, question: ClusterQuestion, options: ZoneOptions = {}): ClusterReply | undefined {
  const zone = clusterZone(catalog, options);
  return answerFromZone(zone, question.name.toLowerCase().replace(/\.$/, ""), question.type.toUpperCase(), (question.class ?? "IN").toUpperCase());
}

/** `<svc>.<ns>.svc.<domain>` of a name at or under a service's name, or undefined. */
function serviceBaseOf(name: string, domain: string): string | undefined {
  const labels = name.slice(0, name.length - domain.length - 1).split(".");
  if (labels.length < 3 || labels[labels.length - 1] !== "svc") return undefined;
  return `${labels.slice(-3).join(".")}.${domain}`;
}

/** `answerQuestion` on a built zone and a normalised name (lower case, no trailing dot), the server's hot path. */
export function answerFromZone(zone: ClusterZone, name: string, type: string, klass: string): ClusterReply | undefined {
  if (name.endsWith(".arpa")) {
    const targets = zone.pointers.get(name);
    if (!targets || klass !== "IN" || (type !== "PTR" && type !== "ANY")) return undefined;
    return {
      rcode: "NOERROR",
      authoritative: true,
      answers: targets.map((target) => ({ name, type: "PTR", class: "IN", ttl: zone.ttl, data: target })),
      authorities: [],
      additionals: [],
    };
  }
  if (!isUnder(name, zone.domain)) return undefined;
  if (klass !== "IN" && klass !== "ANY") return { rcode: "REFUSED", authoritative: true, answers: [], authorities: [], additionals: [] };
  if (zone.withheld.size > 0 && zone.withheld.has(serviceBaseOf(name, zone.domain) ?? "")) return { rcode: "SERVFAIL", authoritative: true, answers: [], authorities: [], additionals: [] };
  const records = zone.names.get(name) ?? podRecords(zone, name);
  if (!records) return { rcode: "NXDOMAIN", authoritative: true, answers: [], authorities: [soaRecord(zone)], additionals: [] };
  const { answers, additionals } = recordsOf(zone, name, records, type);
  // NOERROR with no answer is NODATA: the name exists, not with this type (RFC 2308 §2.2).
  return { rcode: "NOERROR", authoritative: true, answers, authorities: answers.length === 0 ? [soaRecord(zone)] : [], additionals };
}
