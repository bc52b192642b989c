/**
 * The tunnel actor: a stream to any node of the mesh, whatever lies between. It
 * assembles the rooms of services/tunnel and runs their lifecycle:
 *
 * - the libp2p host (host.ts) and the connections that hold paths up (connections.ts);
 * - the paths, one machine per remote node (paths.ts, path-machine.ts);
 * - the punch coordinator: this node's NAT and punches agreed with peers (punch-coordinator.ts);
 * - the relay endpoint (relay.ts) and the node record (node-directory.ts);
 * - the carriers a stream rides on (carrier.ts: libp2p, and with certificates the
 *   TLS carriers of tls-carriers.ts) and the stream opener that picks one (stream-opener.ts);
 * - the serving end of every inbound stream (stream-server.ts).
 *
 * It implements the stream contract `StreamDialer` (bus/streams.ts: `openStream`). Ways tried for
 * a node, best first: an existing connection; a direct dial (LAN neighbours found
 * by mDNS, or the listen addresses in the node's record); a TCP hole punch agreed
 * through the fabric when the NAT pair allows it (nat.ts); the relay through the
 * NATS fabric. Every path is an ordinary libp2p connection (noise + yamux, the
 * mesh key bound into the handshake), so a hub relaying bytes sees ciphertext only.
 */
import { mdnsRouteProblem } from "./mdns-route.ts";
import type { Duplex } from "node:stream";
import { assign, createActor, setup } from "xstate";
import type { Connection } from "@libp2p/interface";
import { nowIso } from "../../bus/events.ts";
import type { NatType, NodeRecord } from "../../bus/node-record.ts";
import { systemClock, type Clock } from "../../lib/clock.ts";
import { LeafmeshError, describeError } from "../../lib/errors.ts";
import { tunnelListenProblem } from "./listen-errors.ts";
import type { Logger } from "../../lib/log.ts";
import { CarrierBackoff } from "./carrier.ts";
import { PathConnections } from "./connections.ts";
import { hostHasIPv6, listenForFamilies, tlsListenForFamilies } from "./listen-family.ts";
import { PathChecks } from "./path-check.ts";
import { startTunnelHost, type TunnelHost } from "./host.ts";
import { NodeDirectory } from "./node-directory.ts";
import { meshProtocol, PeerVersions } from "./peer-versions.ts";
import type { TunnelStatus } from "./tunnel-status.ts";
import type { PathKind, PathStateKind } from "./path-machine.ts";
import { PathTable } from "./paths.ts";
import { PeerTrust } from "./peer-trust.ts";
import { gatherNetcheck, PathReasons } from "./path-reasons.ts";
import type { Netcheck, PathWhy } from "../../bus/path-why.ts";
import { parsePsk } from "./psk.ts";
import { PunchCoordinator } from "./punch-coordinator.ts";
import { RelayEndpoint } from "./relay.ts";
import { SpareSessions } from "./spares.ts";
import { pathPing, PeerLiveness } from "./peer-liveness.ts";
import type { StreamDialer, StreamOpenOptions, StreamTarget } from "../../bus/streams.ts";
import { Libp2pCarrier, StreamOpener } from "./stream-opener.ts";
import { StreamServer } from "./stream-server.ts";
import { TlsStreams, tlsCarriersOf } from "./tls-carriers.ts";
import { checkPunchRequest, provePunchRequest } from "./punch-proof.ts";
import type { TunnelOptions } from "./tunnel-options.ts";
import { doubtOlderConnections, watchHostAddresses, type NetworkWatch } from "./stale-connections.ts";

export type { TunnelOptions } from "./tunnel-options.ts";
export type { TunnelStatus } from "./tunnel-status.ts";

