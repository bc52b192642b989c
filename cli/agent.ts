/** `leafmesh agent`: the per-node agent (leaf nats-server + actors). */
import { commandSummaries } from "./command-list.ts";
import { join } from "node:path";
import { createLogger } from "../lib/log.ts";
import { startAgent } from "../roles/agent.ts";
import { defaultRelayChoiceSettings } from "../roles/relay-choice-settings.ts";
import { defaultScoreWeights } from "../nats/relay-score.ts";
import { resolveNodeSecurity, securityOptions } from "./security-options.ts";
import { dataDirectory, serverOptions, upstreamOrderOption, hubProxyOption } from "./server-options.ts";
import { defineCommand } from "./command.ts";
import { option, splitList } from "./options.ts";
import { checkNodeName } from "../bus/subjects.ts";
import { runUntilSignal } from "./run-until-signal.ts";
import { existsSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
import { LeafmeshError } from "../lib/errors.ts";
import { checkListenHost } from "../lib/listen-errors.ts";
import type { ObserverAddress } from "../services/tunnel/index.ts";
import type { AgentActorOptions } from "../roles/agent-actors.ts";
import { nodeIdentityPems } from "../trust/security.ts";
import { keepLocalNkeyFile } from "../trust/local-nkey-file.ts";
// What the flags need, from the modules that define it; the actors and the trust watches load once the node's
// nats-server is spawned (roles/server-process.ts), not before it (issue 17: a fresh node's start).
import { checkAccessLogFile, defaultSocksLimits, defaultTrafficLimits, defaultUdpIdleTimeoutMs, isLoopbackHost, lineageCheckMs, loopbackClients, parseAccessLogTarget, socksClients, type AccessLogTarget } from "../roles/agent-flags.ts";
import { interceptModes } from "../services/proxier/backend.ts";
import { holdInterception } from "../services/proxier/intercept-lock.ts";
import { checkDescriptorLimit } from "../lib/descriptor-limit.ts";
import { defaultMaxPunchesPerPeer, defaultMaxStreamsPerPeer, defaultRelayIdleTimeoutMs } from "../services/tunnel/limits.ts";
import type { HostPort } from "../nats/render.ts";

/** "198.18.64.1:3478,3479" → the observer's host and two ports. */
export function parseObserver(text: string): ObserverAddress {
  const match = /^(.+):(\d+),(\d+)$/.exec(text.trim());
  if (!match) throw new LeafmeshError("CONFIG_INVALID", `'${text}' is not HOST:PORT1,PORT2 (for example 198.18.64.1:3478,3479)`);
  return { host: match[1].replace(/^\[|\]$/g, ""), ports: [Number(match[2]), Number(match[3])] };
}

function parseWays(text: string): { direct: boolean; punch: boolean; relay: boolean } {
  const ways = splitList(text);
  const unknown = ways.filter((way) => !["direct", "punch", "relay"].includes(way));
  if (unknown.length > 0 || ways.length === 0) throw new LeafmeshError("CONFIG_INVALID", `'${text}' must list direct, punch and/or relay`);
  return { direct: ways.includes("direct"), punch: ways.includes("punch"), relay: ways.includes("relay") };
}

/** "site=shop-7,zone=a" → labels; a part without "=" is a mistake worth stopping for. */
export function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const part of splitList(text)) {
    const equals = part.indexOf("=");
    if (equals <= 0) throw new LeafmeshError("CONFIG_INVALID", `--node-labels: '${part}' is not KEY=VALUE`);
    labels[part.slice(0, equals).trim()] = part.slice(equals + 1).trim();
  }
  return labels;
}

/** --gateway's address: an IP address or a host name; its ports come from the Gateways' listeners, not from here. */
function gatewayHost(text: string): string {
  const host = text.trim();
  if (isIP(host) !== 0) return host;
  if (host.startsWith("[") && host.endsWith("]") && isIP(host.slice(1, -1)) === 6) return host.slice(1, -1);
  // IPv6 literals are taken above: what still ends in :digits is an address or a name with a port.
  if (/:\d+$/.test(host)) throw new LeafmeshError("CONFIG_INVALID", `--gateway: '${text}' has a port; give the address only (the Gateways' listeners say the ports)`);
  if (/^[\d.]+$/.test(host)) throw new LeafmeshError("CONFIG_INVALID", `--gateway: '${text}' is not an IPv4 address`);
  if (!/^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(host)) throw new LeafmeshError("CONFIG_INVALID", `--gateway: '${text}' is not an address or a host name`);
  return host;
}

