/**
 * The agent's actors, built from its options: the one place that imports the
 * actor packages (`services/*`) and hands each its components (bus, catalog
 * feed, logger, registry). Actors still talk to each other only through the
 * bus; two things are handed across in-process (docs/architecture.md): the
 * tunnel's stream opener, to traffic, the SOCKS proxy and the gateway, and
 * traffic's Service-port opener, to the SOCKS proxy (its cluster-IP routing).
 */
import type { ActorFactory, StartedActor } from "./agent.ts";
import { createTrafficActor, LocalOnlyEndpoints, registerTrafficMetrics, type NodeTopology, type TrafficLimits } from "../services/traffic/index.ts";
import { busListenerSource, createProxierActor, registerProxierMetrics, type InterceptMode, type ListenerSource } from "../services/proxier/index.ts";
import { createDnsActor, ensureDummyInterface, type DummyInterface } from "../services/dns/index.ts";
import { describeError } from "../lib/errors.ts";
import { listenRefused } from "../lib/listen-errors.ts";
import type { NodeIdentity, ObserverAddress, StreamDialer } from "../services/tunnel/index.ts";
import type { ServicePortDialer } from "../bus/streams.ts";
import { linkActorToBus } from "../bus/actor-link.ts";
import { createSocksActor, registerSocksMetrics } from "../services/socks/index.ts";
import type { HostPort } from "../nats/render.ts";
// The access log's target is read with the options; the gateway itself (node:http2) loads only with --gateway.
import type { AccessLogTarget } from "../services/gateway/access-file.ts";
import { measureUpstreams } from "../nats/nearest.ts";
import { withSiteMembers, type UpstreamState } from "../bus/partition.ts";

/** The flags' defaults and checks (cli/ reaches the actors through roles/). */
export * from "./agent-flags.ts";

export interface AgentActorOptions {
  /** Where traffic listens (the proxier DNATs cluster IPs there). */
  proxyHost: string;
  intercept: InterceptMode;
  /** Where the DNS server listens; undefined: no DNS. */
  dns?: HostPort;
  clusterDomain: string;
  /** DNS upstreams; undefined: the node's resolv.conf. */
  upstreams?: string[];
  /** Where the SOCKS5 proxy for operators listens; undefined: no proxy. */
  socks?: HostPort;
  /** Who may use the SOCKS proxy (CIDR ranges). @default loopback only */
  socksClients?: string[];
  /** Admission of cluster-IP proxy connections and of SOCKS clients (defaults: services/traffic/capacity.ts, services/socks). */
  proxyLimits?: Partial<TrafficLimits>;
  /** How long an idle cluster-IP UDP flow is kept (services/traffic/udp-proxy.ts); undefined: its default. */
  udpIdleTimeoutMs?: number;
  socksLimits?: Partial<TrafficLimits>;
  /** The ingress gateway: where its listeners bind and the node's labels its Gateways select on; undefined: no gateway. */
  gateway?: { host: string; labels: Record<string, string>; accessLog?: AccessLogTarget };
  /** The node-to-node tunnel; undefined: off (endpoints on other nodes are dialled by IP). */
  tunnel?: {
    psk: string;
    listen: string[];
    site?: string;
    region?: string;
    observer?: ObserverAddress;
    mdns: boolean;
    ways?: { direct: boolean; punch: boolean; relay: boolean };
    /** With --keys: the node's certificate and key and the mesh CA; records and peers are then proven (services/tunnel/node-identity.ts). */
    identity?: NodeIdentity;
    /** With an identity: where streams on direct paths are served over TLS (services/tunnel/tls-streams.ts); undefined: all on libp2p. */
    tlsStreams?: HostPort;
    /** The leaf's upstream URLs (--hub), timed by `leafmesh netcheck`. */
    hubs?: string[];
    /** Streams one peer may have open at this node at once. */
    maxStreamsPerPeer?: number;
    /** Punches one peer may have under way at this node at once. */
    maxPunchesPerPeer?: number;
    /** Silence after which a relay channel is reset (services/tunnel/limits.ts defaultRelayIdleTimeoutMs). */
    relayIdleTimeoutMs?: number;
    /** Where the libp2p key is kept (in the data dir), so the node keeps its peer id across restarts (services/tunnel/peer-key.ts). */
    keyFile?: string;
  };
}