const lifecycleMachine = setup({
  types: { context: {} as { error?: string }, events: {} as { type: "STARTED" } | { type: "FAILED"; error: string } | { type: "STOP" } | { type: "STOPPED" } },
}).createMachine({
  id: "tunnel",
  initial: "starting",
  states: {
    starting: { on: { STARTED: "running", FAILED: { target: "failed", actions: assign(({ event }) => ({ error: event.error })) }, STOP: "stopping" } },
    running: { on: { STOP: "stopping" } },
    stopping: { on: { STOPPED: "stopped" } },
    stopped: { type: "final" },
    failed: { on: { STOP: "stopped" } },
  },
});

/** The rooms of a running tunnel, made by start(). */
interface Running {
  host: TunnelHost;
  trust: PeerTrust;
  connections: PathConnections;
  paths: PathTable;
  punches: PunchCoordinator;
  directory: NodeDirectory;
  relay?: RelayEndpoint;
  tls?: TlsStreams;
  spares: SpareSessions;
  opener: StreamOpener;
  reasons: PathReasons;
  server: StreamServer;
  network: NetworkWatch;
  versions: PeerVersions;
}

export class TunnelActor implements StreamDialer {
  readonly actor = createActor(lifecycleMachine);
  readonly node: string;
  readonly #options: TunnelOptions;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #psk: Uint8Array;
  #running: Running | undefined;
  #stopped = false;

  constructor(options: TunnelOptions) {
    this.#options = options;
    this.node = options.node;
    this.#log = options.log;
    this.#clock = options.clock ?? systemClock;
    this.#psk = parsePsk(options.psk);
    this.actor.start();
  }

  get nat(): NatType {
    return this.#running?.punches.nat ?? "unknown";
  }

  get host(): TunnelHost | undefined {
    return this.#running?.host;
  }

  get relay(): RelayEndpoint | undefined {
    return this.#running?.relay;
  }

  get directory(): NodeDirectory | undefined {
    return this.#running?.directory;
  }

  /** Where this node serves TLS streams, once started with them. */
  get tlsStreamPort(): number | undefined {
    return this.#running?.tls?.port;
  }

  /** The current path kind to a node (for status and tests). */
  pathTo(node: string): PathStateKind | undefined {
    return this.#running?.paths.pathTo(node);
  }

  /** The path's kind, last RTT and the reason of its last failure (for status and tests). */
  pathDetail(node: string): { kind: PathStateKind; rttMs?: number; reason?: string } | undefined {
    return this.#running?.paths.detail(node);
  }