/** --gateway-access-log, checked before anything starts: a file that cannot be appended to is refused with the reason. */
function gatewayAccessLog(text: string): AccessLogTarget {
  const target = parseAccessLogTarget(text);
  if (target.kind === "file") checkAccessLogFile(target.path);
  return target;
}

function readSecretFile(path: string, flag: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (cause) {
    throw new LeafmeshError("CONFIG_INVALID", `${flag}: cannot read ${path}`, { cause });
  }
}

/** The join token, from --join or from --join-file's file; never both. */
function joinToken(join: string | undefined, file: string | undefined): string | undefined {
  if (file === undefined) return join;
  if (join !== undefined) throw new LeafmeshError("CONFIG_INVALID", "--join and --join-file both give a token: give one of them");
  const token = readSecretFile(file, "--join-file").trim();
  if (token === "") throw new LeafmeshError("CONFIG_INVALID", `--join-file: ${file} is empty (expected a token from leafmesh keys token)`);
  return token;
}

export const agentCommand = defineCommand({
  name: "agent",
  summary: commandSummaries.agent,
  description: `
The agent runs a leaf nats-server (JetStream domain = node name) connected to
every --hub URL (it fails over between them by itself), mirrors the service
catalog into the node's own domain, and keeps serving it while the hubs are
unreachable. --hub URLs are the hubs' leafnode addresses (leafmesh hub
--leaf-listen), e.g. nats://hub-1:7422.`,
  configFile: true,
  options: {
    node: option.parsed({ required: true, value: "NAME", description: "node name: unique, lowercase letters, digits and '-' (the node's JetStream domain)" }, (text) => checkNodeName(text)),
    hub: option.list({ required: true, value: "URL,…", description: "leafnode URLs of every hub (or site server) to attach to" }),
    data: option.text({ required: true, value: "DIR", description: "directory for the leaf server's config and JetStream store (the catalog mirror), and the tunnel's libp2p key (tunnel/peer.key: the node keeps its peer id across restarts); one leafmesh process per directory (a second is refused)" }),
    natsListen: option.hostPort({ default: "127.0.0.1:4222", description: "client address of the node's own nats-server (leafmesh status/sub connect here)" }),
    dns: option.hostPort({ default: "off", off: true, description: "cluster DNS address, e.g. 169.254.96.16:53 on a node (kubelet's clusterDNS) or 127.0.0.1:5353; off: no DNS" }),
    clusterDomain: option.text({ default: "cluster.local", value: "DOMAIN", description: "the cluster domain the DNS answers for" }),
    upstream: option.list({ value: "ADDR,…", description: "DNS servers for names outside the cluster domain (default: the nameservers of /etc/resolv.conf but the --dns address itself, followed when the file changes)" }),
    socks: option.hostPort({ default: "off", off: true, description: "SOCKS5 proxy for operators: any node by name (ssh through NATs), any Service by name; e.g. 127.0.0.1:1080; off: none" }),
    gateway: option.text({
      default: "off",
      value: "HOST|off",
      description: "run the ingress gateway: listen on this address of the node (0.0.0.0: all) for the Istio and Gateway API Gateways selected for it, and route clients from outside the mesh to Services anywhere in it; off: no gateway",
    }),
    gatewayAccessLog: option.text({
      default: "stderr",
      value: "stderr|off|FILE",
      description: "where the gateway's access log goes (one JSON line a request or connection): stderr, in the agent's own log; off: none; FILE: appended to this file, followed by name when it is rotated (logrotate's create or copytruncate)",
    }),
    nodeLabels: option.text({ default: "", value: "KEY=VALUE,…", description: "the node's labels, which Gateways select gateway nodes by (kubernetes.io/hostname is the node's name without saying)" }),
    intercept: option.choice(interceptModes, { default: "off", value: "MODE", description: "cluster-IP interception: iptables, nftables (on a real node; needs root or NET_ADMIN) or off (reach services on the proxy listeners directly); with either, each intercepted cluster IP is routed on lo (ip route proto 76), so a node without a default route reaches them too; with a loopback --proxy-host it turns net.ipv4.conf.all.route_localnet on (off again at a clean stop) behind a guard that keeps 127.0.0.0/8 closed to the network (docs/trust.md); IPv6 cluster IPs too (ip6tables, or the ip6 table) where the host has IPv6, through fd1e:af3e:5400::/64 routed local on lo behind the same kind of guard; one agent per network namespace intercepts: a second is refused, naming the first" }),
    proxyHost: option.text({ default: "127.0.0.1", value: "HOST", description: "where the proxy listeners take connections (the interception rules point there); a loopback address puts every TCP service port on one listener, each on its own 127.128.0.0/9 address" }),
    proxyMaxConnections: option.integer({ default: defaultTrafficLimits.maxConnections, value: "N", description: "cluster-IP proxy connections carried at once; the next ones wait (--proxy-queue) or are reset; bounds the agent's memory (~100 KiB each)" }),
    proxyMaxOpening: option.integer({ default: defaultTrafficLimits.maxOpening, value: "N", description: "cluster-IP proxy connects and tunnel stream opens under way at once (each a TLS handshake); the rest wait their turn" }),
    proxyMaxPerClient: option.integer({ default: defaultTrafficLimits.maxPerClient, value: "N", description: "cluster-IP proxy connections one client address may hold, carried and waiting; beyond, reset at once" }),
    proxyQueue: option.integer({ default: defaultTrafficLimits.maxWaiting, min: 0, value: "N", description: "cluster-IP proxy connections that may wait for a place; beyond, reset at once" }),
    proxyQueueTimeout: option.integer({ default: defaultTrafficLimits.waitTimeoutMs, value: "MS", description: "how long a cluster-IP proxy connection may wait for a place before it is reset" }),
    proxyUdpIdleTimeout: option.integer({ default: defaultUdpIdleTimeoutMs, min: 100, value: "MS", description: "how long a cluster-IP UDP flow (its socket to the endpoint, or its tunnel stream) is kept without a datagram either way, as the kernel's nf_conntrack_udp_timeout; shorter frees a node that sees many one-shot UDP clients sooner" }),
    socksClients: option.list({
      value: "CIDR,…",
      description: "client addresses that may use the SOCKS proxy, which dials any node and any address for them without a password (e.g. 10.0.0.0/24); others are reset at once. Default: loopback only; required when --socks listens beyond loopback",
    }),
    socksMaxConnections: option.integer({ default: defaultSocksLimits.maxConnections, value: "N", description: "SOCKS clients served at once; the next ones wait up to 10 s or are reset" }),
    socksMaxPerClient: option.integer({ default: defaultSocksLimits.maxPerClient, value: "N", description: "SOCKS connections one client address may hold; beyond, reset at once" }),
    tunnelMaxStreamsPerPeer: option.integer({ default: defaultMaxStreamsPerPeer, value: "N", description: "tunnel streams, and relay channels, one other node may have open here at once; beyond, refused with OVER_CAPACITY (its proxy tries another endpoint)" }),
    tunnelMaxPunchesPerPeer: option.integer({ default: defaultMaxPunchesPerPeer, value: "N", description: "hole punches one other node may have under way here at once (each holds a port and a socket for up to 8 s); beyond, declined with the reason" }),
    tunnelRelayIdleTimeout: option.integer({
      default: defaultRelayIdleTimeoutMs,
      min: 2_000,
      max: 600_000,
      value: "MS",
      description: "silence after which a relayed stream's channel is reset, its streams ending in an error (the far node gone, or the fabric path); a channel with nothing to send is pinged every quarter of it",
    }),
    psk: option.text({ value: "FILE", description: "the mesh's pre-shared key (swarm.key format); enables the node-to-node tunnel (default: the one in --keys)" }),
    tunnelListen: option.list({ default: "/ip4/0.0.0.0/tcp/4101,/ip6/::/tcp/4101", value: "MULTIADDR,…", description: "where the tunnel (libp2p) listens for other nodes: both address families by default (a node with only IPv6 addresses on its LAN is reached directly); on a host without IPv6 the /ip6/:: address is left out" }),
    site: option.text({ value: "NAME", description: "the edge site this node belongs to (published in its node record; default: the --upstream-domain, when it names a site)" }),
    region: option.text({ value: "NAME", description: "the cloud region this node uses (published in its node record)" }),
    observer: option.parsed({ value: "HOST:P1,P2", description: "the hub's NAT observer (leafmesh hub --observer): lets the node learn its NAT type" }, parseObserver),
    tunnelTls: option.hostPort({
      // [::] takes IPv4 too (a dual-stack socket); a host without IPv6 listens on 0.0.0.0 instead.
      default: "[::]:4102",
      off: true,
      // Port 0 works here: the node's record publishes the port the listener got.
      anyPort: true,
      description: "with --keys: direct (LAN) streams each get a TLS connection of their own, served here, and relayed streams a TLS session on a relay channel of their own (OpenSSL: faster than libp2p's noise and yamux); off: every stream on libp2p",
    }),
    tunnelWays: option.parsed({ default: "direct,punch,relay", value: "WAYS", description: "the paths the tunnel may use, any of direct, punch, relay (e.g. 'relay' on links whose NAT must not be punched)" }, parseWays),
    mdns: option.choice(["on", "off"] as const, { default: "on", description: "find nodes on the same LAN by mDNS (with --psk), on a service of this mesh's own (_lm-HASH._udp.local, named after its key): meshes sharing a LAN never find each other" }),
    upstreamDomain: option.text({ default: "hub", value: "NAME", description: "JetStream domain to mirror the catalog from: hub, or the site's name under a site" }),
    mirrorCheckInterval: option.integer({
      default: lineageCheckMs,
      min: 1_000,
      max: 3_600_000,
      value: "MS",
      description: "how often the node's mirrors of the catalog and the revocation list are compared with their upstream's streams, to find a hub that lost its store or restored it from a backup (the mirror is then made again); the catalog's is also compared at each leaf link up",
    }),
    ...securityOptions,
    join: option.text({
      value: "TOKEN",
      description: "join the mesh with a token (leafmesh keys token) instead of --keys: the node makes its own keys, the enrolling hub issues its identity into DATA/keys, used as its bundle at every later start; while no hub answers yet (down, starting, unreachable) or the hub is busy enrolling other nodes (a fleet joining at once) it asks again for up to 3 minutes; an expired token, a hub of another CA or a refused token ends it at once (a refused login after ~15 s)",
    }),
    joinFile: option.text({
      value: "FILE",
      description: "as --join, with the token read from FILE (surrounding whitespace ignored): a token on the command line is shown to every local user by ps, and it holds the enrol user's seed; not with --join",
    }),
    joinUrl: option.list({ value: "URL,…", description: "with --join or --join-file: the enrolling hubs' client URLs, instead of those in the token" }),
    ...serverOptions({ metricsListen: "127.0.0.1:9465" }),
    ...hubProxyOption,
    ...upstreamOrderOption,
    relayChoice: option.choice(["on", "off"] as const, {
      default: "on",
      description: "with several --hub URLs: keep scoring them (RTT, loss, the hub's relay load) and move the leaf link, which carries every relayed stream, to a better one when the one in use degrades (docs/relay-choice.md)",
    }),
    relayProbeInterval: option.integer({ default: defaultRelayChoiceSettings.probeIntervalMs, min: 100, value: "MS", description: "relay choice: time between probe rounds of every upstream" }),
    relayProbeTimeout: option.integer({ default: defaultRelayChoiceSettings.probeTimeoutMs, min: 50, value: "MS", description: "relay choice: a probe unanswered this long counts as lost (less than --relay-probe-interval)" }),
    relayWindow: option.integer({ default: defaultRelayChoiceSettings.windowRounds, max: 1000, value: "ROUNDS", description: "relay choice: probe rounds RTT (median) and loss are taken over" }),
    relayBadRounds: option.integer({ default: defaultRelayChoiceSettings.badRounds, max: 100, value: "N", description: "relay choice: rounds in a row the upstream in use must be worse than the best other by the margin before the leaf moves" }),
    relayMargin: option.integer({ default: defaultRelayChoiceSettings.marginMs, min: 0, value: "MS", description: "relay choice: the best other upstream must score better by at least this much (and by --relay-margin-percent)" }),
    relayMarginPercent: option.integer({ default: defaultRelayChoiceSettings.marginRatio * 100, min: 0, max: 10_000, value: "PERCENT", description: "relay choice: ... and by this share of its own score" }),
    relayHold: option.integer({ default: defaultRelayChoiceSettings.holdMs, min: 0, value: "MS", description: "relay choice: no second move for this long after one" }),
    relayLossPenalty: option.integer({ default: defaultScoreWeights.lossPenaltyMs, min: 0, value: "MS", description: "relay choice score: ms added for 100% probe loss (10% loss adds a tenth)" }),
    relayChannelPenalty: option.integer({ default: defaultScoreWeights.channelPenaltyMs, min: 0, value: "MS", description: "relay choice score: ms added per relay channel open through the hub" }),
    relayLoadPenalty: option.integer({ default: defaultScoreWeights.loadPenaltyMsPerMiBps, min: 0, value: "MS", description: "relay choice score: ms added per MiB/s through the hub's leaf connections" }),
  },
  async run(options, _positionals, io) {
    const dataDir = dataDirectory(options.data, "agent");
    // Before anything touches the kernel: a second agent here would replace the first's rules (intercept-lock.ts).
    if (options.intercept !== "off") await holdInterception({ node: options.node, dataDir });
    // Read with or without --gateway: a label mistyped now is said now, not when a gateway is added.
    const nodeLabels = parseLabels(options.nodeLabels);
    // Its listeners open one per service port as services come: an address this host does not have is said now.
    await checkListenHost("--proxy-host", options.proxyHost);
    const log = createLogger({ level: options.logLevel });
    // Two descriptors per proxied or SOCKS connection, and room for the rest (UDP service ports, the tunnel, the bus).
    checkDescriptorLimit({ log, needed: 2 * options.proxyMaxConnections + 2 * options.socksMaxConnections + 1_024 });
    let keys = options.keys;
    let site = options.site;
    const token = joinToken(options.join, options.joinFile);
    if (token !== undefined) {
      if (options.keys || options.insecure) throw new LeafmeshError("CONFIG_INVALID", `${options.joinFile === undefined ? "--join" : "--join-file"} makes the node's own identity: give it without --keys and --insecure`);
      const { joinMesh } = await import("../trust/join.ts");
      const joined = await joinMesh({ token, node: options.node, bundleDir: join(dataDir, "keys"), urls: options.joinUrl, log: log.child({ node: options.node, actor: "enrolment" }), signal: io.signal });
      if (options.site && joined.site && options.site !== joined.site) throw new LeafmeshError("CONFIG_INVALID", `--site ${options.site}: the node joined with a token of site ${joined.site}`);
      site = options.site ?? joined.site;
      keys = joined.bundleDir;
    }
    // A node attached to an edge site's domain is of that site (its record says so): the partition policy
    // and traffic's locality then know the site's other nodes without a second flag.
    if (site === undefined && options.upstreamDomain !== "hub") site = options.upstreamDomain;
    if (options.relayProbeTimeout >= options.relayProbeInterval) {
      throw new LeafmeshError("CONFIG_INVALID", `--relay-probe-timeout ${options.relayProbeTimeout} must be less than --relay-probe-interval ${options.relayProbeInterval}: a round must end before the next begins`);
    }
    const socksClientRanges = socksClientsFor(options.socks, options.socksClients);
    const security = resolveNodeSecurity({ keys, insecure: options.insecure }, options.node, "agent", log);
    // Its local key in the bundle where the bundle takes it, for a `leafmesh status` from before 2026-12-06 (it reads local.nk).
    if (security) keepLocalNkeyFile(security, log);
    const psk = options.psk ? readSecretFile(options.psk, "--psk") : security ? new TextDecoder().decode(security.psk) : undefined;
    // Checked now (a bad --gateway address or access log is said before anything starts); the actors' modules load
    // once the node's nats-server is spawned (roles/agent.ts).
    const actorOptions: AgentActorOptions = {
      proxyHost: options.proxyHost,
      intercept: options.intercept,
      dns: options.dns,
      clusterDomain: options.clusterDomain,
      socks: options.socks,
      socksClients: socksClientRanges,
      proxyLimits: { maxConnections: options.proxyMaxConnections, maxOpening: options.proxyMaxOpening, maxPerClient: options.proxyMaxPerClient, maxWaiting: options.proxyQueue, waitTimeoutMs: options.proxyQueueTimeout },
      udpIdleTimeoutMs: options.proxyUdpIdleTimeout,
      socksLimits: { maxConnections: options.socksMaxConnections, maxPerClient: options.socksMaxPerClient },
      gateway: options.gateway === "off" ? undefined : { host: gatewayHost(options.gateway), labels: nodeLabels, accessLog: gatewayAccessLog(options.gatewayAccessLog) },
      upstreams: options.upstream,
      tunnel: psk
        ? {
            psk,
            listen: options.tunnelListen,
            site,
            region: options.region,
            observer: options.observer,
            mdns: options.mdns === "on",
            ways: options.tunnelWays,
            identity: security ? nodeIdentityPems(security) : undefined,
            // --tunnel-tls is checked also without --keys (where it has no effect): a typo should not wait for the day keys are added.
            tlsStreams: security ? options.tunnelTls : undefined,
            hubs: options.hub,
            maxStreamsPerPeer: options.tunnelMaxStreamsPerPeer,
            maxPunchesPerPeer: options.tunnelMaxPunchesPerPeer,
            relayIdleTimeoutMs: options.tunnelRelayIdleTimeout,
            // The node keeps its peer id across restarts: peers' paths stay bound to it.
            keyFile: join(dataDir, "tunnel", "peer.key"),
          }
        : undefined,
    };
    const agent = await startAgent({
      security,
      actors: async () => (await import("../roles/agent-actors.ts")).agentActors(actorOptions),
      node: options.node,
      upstreams: options.hub,
      dataDir,
      client: options.natsListen,
      monitor: options.monitorListen,
      upstreamDomain: options.upstreamDomain,
      hubProxy: options.hubProxy,
      upstreamOrder: options.upstreamOrder,
      mirrorCheckMs: options.mirrorCheckInterval,
      relayChoice: options.relayChoice,
      relayChoiceSettings: {
        probeIntervalMs: options.relayProbeInterval,
        probeTimeoutMs: options.relayProbeTimeout,
        windowRounds: options.relayWindow,
        badRounds: options.relayBadRounds,
        marginMs: options.relayMargin,
        marginRatio: options.relayMarginPercent / 100,
        holdMs: options.relayHold,
      },
      relayScoreWeights: { lossPenaltyMs: options.relayLossPenalty, channelPenaltyMs: options.relayChannelPenalty, loadPenaltyMsPerMiBps: options.relayLoadPenalty },
      metrics: options.metricsListen,
      signal: io.signal,
      log,
    });
    // A new bundle put in place (keys issue --rotate): the node stops and starts again in place with it.
    const trustLog = log.child({ node: options.node, actor: "trust" });
    const { watchBundle } = await import("../trust/bundle-watch.ts");
    const restart = security && { log: trustLog, watch: (onReplaced: (what: string) => void) => watchBundle({ files: security.files, node: options.node, log: trustLog, onReplaced }) };
    // A node that joined with a token made its own key: it asks the enrolling hub for a new certificate before
    // its own ends, and the bundle watch above takes it (trust/renewal.ts).
    const { startCertificateRenewal } = await import("../trust/renewal.ts");
    const renewal = keys && security && existsSync(join(keys, "joined.json")) ? startCertificateRenewal({ connection: agent.connection, node: options.node, bundleDir: keys, log: log.child({ node: options.node, actor: "renewal" }), upstream: agent.upstream, site: options.upstreamDomain === "hub" ? undefined : options.upstreamDomain, revoked: agent.revoked }) : undefined;
    return runUntilSignal(io, () => (renewal?.stop(), agent.stop()), restart, log);
  },
});

/**
 * Who may use the SOCKS proxy: loopback by default; named (--socks-clients) when it listens beyond
 * loopback, where anyone who reaches the port could otherwise dial every node and any address.
 */
export function socksClientsFor(socks: HostPort | undefined, ranges: string[] = []): string[] {
  if (!socks) return [];
  if (ranges.length > 0) {
    socksClients(ranges, "--socks-clients"); // refused now, naming the flag, rather than when the actor starts
    return ranges;
  }
  if (isLoopbackHost(socks.host)) return loopbackClients;
  throw new LeafmeshError(
    "CONFIG_INVALID",
    `--socks ${socks.host}:${socks.port} listens beyond this machine, and the proxy dials every node and any address for whoever connects, without a password: name who may use it with --socks-clients CIDR,… (e.g. 10.0.0.0/24), or listen on 127.0.0.1`,
  );
}