export function agentActors(options: AgentActorOptions): ActorFactory[] {
  // Handed across in-process: the tunnel's stream opener, and traffic's Service-port opener (to SOCKS, started after it).
  let dialer: StreamDialer | undefined;
  let servicePorts: ServicePortDialer | undefined;
  let topology: NodeTopology | undefined;
  let knownNodes: () => ReadonlySet<string> = () => new Set();
  // The partition policy under an edge site (bus/partition.ts): a node is of this site when it is this
  // node, or its record (signed with --keys) names this node's site. Read at each decision: DNS starts
  // before the tunnel, and records arrive later.
  const siteAware = (upstream: UpstreamState, node: string) =>
    withSiteMembers(upstream, (peer) => peer === node || (topology?.site !== undefined && topology.of(peer).site === topology.site));
  const tunnel: ActorFactory = async ({ bus, feed, log, node, connection, revocations }): Promise<StartedActor> => {
    const settings = options.tunnel!;
    // internalTrafficPolicy Local where the endpoint lives: a stream from another node for an endpoint only Local Services lead to is refused.
    const localOnly = new LocalOnlyEndpoints(feed, node);
    // Loaded only when the tunnel is on: it brings libp2p (~35 MiB resident in an agent without it, measured).
    const { createTunnelActor } = await import("../services/tunnel/index.ts");
    const actor = createTunnelActor({
      bus,
      log: log.child({ actor: "tunnel" }),
      node,
      nats: connection,
      psk: settings.psk,
      listen: settings.listen,
      site: settings.site,
      region: settings.region,
      observer: settings.observer,
      mdns: settings.mdns,
      ways: settings.ways,
      identity: settings.identity,
      tlsStreams: settings.tlsStreams,
      measureUpstreams: () => measureUpstreams(settings.hubs ?? []),
      maxStreamsPerPeer: settings.maxStreamsPerPeer,
      maxPunchesPerPeer: settings.maxPunchesPerPeer,
      relayIdleTimeoutMs: settings.relayIdleTimeoutMs,
      keyFile: settings.keyFile,
      // The mesh's revoked certificates (trust/revocations.ts): refused on every carrier, open streams cut.
      revocations,
      servedLocallyOnly: (target) => localOnly.refusal(target),
    });
    await actor.start().catch((error: unknown) => {
      localOnly.stop();
      throw error;
    });
    dialer = actor;
    // Where other nodes are and whether a path to them exists: traffic's topology tiers.
    topology = {
      site: settings.site,
      of: (peer) => ({ site: actor.directory?.get(peer)?.site, reachable: actor.pathTo(peer) !== "unreachable" }),
    };
    // Nodes known by name: those with a record in mesh-nodes, and those the tunnel is connected to and has
    // proven the name of (identify): LAN neighbours found by mDNS, which are all there is while the hub is away.
    knownNodes = () => {
      const names = new Set((actor.directory?.all() ?? []).map((record) => record.node));
      const host = actor.host;
      for (const peer of host?.libp2p.getPeers() ?? []) {
        const name = host?.nodeOf(peer.toString());
        if (name) names.add(name);
      }
      return names;
    };
    const others = () => [...knownNodes()].filter((name) => name !== node).sort();
    const paths = () => Object.fromEntries(others().map((name) => [name, actor.pathTo(name) ?? "none"]));
    // One row per known node for `leafmesh status`: where it is (from its record, when there is one), how this node reaches it.
    const peers = () =>
      others().map((name) => {
        const record = actor.directory?.get(name);
        const path = actor.pathDetail(name);
        return { node: name, site: record?.site ?? null, region: record?.region ?? null, nat: record?.nat ?? "unknown", path: path?.kind ?? "none", rttMs: path?.rttMs ?? null };
      });
    // Open relayed streams by peer: `status --tree` draws them under this node, whose parents in the tree carry them.
    const relays = () => {
      const peers = new Map<string, number>();
      for (const channel of actor.relay?.channels() ?? []) peers.set(channel.peer, (peers.get(channel.peer) ?? 0) + 1);
      return [...peers].map(([peer, streams]) => ({ peer, streams }));
    };
    const link = linkActorToBus({ bus, actorName: "tunnel", actor: actor.actor, detail: () => ({ nat: actor.nat, paths: paths(), relays: relays(), refused: actor.refusals() }) });
    return {
      name: "tunnel",
      actor: actor.actor,
      // untrusted: nodes whose record is not used, and why (with --keys: unsigned, another node's or CA's certificate, altered)
      // refused: limits (per peer) and revoked certificates refused or cut, by reason (peer-trust.ts)
      // versions: peers that run another leafmesh protocol level, and which side to upgrade (bus/protocol.ts)
      detail: () => {
        const { trust, versions } = actor.status();
        return { nat: actor.nat, paths: paths(), peers: peers(), untrusted: actor.directory?.refused() ?? {}, refused: { ...actor.refusals(), ...trust }, versions };
      },
      stop: async () => {
        link.stop();
        await actor.stop();
        localOnly.stop();
      },
    };
  };
  const traffic: ActorFactory = async ({ bus, feed, log, node, registry, upstream }): Promise<StartedActor> => {
    const actor = createTrafficActor({ bus, feed, log: log.child({ actor: "traffic" }), node, listenHost: options.proxyHost, dialer, topology, capacity: options.proxyLimits, udpIdleTimeoutMs: options.udpIdleTimeoutMs, upstream: siteAware(upstream, node) });
    await actor.start();
    servicePorts = actor.servicePorts;
    registerTrafficMetrics(registry, actor);
    // Status shows the first listeners (the full set is on the bus as `listeners` events).
    return { name: "traffic", actor: actor.actor, detail: () => ({ ...actor.stats(), listeners: actor.listeners(500), rejected: actor.rejected() }), stop: () => actor.stop() };
  };
  const proxier: ActorFactory = async ({ bus, feed, log, registry }): Promise<StartedActor> => {
    // Without interception the proxier applies nothing, so it does not follow traffic's listener sets: each
    // generation carries the whole set, and decoding the 5–17 of a fresh agent's load at 10,000 services was a sixth
    // of everything the agent allocated while loading (bench/profile/heap-sampling-preload.ts, issue 17).
    const listeners = options.intercept === "off" ? noListeners() : busListenerSource(bus);
    const proxierLog = log.child({ actor: "proxier" });
    let actor = createProxierActor({ bus, feed, log: proxierLog, intercept: options.intercept, listeners, listenHost: options.proxyHost });
    let source = listeners;
    try {
      await actor.start();
    } catch (error) {
      // A missing kernel tool must not take DNS, traffic and the tunnel down with it: say so, and run without interception.
      proxierLog.error({ err: describeError(error) }, `cluster-IP interception (${options.intercept}) cannot start; running without it: services stay reachable on the proxy listeners and through the SOCKS proxy`);
      listeners.close();
      source = noListeners();
      actor = createProxierActor({ bus, feed, log: proxierLog, intercept: "off", listeners: source, listenHost: options.proxyHost });
      await actor.start();
    }
    registerProxierMetrics(registry, actor);
    return {
      name: "proxier",
      actor: actor.actor,
      detail: () => ({ ...actor.stats() }),
      stop: async () => {
        await actor.stop();
        source.close();
      },
    };
  };
  const dns: ActorFactory = async ({ bus, feed, log, node, registry, upstream }): Promise<StartedActor> => {
    // EdgeMesh's link-local address (kubelet's clusterDNS) lives on a dummy interface the agent makes.
    let dummy: DummyInterface | undefined;
    if (options.dns!.host.startsWith("169.254.")) dummy = await ensureDummyInterface({ address: options.dns!.host });
    const dnsLog = log.child({ actor: "dns" });
    const actor = createDnsActor({ bus, feed, log: dnsLog, registry, listen: options.dns!, clusterDomain: options.clusterDomain, upstreams: options.upstreams, upstream: siteAware(upstream, node) });
    try {
      await actor.start(); // it says where it serves, for which domain, forwarding to which upstreams
    } catch (error) {
      if (dummy?.created) await dummy.remove(); // what this start made goes with it
      throw listenRefused("--dns", options.dns!, error, "another DNS server on this machine?") ?? error;
    }
    // Bound there: no other agent serves on a leftover address (a kill -9's), which is now this run's to remove.
    dummy?.adopt();
    return {
      name: "dns",
      actor: actor.actor,
      detail: () => ({ address: actor.address, ...actor.stats() }),
      stop: async () => {
        await actor.stop();
        await dummy?.remove();
      },
    };
  };
  const socks: ActorFactory = async ({ bus, feed, log, node, registry, upstream }): Promise<StartedActor> => {
    // A Service through SOCKS goes where this node's cluster IP sends it: traffic opens it (services/traffic/service-ports.ts).
    const actor = createSocksActor({ bus, feed, log: log.child({ actor: "socks" }), node, listen: options.socks!, dialer, servicePorts, upstream: siteAware(upstream, node), knownNodes: () => knownNodes(), clusterDomain: options.clusterDomain, limits: options.socksLimits, clients: options.socksClients });
    await actor.start();
    registerSocksMetrics(registry, actor);
    return { name: "socks", actor: actor.actor, detail: () => ({ address: actor.address, ...actor.stats() }), stop: () => actor.stop() };
  };
  const gateway: ActorFactory = async ({ bus, feed, log, node, registry }): Promise<StartedActor> => {
    // Loaded only with --gateway: node:http2, which the gateway serves on, is ~10 MiB of RSS an agent without one does not need.
    const { createGatewayActor, registerGatewayMetrics } = await import("../services/gateway/index.ts");
    const actor = createGatewayActor({ bus, feed, log: log.child({ actor: "gateway" }), node, labels: options.gateway!.labels, listenHost: options.gateway!.host, accessLog: options.gateway!.accessLog, dialer, topology });
    await actor.start();
    registerGatewayMetrics(registry, actor);
    return { name: "gateway", actor: actor.actor, detail: () => ({ ...actor.status() }), stop: () => actor.stop() };
  };
  return [...(options.dns ? [dns] : []), proxier, ...(options.tunnel ? [tunnel] : []), traffic, ...(options.socks ? [socks] : []), ...(options.gateway ? [gateway] : [])];
}

/** The listener source of a proxier that intercepts nothing: no set ever comes. */
function noListeners(): ListenerSource & { close(): void } {
  return { onListeners: () => () => undefined, listeners: () => [], close: () => undefined };
}