  /** Why the path to `node` is what it is (`leafmesh status --why`, rpc.<node>.tunnel.why). */
  why(node: string): PathWhy {
    if (node === this.node) throw new LeafmeshError("CONFIG_INVALID", `'${node}' is this node itself`);
    if (!this.#running) throw new LeafmeshError("NOT_RUNNING", "the tunnel is not running");
    return this.#running.paths.why(node);
  }

  /** This node's network as measured now (`leafmesh netcheck`, rpc.<node>.netcheck): NAT detected again, upstream RTTs, LAN peers. */
  netcheck = (): Promise<Netcheck> => gatherNetcheck({ node: this.node, ...this.#running!, clock: this.#clock, observer: this.#options.observer, mdns: this.#options.mdns !== false, measureUpstreams: this.#options.measureUpstreams });

  /** Connections to a node by kind (for status and tests). */
  connectionsTo(node: string): { kind: PathKind; connection: Connection }[] {
    const peer = this.#running?.paths.peerOf(node);
    return peer ? this.#running!.connections.ranked(peer.peerId) : [];
  }

  async start(): Promise<void> {
    const options = this.#options;
    let tls: TlsStreams | undefined;
    let host: TunnelHost | undefined;
    // Revocations mean something only where certificates are checked (an identity).
    const trust = new PeerTrust({ revocations: options.identity ? options.revocations : undefined, log: this.#log });
    try {
      const server = new StreamServer({ node: this.node, log: this.#log, maxStreamsPerPeer: options.maxStreamsPerPeer, servedLocallyOnly: options.servedLocallyOnly });
      const reasons = new PathReasons({ clock: this.#clock });
      const serve = (stream: Duplex, peer: string, serveOptions: { headerTimeoutMs?: number; onTarget?: () => void } = {}) => void server.serve(stream, peer, serveOptions);
      // Started before libp2p: its port goes into identify.
      // Both address families where the host has IPv6, IPv4 alone where it has none (listen-family.ts).
      const hasIPv6 = hostHasIPv6();
      if (options.identity && options.tlsStreams) tls = await TlsStreams.start({ identity: options.identity, listen: tlsListenForFamilies(options.tlsStreams, hasIPv6), log: this.#log, onStream: serve, trust });
      host = await startTunnelHost({
        trust,
        keyFile: options.keyFile,
        node: this.node,
        listen: listenForFamilies(options.listen ?? ["/ip4/0.0.0.0/tcp/0"], hasIPv6),
        psk: this.#psk,
        log: this.#log,
        mdns: options.mdns,
        connectionPingIntervalMs: options.connectionPingIntervalMs,
        identity: options.identity,
        tlsStreamPort: tls?.port,
        onLanPeer: (peerId, addresses) => reasons.seenOnLan(peerId, addresses),
        onStream: (stream, peerId) => serve(stream, peerId),
      });
      // Before a path rests on a direct or punched connection, it must carry full-sized packets (path-check.ts).
      const checks = new PathChecks({ host, log: this.#log, onCarried: (connection) => this.#running?.paths.carried(connection) });
      await checks.start();
      this.#running = this.#assemble(host, tls, server, trust, reasons, checks);
      this.#running.paths.watch();
      this.#running.punches.start();
      this.#running.versions.watchHubs(options.nats);
      this.#running.directory.start();
      this.actor.send({ type: "STARTED" });
      this.#log.info({ peerId: host.libp2p.peerId.toString(), listen: host.libp2p.getMultiaddrs().map(String) }, "tunnel started");
      if (options.mdns !== false && this.#psk) {
        const problem = await mdnsRouteProblem();
        if (problem) this.#log.warn({ problem }, `mDNS cannot send from this host, ${problem}: LAN peers are not found by mDNS (direct paths come only from node records); give the LAN a route for it (ip route add 224.0.0.0/4 dev IFACE) or a default route, or --mdns off to say so`);
      }
    } catch (error) {
      // Its ports must not stay taken by a tunnel that never started.
      await host?.stop().catch(() => undefined);
      await tls?.close();
      trust.stop();
      this.actor.send({ type: "FAILED", error: describeError(error) });
      throw tunnelListenProblem(error) ?? new LeafmeshError("TUNNEL_FAILED", `tunnel could not start: ${describeError(error)}`, { cause: error });
    }
  }

  /** Makes the rooms around a started host and joins them up. */
  #assemble(host: TunnelHost, tls: TlsStreams | undefined, server: StreamServer, trust: PeerTrust, reasons: PathReasons, checks: PathChecks): Running {
    const options = this.#options;
    const log = this.#log;
    const clock = this.#clock;
    const dialTimeoutMs = options.dialTimeoutMs ?? 3_000;
    let connections: PathConnections | undefined;
    let paths: PathTable | undefined;
    const relay =
      options.ways?.relay === false
        ? undefined
        : new RelayEndpoint({
            nats: options.nats,
            node: this.node,
            log,
            maxChannelsPerPeer: options.maxStreamsPerPeer,
            idleTimeoutMs: options.relayIdleTimeoutMs,
            clock,
            onChannel: (channel) => {
              if (channel.purpose === "tls-stream") {
                if (tls) tls.accept(channel, channel.peer, "relayed");
                else channel.destroy(new LeafmeshError("TUNNEL_FAILED", "this node does not serve TLS streams"));
                return;
              }
              connections!.acceptRelayed(channel);
            },
            onEvent: (event) => options.bus.publish("tunnel", "relay", { at: nowIso(clock.now), peer: event.peer, stream: event.channel, status: event.status, bytes: event.bytes, reason: event.reason }),
          });
    connections = new PathConnections({ host, relay, log, clock, dialTimeoutMs, checks });
    const versions = new PeerVersions({ log, clock });
    const directory = new NodeDirectory({
      nats: options.nats,
      node: this.node,
      log,
      clock,
      record: () => this.#record(),
      refreshMs: options.recordRefreshMs,
      ttlMs: options.recordTtlMs,
      identity: options.identity,
      trust,
      // A node back with a new peer id or new addresses (a restart): its path follows.
      onRecord: (record) => (paths?.onRecord(record), versions.saw(record)),
      onAlive: (records) => paths?.retryAlive(records),
      hubs: () => versions.hubs(),
    });
    // Security on: punch requests carry the asker's signature, and only proven ones are taken on (punch-proof.ts).
    const punchIdentity = options.identity;
    const punches = new PunchCoordinator({
      nats: options.nats,
      bus: options.bus,
      node: this.node,
      log,
      observer: options.observer,
      allowed: options.ways?.punch !== false,
      punchTimeoutMs: options.punchTimeoutMs,
      maxPunchesPerPeer: options.maxPunchesPerPeer,
      recordOf: (node) => directory.get(node),
      peerId: () => host.libp2p.peerId.toString(),
      servesTlsStreams: () => tls !== undefined,
      onPunched: (socket, purpose, from) => {
        // A stream's own connection: the dialler's certificate must name `from` (tls-streams.ts).
        if (purpose === "tls-stream") return tls ? tls.accept(socket, from, "hole-punched") : void socket.destroy();
        return connections!.upgradePunched(socket, "inbound");
      },
      onChanged: () => directory.refreshNow(), // a new public address (a carrier's re-dial): put at once
      onAnswered: (from, outcome) => reasons.attempt(from, { way: "inbound", plan: outcome.plan, outcome: outcome.ok ? "connected" : "failed", ms: outcome.ms, detail: outcome.detail }),
      proof: punchIdentity
        ? {
            sign: (request, to) => provePunchRequest(request, { to, identity: punchIdentity, now: clock.now() }),
            check: (request) =>
              checkPunchRequest(request, { node: this.node, identity: punchIdentity, now: clock.now(), isRevoked: (fingerprint) => trust.isRevoked(fingerprint), peerClockOffsetMs: directory.clockOffsetOf(request.from) }),
          }
        : undefined,
    });
    paths = new PathTable({
      node: this.node,
      host,
      connections,
      punches,
      directory,
      bus: options.bus,
      log,
      clock,
      ways: options.ways,
      relays: relay !== undefined,
      reasons,
      netcheck: () => this.netcheck(),
      pathTimeoutMs: options.pathTimeoutMs,
      dialTimeoutMs,
      upgradeIntervalMs: options.upgradeIntervalMs,
      backoffMinMs: options.backoffMinMs,
      backoffMaxMs: options.backoffMaxMs,
      onConnectionOpen: (connection) => void doubtOlderConnections(connection, { connections, liveness: tls?.liveness, nodeOf: (peerId) => host.nodeOf(peerId) }),
    });
    const spares = new SpareSessions({ clock });
    if (tls) tls.liveness = new PeerLiveness({ ping: pathPing({ host, connections, peerOf: (node) => paths!.peerOf(node) }), clock, log });
    const backoff = new CarrierBackoff({ clock, log });
    const tlsCarriers = tls ? tlsCarriersOf({ tls, host, connections, relay, punches: options.observer ? punches : undefined, directory, spares, backoff, timeoutMs: dialTimeoutMs }) : {};
    const opener = new StreamOpener({
      connections,
      libp2p: new Libp2pCarrier({ host, connections }),
      tlsCarriers,
      backoff,
      log,
      headerTimeoutMs: server.targetTimeoutMs + 5_000,
      onTlsOpened: () => tls?.countOpened(),
    });
    // A newer revocation list: TLS sessions it names were reset (peer-trust.ts); now the revoked nodes'
    // libp2p connections are aborted, their records dropped and their paths forgotten.
    trust.onRevocation(() => {
      const revoked = new Set([...host.cutRevoked(), ...directory.dropRevoked()]);
      for (const node of revoked) paths!.forget(node, "its certificate is revoked (the mesh's revocation list)");
    });
    return { host, trust, connections, paths, punches, directory, relay, tls, spares, opener, server, reasons, versions, network: watchHostAddresses({ clock, intervalMs: options.networkWatchMs, rooms: () => ({ connections, liveness: tls?.liveness, directory, paths: paths!, punches, log }) }) };
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.actor.send({ type: "STOP" });
    const running = this.#running;
    if (running) {
      running.network.stop(); // before the paths: a change now must not reach connections being stopped
      running.paths.stop();
      running.punches.stop();
      // A clean stop takes the node's record out of mesh-nodes: peers drop it now, not at its TTL.
      await running.directory.withdraw();
      running.opener.stop();
      running.spares.close();
      running.trust.stop();
      running.versions.stop();
      running.relay?.close();
      await running.tls?.close();
      await running.host.stop();
    }
    this.actor.send({ type: "STOPPED" });
  }

  async openStream(node: string, target: StreamTarget, options?: StreamOpenOptions): Promise<Duplex> {
    const running = this.#running;
    if (this.#stopped || !running) throw new LeafmeshError("NOT_RUNNING", "the tunnel is not running");
    if (node === this.node) return running.opener.connectLocal(target);
    const { peer, kind } = await running.paths.resolve(node);
    return running.opener.open(peer, kind, target, options?.signal, options?.early);
  }

  /** What peers asked for beyond their limits, by reason (streams, relay channels, punches per peer: issue 15 item 7). */
  refusals(): Record<string, number> {
    const running = this.#running;
    const channels = running?.relay?.drops.get("peer over its channel limit");
    return { ...Object.fromEntries(running?.server.refused ?? []), ...Object.fromEntries(running?.punches.refused ?? []), ...(channels ? { "peer over its channel limit": channels } : {}) };
  }

  /** A summary for status replies and heartbeats. */
  status(): TunnelStatus {
    const running = this.#running;
    return {
      nat: this.nat,
      paths: running?.paths.kinds() ?? {},
      relayChannels: running?.relay?.channelCount ?? 0,
      relayDrops: Object.fromEntries(running?.relay?.drops ?? []),
      tlsStreams: { ...(running?.tls?.stats() ?? { opened: 0, served: 0, refused: {} }), spares: running?.spares.ready() ?? [] },
      trust: running?.trust.counts() ?? {},
      versions: running ? running.versions.skews(running.directory.all()) : [],
    };
  }

  #record(): NodeRecord {
    const { host, punches } = this.#running!;
    return {
      node: this.node,
      peerId: host.libp2p.peerId.toString(),
      listen: host.libp2p.getMultiaddrs().map((address) => address.decapsulateCode(421).toString()),
      observed: punches.mapped ? [punches.mapped] : [],
      site: this.#options.site,
      region: this.#options.region,
      nat: punches.nat,
      ...(punches.detection?.evidence ? { natEvidence: punches.detection.evidence } : {}),
      relay: this.#options.ways?.relay !== false,
      pskFingerprint: host.pskFingerprint,
      at: nowIso(this.#clock.now),
      protocol: meshProtocol,
    };
  }
}

/** Creates the tunnel actor (call `start()`); link it with `linkActorToBus({ bus, actorName: "tunnel", actor: tunnel.actor })`. */
export function createTunnelActor(options: TunnelOptions): TunnelActor {
  return new TunnelActor(options);
}
