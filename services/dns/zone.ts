/**
 * The cluster zone as a pure function of the catalog: `answerQuestion(catalog,
 * question, options)` answers a question under the cluster domain (or a PTR for
 * a cluster IP) following the Kubernetes DNS-Based Service Discovery
 * specification 1.1.0, with no socket in sight. The zone is the sum of what
 * each Service puts into it (zone-records.ts), kept up to date one Service at a
 * time by the server (zone-index.ts), so that a question costs one map lookup.
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
import type { CatalogReader } from "../../bus/catalog.ts";
import { ZoneIndex } from "./zone-index.ts";
import { emptyRecords, nameserverName, type ClusterZone, type NameRecords, type ZoneOptions } from "./zone-records.ts";

export { buildClusterZone, ZoneIndex } from "./zone-index.ts";
export { endpointLabel, expandIPv6, reverseName, specVersion, type ClusterZone, type ZoneOptions } from "./zone-records.ts";

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

const zoneCache = new WeakMap<CatalogReader, { version: number; key: string; zone: ClusterZone }>();

/** The zone of the catalog's current version, built at most once per version and options (the pure path; the server keeps a ZoneIndex). */
export function clusterZone(catalog: CatalogReader, options: ZoneOptions = {}): ClusterZone {
  const key = `${options.clusterDomain ?? ""}|${options.ttl ?? ""}`;
  const cached = zoneCache.get(catalog);
  if (cached && cached.version === catalog.version && cached.key === key) return cached.zone;
  const index = new ZoneIndex(options);
  index.rebuild(catalog);
  index.zone.serial = catalog.version >>> 0;
  zoneCache.set(catalog, { version: catalog.version, key, zone: index.zone });
  return index.zone;
}

function soaRecord(zone: ClusterZone): Answer {
  return {
    name: zone.domain,
    type: "SOA",
    class: "IN",
    ttl: zone.ttl,
    data: {
      mname: nameserverName(zone.domain),
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
  if ((type === "NS" || any) && name === zone.domain) {
    // Every zone has NS records at its apex (RFC 1034 §4.2.1); a resolver that primes a stub zone asks for them.
    const target = nameserverName(zone.domain);
    answers.push({ name, type: "NS", class: "IN", ttl, data: target });
    const glue = zone.names.get(target);
    for (const ip of glue?.a ?? []) additionals.push({ name: target, type: "A", class: "IN", ttl, data: ip });
    for (const ip of glue?.aaaa ?? []) additionals.push({ name: target, type: "AAAA", class: "IN", ttl, data: ip });
  }
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
