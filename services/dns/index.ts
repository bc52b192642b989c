/**
 * services/dns: the cluster DNS of every node. Answers `<svc>.<ns>.svc.<domain>`
 * (A/AAAA, headless endpoints, ExternalName CNAME), `_<port>._<proto>` SRV,
 * endpoint hostnames and PTR for cluster and headless IPs from the catalog
 * mirror, following the Kubernetes DNS-Based Service Discovery spec 1.1.0, also
 * while the hub is away; forwards everything else upstream with a TTL cache,
 * negative caching, failover and serve-stale. UDP and TCP, EDNS0, TC over UDP.
 *
 * ```ts
 * import { createDnsActor } from "./services/dns/index.ts";
 * const dns = createDnsActor({ bus, feed, log, listen: { host: "169.254.96.16", port: 53 }, clusterDomain: "cluster.local", upstreams: ["10.0.0.2"] , registry });
 * await dns.start();   // DNS_FAILED when the address cannot be bound
 * dns.stats();         // { queries, udp, tcp, answers: {...}, drops: {...}, latencyMs: { p50, p99 }, ... }
 * await dns.stop();
 * ```
 *
 * The pure part, for tests and tools:
 *
 * ```ts
 * answerQuestion(reader, { name: "web.shop.svc.cluster.local", type: "A" }, { clusterDomain: "cluster.local" });
 * ```
 */
export { createDnsActor, dnsConfigSchema, resolveUpstreams, type DnsActor, type DnsActorOptions, type DnsConfig } from "./actor.ts";
export { answerQuestion, buildClusterZone, reverseName, specVersion, type ClusterQuestion, type ClusterReply, type ZoneOptions } from "./zone.ts";
export { DnsServer, type DnsServerOptions, type ListenAddress } from "./server.ts";
export { Forwarder, parseUpstream, upstreamsFromResolvConf, type ForwarderOptions, type Upstream } from "./forwarder.ts";
export { DnsStats, registerDnsMetrics } from "./stats.ts";
export { ensureDummyInterface, type DummyInterface, type DummyInterfaceOptions } from "./dummy-interface.ts";
