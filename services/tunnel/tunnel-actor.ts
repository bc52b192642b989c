/**
 * The tunnel actor: a stream to any node of the mesh, whatever lies between.
 * It owns the libp2p host, the relay endpoint, the node record and one path
 * machine per remote node (see path-machine.ts), and implements the traffic
 * actor's `RemoteDialer` (`openStream`).
 *
 * Ways tried for a node, best first: an existing connection; a direct dial (LAN
 * neighbours found by mDNS, or the listen addresses in the node's record); a TCP
 * hole punch agreed through the fabric when the NAT pair allows it (nat.ts); the
 * relay through the NATS fabric. Every path is an ordinary libp2p connection
 * (noise + yamux, the mesh key bound into the handshake), so a hub relaying bytes sees ciphertext only.
 */
import { connect as netConnect, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { assign, createActor, setup, type ActorRefFrom } from "xstate";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Connection, PeerId } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { multiaddr, type Multiaddr } from "@multiformats/multiaddr";
import type { Bus } from "../../bus/bus.ts";
import { nowIso } from "../../bus/events.ts";
import type { NatType, NodeRecord } from "../../bus/node-record.ts";
import { systemClock, type Clock } from "../../lib/clock.ts";
import { LeafmeshError, describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { parsePsk, spareSessionLifetimeMs, startTunnelHost, TargetRefusedError, type TunnelHost, type TunnelTarget } from "./host.ts";
import { askObserver, detectNat, freeLocalPort, punchPlan, type HostPort, type ObserverAddress } from "./nat.ts";
import { NodeDirectory } from "./node-directory.ts";
import type { NodeIdentity } from "./node-identity.ts";
import { pathKindOf, pathMachine, type PathKind, type PathStateKind } from "./path-machine.ts";
import { acceptOnce, dialPunched, primeRestrictedCone, simultaneousOpen } from "./punch.ts";
import { RelayEndpoint, type RelayChannel } from "./relay.ts";
import { rpc } from "../../bus/rpc.ts";
import { rpcRequest } from "../../bus/bus.ts";

/** The remote address given to relayed connections: TEST-NET-1, never routable, so nothing dials it. */
const relayMarker = "/ip4/192.0.2.1/tcp/1";
const tlsRetryMs = 60_000;

export interface TunnelOptions {
  bus: Bus;
  log: Logger;
  node: string;
  /** The agent's local leaf connection. */
  nats: NatsConnection;
  /** libp2p listen multiaddrs. @default ["/ip4/0.0.0.0/tcp/0"] */
  listen?: string[];
  /** The mesh's pre-shared key, swarm.key format (three lines). */
  psk: string | Uint8Array;
  site?: string;
  region?: string;
  clock?: Clock;
  /** The NAT observer next to the hubs (two ports on one address); without it the NAT type stays "unknown". */
  observer?: ObserverAddress;
  /** @default true */
  mdns?: boolean;
  /** Ways this node may use; all on by default (turning them off is for tests and odd networks). */
  ways?: { direct?: boolean; punch?: boolean; relay?: boolean };
  /** @default 20_000 — how long openStream waits for a path to a node it has none to yet. */
  pathTimeoutMs?: number;
  /** @default 8_000 — a hole punch that has not connected by then has failed. */
  punchTimeoutMs?: number;
  /** @default 3_000 — direct dial timeout. */
  dialTimeoutMs?: number;
  /** Path machine timings (see path-machine.ts). */
  upgradeIntervalMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** Node record refresh and TTL (see node-directory.ts). */
  recordRefreshMs?: number;
  recordTtlMs?: number;
  /**
   * With security on (the agent's --keys bundle): node records are signed and checked, and a
   * libp2p peer must prove with its mesh certificate which node it is (node-identity.ts).
   */
  identity?: NodeIdentity;
  /**
   * With an identity: where streams on direct paths are served over TLS connections of
   * their own (tls-streams.ts: OpenSSL instead of noise and yamux in JavaScript); port 0
   * picks one. With it, relayed streams between two such nodes also get a relay channel
   * of their own under TLS. Leave out to keep every stream on libp2p.
   */
  tlsStreams?: { host: string; port: number };
}

/** What the traffic actor needs (services/traffic/dialer.ts `RemoteDialer`). */
export interface TunnelDialer {
  openStream(node: string, target: TunnelTarget): Promise<Duplex>;
}

/** What a punched socket becomes: the pair's libp2p connection, or one tunnel stream under TLS (tls-streams.ts). */
type PunchPurpose = "libp2p" | "tls-stream";

interface PunchRequest {
  from: string;
  peerId: string;
  nat: NatType;
  mapped: HostPort;
  /** @default "libp2p" (agents before TLS streams did not send it) */
  purpose?: PunchPurpose;
}

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

type PathActor = ActorRefFrom<typeof pathMachine>;

export class TunnelActor implements TunnelDialer {
  readonly actor = createActor(lifecycleMachine);
  readonly node: string;
  readonly #options: TunnelOptions;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #psk: Uint8Array;
  readonly #paths = new Map<string, { actor: PathActor; peerId: string }>();
  /** Remote "host:port" of hole-punched sockets, to tell their connections apart. */
  readonly #punched = new Set<string>();
  /** LAN neighbours by node name (from identify), for when the directory is out of reach. */
  readonly #lanPeers = new Map<string, string>();
  readonly #warnedKeys = new Set<string>();
  /** "<path kind> <peer id>" whose TLS streams failed, until when they are not tried again (bounded: three per known peer). */
  readonly #tlsBackoffUntil = new Map<string, number>();
  /** TLS sessions made ahead of the next stream ("relayed|hole-punched <node>"), one per path kind and node streams went to lately. */
  readonly #spares = new Map<string, { session: Promise<Duplex>; expiry: unknown; ready: boolean }>();
  #host: TunnelHost | undefined;
  #relay: RelayEndpoint | undefined;
  #directory: NodeDirectory | undefined;
  #nat: NatType = "unknown";
  #mapped: HostPort | undefined;
  #stopServe: (() => void) | undefined;
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
    return this.#nat;
  }

  get host(): TunnelHost | undefined {
    return this.#host;
  }

  get relay(): RelayEndpoint | undefined {
    return this.#relay;
  }

  get directory(): NodeDirectory | undefined {
    return this.#directory;
  }

  /** The current path kind to a node (for status and tests). */
  pathTo(node: string): PathStateKind | undefined {
    const path = this.#paths.get(node);
    return path ? pathKindOf(path.actor.getSnapshot().value) : undefined;
  }

  /** The path's kind, last RTT and the reason of its last failure (for status and tests). */
  pathDetail(node: string): { kind: PathStateKind; rttMs?: number; reason?: string } | undefined {
    const path = this.#paths.get(node);
    if (!path) return undefined;
    const snapshot = path.actor.getSnapshot();
    return { kind: pathKindOf(snapshot.value), rttMs: snapshot.context.rttMs, reason: snapshot.context.reason };
  }

  /** Connections to a node by kind (for status and tests). */
  connectionsTo(node: string): { kind: PathKind; connection: Connection }[] {
    const path = this.#paths.get(node);
    if (!path || !this.#host) return [];
    return this.#connectionsOf(path.peerId);
  }

  async start(): Promise<void> {
    try {
      const host = await startTunnelHost({
        node: this.node,
        listen: this.#options.listen ?? ["/ip4/0.0.0.0/tcp/0"],
        psk: this.#psk,
        log: this.#log,
        mdns: this.#options.mdns,
        identity: this.#options.identity,
        tlsStreams: this.#options.identity ? this.#options.tlsStreams : undefined,
      });
      this.#host = host;
      this.#watchConnections(host);
      if (this.#options.ways?.relay !== false) {
        this.#relay = new RelayEndpoint({
          nats: this.#options.nats,
          node: this.node,
          log: this.#log,
          clock: this.#clock,
          onChannel: (channel) => {
            channel.on("error", () => undefined); // the connection or TLS stream on top reports it
            if (channel.purpose === "tls-stream") return host.serveTlsOver(channel, channel.peer, "relayed");
            host.upgrade(channel, "inbound", multiaddr(relayMarker)).catch((error) => this.#log.warn({ peer: channel.peer, err: describeError(error) }, "relayed connection upgrade failed"));
          },
          onEvent: (event) =>
            this.#options.bus.publish("tunnel", "relay", { at: nowIso(this.#clock.now), peer: event.peer, stream: event.channel, status: event.status, bytes: event.bytes, reason: event.reason }),
        });
      }
      this.#stopServe = this.#options.bus.serve(rpc.tunnelPunch, (request) => this.#answerPunch(request));
      this.#directory = new NodeDirectory({
        nats: this.#options.nats,
        node: this.node,
        log: this.#log,
        clock: this.#clock,
        record: () => this.#record(),
        refreshMs: this.#options.recordRefreshMs,
        ttlMs: this.#options.recordTtlMs,
        identity: this.#options.identity,
      });
      this.#directory.start();
      if (this.#options.observer) void this.#detectNat(this.#options.observer);
      this.actor.send({ type: "STARTED" });
      this.#log.info({ peerId: host.libp2p.peerId.toString(), listen: host.libp2p.getMultiaddrs().map(String) }, "tunnel started");
    } catch (error) {
      this.actor.send({ type: "FAILED", error: describeError(error) });
      throw new LeafmeshError("TUNNEL_FAILED", `tunnel could not start: ${describeError(error)}`, { cause: error });
    }
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.actor.send({ type: "STOP" });
    for (const path of this.#paths.values()) path.actor.stop();
    this.#paths.clear();
    this.#stopServe?.();
    this.#directory?.stop();
    for (const spare of this.#spares.values()) {
      this.#clock.clearTimeout(spare.expiry);
      void spare.session.then((session) => session.destroy(), () => undefined);
    }
    this.#spares.clear();
    this.#relay?.close();
    await this.#host?.stop();
    this.actor.send({ type: "STOPPED" });
  }

  async openStream(node: string, target: TunnelTarget): Promise<Duplex> {
    if (this.#stopped || !this.#host) throw new LeafmeshError("NOT_RUNNING", "the tunnel is not running");
    if (node === this.node) return this.#connectLocal(target);
    let path = this.#paths.get(node);
    if (!path) {
      const peerId = await this.#peerIdOf(node);
      if (!peerId) {
        throw new LeafmeshError("TUNNEL_FAILED", `unknown node '${node}': it has no record in ${"mesh-nodes"} and was not seen on the LAN (is its agent running, with the same mesh?)`);
      }
      path = this.#ensurePath(node, peerId);
    }
    let snapshot = path.actor.getSnapshot();
    if (pathKindOf(snapshot.value) === "unreachable") {
      throw new LeafmeshError("TUNNEL_FAILED", `node '${node}' is unreachable: ${snapshot.context.reason ?? "every way failed"} (retrying in the background)`);
    }
    if (pathKindOf(snapshot.value) === "discovering") {
      snapshot = await this.#settled(path.actor, this.#options.pathTimeoutMs ?? 20_000, node);
      if (pathKindOf(snapshot.value) === "unreachable") {
        throw new LeafmeshError("TUNNEL_FAILED", `node '${node}' is unreachable: ${snapshot.context.reason ?? "every way failed"}`);
      }
    }
    if (pathKindOf(snapshot.value) === "direct") {
      const overTls = await this.#openOverTls(node, path.peerId, target);
      if (overTls) return overTls;
    } else if (pathKindOf(snapshot.value) === "relayed") {
      const overTls = await this.#openRelayedTls(node, path.peerId, target);
      if (overTls) return overTls;
    } else if (pathKindOf(snapshot.value) === "hole-punched") {
      const overTls = await this.#openPunchedTls(node, path.peerId, target);
      if (overTls) return overTls;
    }
    let lastError: unknown;
    // Best connection first; a connection closing under us (both sides punched at once,
    // a path switch) gives way to the next, and after a short pause to a fresh one. Bounded: 3 rounds.
    for (let round = 0; round < 3; round++) {
      if (round > 0) await new Promise((resolve) => setTimeout(resolve, 250 * round));
      for (const { connection } of this.#connectionsOf(path.peerId)) {
        try {
          return await this.#host.openTarget(connection, target);
        } catch (error) {
          if (error instanceof TargetRefusedError) throw error; // no other path changes that
          lastError = error;
        }
      }
    }
    if (!lastError) throw new LeafmeshError("TUNNEL_FAILED", `no connection to '${node}' right now (path ${pathKindOf(path.actor.getSnapshot().value)}); retry`);
    throw new LeafmeshError("TUNNEL_FAILED", `could not open a stream to '${node}': ${describeError(lastError)}`, { cause: lastError });
  }

  /** Where this node serves TLS streams, once started with them. */
  get tlsStreamPort(): number | undefined {
    return this.#host?.tlsStreamPort;
  }

  /**
   * A stream on a direct path over its own TLS connection, when both ends serve them.
   * A failure other than the target's refusal falls back to libp2p, and TLS is not
   * tried towards that peer for a while (a firewall in between would otherwise cost
   * every stream a timeout).
   */
  #openOverTls(node: string, peerId: string, target: TunnelTarget): Promise<Duplex | undefined> {
    return this.#tryTls("direct", node, peerId, async () => {
      const direct = this.#connectionsOf(peerId).find((entry) => entry.kind === "direct");
      return direct && this.#host!.openTlsTarget(direct.connection, target, this.#options.dialTimeoutMs ?? 3_000);
    });
  }

  /**
   * A relayed stream on a relay channel of its own, under TLS end to end (the hubs
   * carry ciphertext only, as with noise), when both ends serve TLS streams: no
   * yamux or noise in JavaScript on the way. Falls back like #openOverTls.
   */
  #openRelayedTls(node: string, peerId: string, target: TunnelTarget): Promise<Duplex | undefined> {
    if (!this.#relay || !this.#host!.servesTls(peerId)) return Promise.resolve(undefined);
    return this.#tryTls("relayed", node, peerId, async () => {
      const spare = await this.#takeSpare("relayed", node);
      // The next stream to this node finds its session ready: only the target's round trip left.
      this.#prepareSpare("relayed", node, () => this.#relayedTlsSession(node));
      const session = spare ?? (await this.#relayedTlsSession(node));
      return this.#host!.openTargetOn(session, node, target).catch((error: unknown) => {
        session.destroy();
        throw error;
      });
    });
  }

  /**
   * A stream on a hole-punched path over a punched TCP connection of its own under
   * TLS, like a direct one: the pair's libp2p connection (noise and yamux in
   * JavaScript) carried ~0.25× of raw TCP across the NATs in bench/tunnel. A punch
   * takes round trips through the fabric, so it is made ahead of time: each stream
   * takes the spare punched for it and has the next one punched; with none ready (the
   * first stream to a node, or the hub out of reach) the stream goes over libp2p.
   */
  #openPunchedTls(node: string, peerId: string, target: TunnelTarget): Promise<Duplex | undefined> {
    // Both NATs measured and published first (the punch plan and the address to admit depend on them).
    const record = this.#directory?.get(node);
    const measured = this.#mapped !== undefined && this.#nat !== "unknown" && record !== undefined && record.nat !== "unknown" && record.observed.length > 0;
    if (!this.#host!.servesTls(peerId) || !this.#options.observer || !measured) return Promise.resolve(undefined);
    return this.#tryTls("hole-punched", node, peerId, async () => {
      // A punch still under way is not waited for: it can take seconds to fail.
      const spare = await this.#takeSpare("hole-punched", node, { readyOnly: true });
      this.#prepareSpare("hole-punched", node, () => this.#punchedTlsSession(node), (error) => this.#tlsFailed("hole-punched", node, peerId, error));
      if (!spare) return undefined;
      return this.#host!.openTargetOn(spare, node, target).catch((error: unknown) => {
        spare.destroy();
        throw error;
      });
    });
  }

  /** A punched TCP connection to `node` with TLS done over it. */
  async #punchedTlsSession(node: string): Promise<Duplex> {
    const record = this.#directory?.get(node);
    if (!record) throw new LeafmeshError("TUNNEL_FAILED", `no record of ${node} in mesh-nodes to punch by`);
    const socket = await this.#punchSocket(record, "tls-stream");
    try {
      const session = await this.#host!.tlsOver(socket, node, "hole-punched", this.#options.dialTimeoutMs ?? 3_000);
      session.on("error", () => undefined); // as a relayed spare: nobody listens while it waits
      return session;
    } catch (error) {
      socket.destroy();
      throw error;
    }
  }

  /** Runs one TLS way of opening a stream; undefined (libp2p then) when it cannot, or failed lately towards that peer. */
  async #tryTls(path: PathKind, node: string, peerId: string, open: () => Promise<Duplex | undefined>): Promise<Duplex | undefined> {
    if ((this.#tlsBackoffUntil.get(`${path} ${peerId}`) ?? 0) > this.#clock.now()) return undefined;
    try {
      return await open();
    } catch (error) {
      if (error instanceof TargetRefusedError) throw error; // libp2p would not change that
      this.#tlsFailed(path, node, peerId, error);
      return undefined;
    }
  }

  /** TLS streams of that path kind towards that peer failed: libp2p carries them for a minute (said once). */
  #tlsFailed(path: PathKind, node: string, peerId: string, error: unknown): void {
    const key = `${path} ${peerId}`;
    const said = {
      direct: "TLS stream to a direct peer failed; its streams use libp2p for a minute",
      relayed: "TLS stream over the relay failed; its streams use the relayed libp2p connection for a minute",
      "hole-punched": "punching a TCP connection for TLS streams failed; streams use the hole-punched libp2p connection for a minute",
    }[path];
    if (!this.#tlsBackoffUntil.has(key)) this.#log.warn({ node, err: describeError(error) }, said);
    this.#tlsBackoffUntil.set(key, this.#clock.now() + tlsRetryMs);
  }

  /** A relay channel of its own to `node` with TLS done over it. */
  async #relayedTlsSession(node: string): Promise<Duplex> {
    const channel: RelayChannel = await this.#relay!.open(node, "tls-stream");
    channel.on("error", () => undefined); // the TLS session on top reports it
    try {
      const session = await this.#host!.tlsOver(channel, node, "relayed", this.#options.dialTimeoutMs ?? 3_000);
      // A spare waits with nobody listening: its channel reset (relay closed, path lost) must not go unhandled.
      session.on("error", () => undefined);
      return session;
    } catch (error) {
      channel.destroy();
      throw error;
    }
  }

  /** The spare session to `node` on that path kind if one is ready and still open (it is handed out once). */
  async #takeSpare(path: "relayed" | "hole-punched", node: string, options: { readyOnly?: boolean } = {}): Promise<Duplex | undefined> {
    const key = `${path} ${node}`;
    const spare = this.#spares.get(key);
    if (!spare || (options.readyOnly && !spare.ready)) return undefined;
    this.#spares.delete(key);
    this.#clock.clearTimeout(spare.expiry);
    const session = await spare.session.catch(() => undefined);
    if (session && !session.destroyed && session.writable) return session;
    session?.destroy();
    return undefined;
  }

  /** Opens the next TLS session to `node` on that path kind ahead of time; unused, it goes after spareSessionLifetimeMs. */
  #prepareSpare(path: "relayed" | "hole-punched", node: string, open: () => Promise<Duplex>, onFailure?: (error: unknown) => void): void {
    const key = `${path} ${node}`;
    if (this.#stopped || this.#spares.has(key)) return;
    const session = open();
    // A spare that fails is simply not there: the next stream makes its own (relayed) or uses libp2p (hole-punched).
    session.catch((error: unknown) => {
      if (this.#spares.get(key)?.session === session) {
        this.#clock.clearTimeout(this.#spares.get(key)!.expiry);
        this.#spares.delete(key);
      }
      if (!this.#stopped) onFailure?.(error);
    });
    const expiry = this.#clock.setTimeout(() => {
      if (this.#spares.get(key)?.session !== session) return;
      this.#spares.delete(key);
      void session.then((ready) => ready.destroy(), () => undefined);
    }, spareSessionLifetimeMs);
    const spare = { session, expiry, ready: false };
    void session.then(() => (spare.ready = true), () => undefined);
    this.#spares.set(key, spare);
  }

  /** A summary for status replies and heartbeats. */
  status(): {
    nat: NatType;
    paths: Record<string, PathStateKind>;
    relayChannels: number;
    relayDrops: Record<string, number>;
    /** Streams under TLS of their own (tls-streams.ts), on direct paths and relay channels. */
    tlsStreams: { opened: number; served: number; refused: Record<string, number> };
  } {
    const paths: Record<string, PathStateKind> = {};
    for (const [node, path] of this.#paths) paths[node] = pathKindOf(path.actor.getSnapshot().value);
    return {
      nat: this.#nat,
      paths,
      relayChannels: this.#relay?.channelCount ?? 0,
      relayDrops: Object.fromEntries(this.#relay?.drops ?? []),
      tlsStreams: this.#host?.tlsStats() ?? { opened: 0, served: 0, refused: {} },
    };
  }

  // ---------- paths ----------

  #settled(actor: PathActor, timeoutMs: number, node: string): Promise<ReturnType<PathActor["getSnapshot"]>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        subscription.unsubscribe();
        reject(new LeafmeshError("TUNNEL_FAILED", `no path to '${node}' within ${timeoutMs} ms`));
      }, timeoutMs);
      const check = (snapshot: ReturnType<PathActor["getSnapshot"]>) => {
        if (pathKindOf(snapshot.value) === "discovering") return false;
        clearTimeout(timer);
        queueMicrotask(() => subscription.unsubscribe());
        resolve(snapshot);
        return true;
      };
      const subscription = actor.subscribe(check);
      check(actor.getSnapshot());
    });
  }

  async #peerIdOf(node: string): Promise<string | undefined> {
    return this.#lanPeers.get(node) ?? (await this.#directory?.lookup(node))?.peerId;
  }

  #ensurePath(node: string, peerId: string): { actor: PathActor; peerId: string } {
    const existing = this.#paths.get(node);
    if (existing) return existing;
    const machine = pathMachine.provide({
      actions: {
        attempt: () => void this.#attempt(node, false),
        // Only one side of a pair tries upgrades (the smaller name), so two punches never race; the other sees the new connection arrive.
        attemptUpgrade: () => (this.node < node ? void this.#attempt(node, true) : queueMicrotask(() => path.actor.send({ type: "UPGRADE_FAILED", reason: `${node} tries the upgrades` }))),
        announce: ({ context }, params) => {
          this.#options.bus.publish("tunnel", "path", { at: nowIso(this.#clock.now), peer: node, kind: params.kind, rttMs: context.rttMs, detail: context.reason });
          this.#log.info({ peer: node, kind: params.kind, rttMs: context.rttMs, reason: context.reason }, "path changed");
        },
        released: (_, params) => {
          for (const { kind, connection } of this.#connectionsOf(peerId)) if (kind === params.kind) this.#closeWhenIdle(connection);
        },
      },
    });
    const actor = createActor(machine, {
      input: { peer: node, upgradeIntervalMs: this.#options.upgradeIntervalMs, backoffMinMs: this.#options.backoffMinMs, backoffMaxMs: this.#options.backoffMaxMs },
      clock: this.#clock,
    });
    const path = { actor, peerId };
    this.#paths.set(node, path);
    actor.start();
    return path;
  }

  /** Closes a connection the path no longer uses once its last stream is done (bounded: checks for an hour). */
  #closeWhenIdle(connection: Connection): void {
    let checks = 0;
    const check = () => {
      if (connection.status !== "open") return this.#clock.clearInterval(timer);
      if (connection.streams.length === 0 || ++checks > 720) {
        this.#clock.clearInterval(timer);
        void connection.close().catch(() => undefined);
      }
    };
    const timer = this.#clock.setInterval(check, 5_000);
    if (connection.streams.length === 0) check();
  }

  async #attempt(node: string, upgradeOnly: boolean): Promise<void> {
    const path = this.#paths.get(node);
    if (!path || this.#stopped) return;
    const send = (event: Parameters<PathActor["send"]>[0]) => {
      if (!this.#stopped) path.actor.send(event);
    };
    const reasons: string[] = [];
    try {
      const existing = this.#connectionsOf(path.peerId)[0];
      if (existing && (!upgradeOnly || existing.kind !== "relayed")) {
        return send({ type: "CONNECTED", kind: existing.kind, rttMs: await this.#rtt(existing.connection) });
      }
      const record = this.#directory?.get(node);
      if (record && record.pskFingerprint !== this.#host!.pskFingerprint) {
        const reason = `the pre-shared keys differ: ${node} uses a PSK with fingerprint ${record.pskFingerprint}, this node ${this.#host!.pskFingerprint}; give both agents the same --psk`;
        if (!this.#warnedKeys.has(node)) this.#log.error({ peer: node }, reason);
        this.#warnedKeys.add(node);
        return send({ type: upgradeOnly ? "UPGRADE_FAILED" : "FAILED", reason });
      }
      const ways = this.#options.ways ?? {};
      if (ways.direct !== false) {
        const connection = await this.#dialDirect(path.peerId, record).catch((error) => void reasons.push(`direct: ${describeError(error)}`));
        if (connection) return send({ type: "CONNECTED", kind: "direct", rttMs: await this.#rtt(connection) });
      }
      if (ways.punch !== false && record) {
        const plan = punchPlan(this.#nat, record.nat);
        if (plan === "relay") reasons.push(`punch: not possible between ${this.#nat} and ${record.nat} NATs`);
        else if (!this.#mapped || !this.#options.observer) reasons.push("punch: own mapped address unknown (no NAT observer)");
        else {
          const connection = await this.#punch(record).catch((error) => void reasons.push(`punch: ${describeError(error)}`));
          if (connection) return send({ type: "CONNECTED", kind: "hole-punched", rttMs: await this.#rtt(connection) });
        }
      }
      if (upgradeOnly) return send({ type: "UPGRADE_FAILED", reason: reasons.join("; ") || "no better way" });
      if (existing) return send({ type: "CONNECTED", kind: existing.kind, rttMs: await this.#rtt(existing.connection) });
      if (ways.relay !== false && this.#relay) {
        const connection = await this.#openRelayed(node, path.peerId).catch((error) => void reasons.push(`relay: ${describeError(error)}`));
        if (connection) {
          if (reasons.length) this.#log.info({ peer: node, reasons }, "relayed: better ways failed");
          return send({ type: "CONNECTED", kind: "relayed", rttMs: await this.#rtt(connection), reason: reasons.join("; ") || undefined });
        }
      }
      send({ type: "FAILED", reason: reasons.join("; ") || "no way to reach it" });
    } catch (error) {
      send({ type: upgradeOnly ? "UPGRADE_FAILED" : "FAILED", reason: describeError(error) });
    }
  }

  async #rtt(connection: Connection): Promise<number | undefined> {
    try {
      return await this.#host!.libp2p.services.ping.ping(connection.remotePeer, { signal: AbortSignal.timeout(2_000) });
    } catch {
      return undefined;
    }
  }

  async #dialDirect(peerId: string, record: NodeRecord | undefined): Promise<Connection> {
    const host = this.#host!;
    const id: PeerId = peerIdFromString(peerId);
    const known = (await host.libp2p.peerStore.get(id).catch(() => undefined))?.addresses.map((address) => address.multiaddr) ?? [];
    // A record lists loopback next to the LAN addresses (listen 0.0.0.0): from another
    // host, loopback is ourselves, so use it only when it is all the record has (one machine).
    const listen = record?.listen ?? [];
    const isLoopback = (text: string) => text.startsWith("/ip4/127.") || text.startsWith("/ip6/::1/");
    const usable = listen.some((text) => !isLoopback(text)) ? listen.filter((text) => !isLoopback(text)) : listen;
    const fromRecord = usable.map((text) => multiaddr(text));
    const addresses = [...known, ...fromRecord]
      .filter((address) => !address.toString().startsWith(relayMarker) && (usable === listen || !isLoopback(address.toString())))
      .map((address) => (address.toString().includes("/p2p/") ? address : address.encapsulate(`/p2p/${peerId}`)));
    if (addresses.length === 0) throw new LeafmeshError("TUNNEL_FAILED", "no address known");
    const timeout = this.#options.dialTimeoutMs ?? 3_000;
    // All addresses at once: a silent one (a NAT that drops) must not delay an answering one.
    try {
      return await Promise.any(
        dedupe(addresses).map(async (address) => {
          // force: libp2p would otherwise hand back the existing (relayed) connection to this peer.
          const connection = await host.libp2p.dial(address, { signal: AbortSignal.timeout(timeout), force: true });
          if (connection.remotePeer.toString() === peerId && this.#kindOf(connection) === "direct") return connection;
          throw new LeafmeshError("TUNNEL_FAILED", `${address.toString()} is not a direct connection to ${peerId}`);
        }),
      );
    } catch (error) {
      const causes = error instanceof AggregateError ? error.errors : [error];
      throw new LeafmeshError("TUNNEL_FAILED", `no listen address answered (${addresses.length} tried): ${describeError(causes[0])}`, { cause: error });
    }
  }

  async #openRelayed(node: string, peerId: string): Promise<Connection> {
    const channel = await this.#relay!.open(node);
    channel.on("error", () => undefined); // surfaced by the connection on top
    const connection = await this.#host!.upgrade(channel, "outbound", multiaddr(relayMarker));
    if (!connection || connection.remotePeer.toString() !== peerId) {
      await connection?.close();
      throw new LeafmeshError("TUNNEL_FAILED", `the relay reached a peer that is not ${node}'s recorded peer id`);
    }
    return connection;
  }

  // ---------- hole punching ----------

  async #observe(localPort: number): Promise<HostPort> {
    const observer = this.#options.observer!;
    return (await askObserver<{ observed: HostPort }>({ host: observer.host, port: observer.ports[0] }, localPort, "observe")).observed;
  }

  async #punch(record: NodeRecord): Promise<Connection> {
    const socket = await this.#punchSocket(record, "libp2p");
    const remoteHost = plainIPv4(socket.remoteAddress);
    this.#punched.add(`${remoteHost}:${socket.remotePort}`);
    const connection = await this.#host!.upgrade(socket, "outbound", multiaddr(`/ip4/${remoteHost}/tcp/${socket.remotePort}`));
    if (!connection || connection.remotePeer.toString() !== record.peerId) {
      await connection?.close();
      throw new LeafmeshError("TUNNEL_FAILED", `the punched connection reached a peer that is not ${record.node}`);
    }
    return connection;
  }

  /** Punches a TCP connection to `record`'s node, agreed through the fabric (rpc.<node>.tunnel-punch). */
  async #punchSocket(record: NodeRecord, purpose: PunchPurpose): Promise<Socket> {
    const plan = punchPlan(this.#nat, record.nat);
    const timeoutMs = this.#options.punchTimeoutMs ?? 8_000;
    const peerHost = record.observed[0]?.host;
    if (plan === "relay") throw new LeafmeshError("TUNNEL_FAILED", `cannot punch between ${this.#nat} and ${record.nat} NATs`);
    // Listening, we admit only the peer's address: without it (its NAT not measured yet) nothing could come in.
    if (plan === "a-listens" && !peerHost) throw new LeafmeshError("TUNNEL_FAILED", `${record.node}'s mapped address is not known yet`);
    const localPort = await freeLocalPort();
    const mapped = await this.#observe(localPort);
    let accepting: Promise<Socket> | undefined;
    if (plan === "a-listens") {
      // We are the cone side: listen, and open a restricted cone towards the peer's address.
      accepting = acceptOnce({ localPort, fromHost: peerHost ?? "", timeoutMs });
      accepting.catch(() => undefined);
      if (this.#nat === "restricted-cone" && peerHost) primeRestrictedCone(peerHost);
    }
    const request: PunchRequest = { from: this.node, peerId: this.#host!.libp2p.peerId.toString(), nat: this.#nat, mapped, purpose };
    const reply = await rpcRequest(this.#options.nats, record.node, rpc.tunnelPunch, request, 5_000);
    if (!reply.mapped) throw new LeafmeshError("TUNNEL_FAILED", `${record.node} declined the punch: ${reply.error ?? "no reason"}`);
    let socket: Socket;
    if (plan === "simultaneous") socket = await simultaneousOpen({ localPort, remote: reply.mapped, timeoutMs });
    else if (plan === "a-listens") socket = await accepting!;
    else socket = await dialPunched({ remote: reply.mapped, timeoutMs });
    return socket;
  }

  /** The answering side of a punch (rpc.<node>.tunnel-punch). */
  async #answerPunch(request: PunchRequest): Promise<{ mapped?: HostPort; error?: string }> {
    if (!this.#options.observer || this.#options.ways?.punch === false) return { error: `${this.node} does not punch (no NAT observer configured)` };
    if (typeof request?.from !== "string" || typeof request.mapped?.host !== "string" || !Number.isInteger(request.mapped?.port)) return { error: "malformed punch request" };
    const purpose = request.purpose ?? "libp2p";
    if (purpose !== "libp2p" && purpose !== "tls-stream") return { error: `unknown punch purpose '${String(purpose).slice(0, 40)}'` };
    if (purpose === "tls-stream" && this.#host?.tlsStreamPort === undefined) return { error: `${this.node} does not serve TLS streams` };
    const record = this.#directory?.get(request.from);
    if (record && record.peerId !== request.peerId) return { error: "peer id does not match the node record" };
    // The plan from the requester's side: "a" is the requester.
    const plan = punchPlan(request.nat, this.#nat);
    const timeoutMs = this.#options.punchTimeoutMs ?? 8_000;
    const localPort = await freeLocalPort();
    const mapped = await this.#observe(localPort);
    const host = this.#host!;
    const finish = (socketPromise: Promise<Socket>) =>
      socketPromise
        .then((socket) => {
          // A stream's own connection: the dialler's certificate must name request.from (tls-streams.ts).
          if (purpose === "tls-stream") {
            host.serveTlsOver(socket, request.from, "hole-punched");
            return undefined;
          }
          const remoteHost = plainIPv4(socket.remoteAddress);
          this.#punched.add(`${remoteHost}:${socket.remotePort}`);
          return host.upgrade(socket, "inbound", multiaddr(`/ip4/${remoteHost}/tcp/${socket.remotePort}`));
        })
        .catch((error) => this.#log.info({ peer: request.from, err: describeError(error) }, "punch (answering side) failed"));
    if (plan === "simultaneous") void finish(simultaneousOpen({ localPort, remote: request.mapped, timeoutMs }));
    else if (plan === "b-listens") {
      const accepting = acceptOnce({ localPort, fromHost: request.mapped.host, timeoutMs });
      if (this.#nat === "restricted-cone") primeRestrictedCone(request.mapped.host);
      void finish(accepting);
    } else if (plan === "a-listens") void finish(dialPunched({ remote: request.mapped, timeoutMs }));
    else return { error: `cannot punch between ${request.nat} and ${this.#nat}` };
    return { mapped };
  }

  async #detectNat(observer: ObserverAddress): Promise<void> {
    // Bounded retries: the observer may come up after the agent.
    for (let attempt = 0; attempt < 5 && !this.#stopped; attempt++) {
      try {
        const detection = await detectNat({ observer });
        this.#nat = detection.type;
        this.#mapped = detection.mapped;
        this.#log.info({ nat: detection.type, mapped: detection.mapped }, "NAT behaviour detected");
        return;
      } catch (error) {
        this.#log.warn({ err: describeError(error), attempt }, "NAT detection failed; retrying");
        await new Promise((resolve) => setTimeout(resolve, 1_000 * (attempt + 1)));
      }
    }
  }

  // ---------- connections ----------

  #kindOf(connection: Connection): PathKind {
    const address = connection.remoteAddr.toString();
    if (address.startsWith(relayMarker)) return "relayed";
    const match = /^\/ip[46]\/([^/]+)\/tcp\/(\d+)/.exec(address);
    if (match && this.#punched.has(`${match[1]}:${match[2]}`)) return "hole-punched";
    return "direct";
  }

  #connectionsOf(peerId: string): { kind: PathKind; connection: Connection }[] {
    const rank: Record<PathKind, number> = { direct: 0, "hole-punched": 1, relayed: 2 };
    return this.#host!.libp2p.getConnections(peerIdFromString(peerId))
      .filter((connection) => connection.status === "open")
      .map((connection) => ({ kind: this.#kindOf(connection), connection }))
      .sort((a, b) => rank[a.kind] - rank[b.kind]);
  }

  #nodeOfPeer(peerId: string): string | undefined {
    return this.#host?.nodeOf(peerId) ?? this.#directory?.byPeerId(peerId)?.node;
  }

  #watchConnections(host: TunnelHost): void {
    const libp2p = host.libp2p;
    libp2p.addEventListener("peer:discovery", (event) => {
      // mDNS: a LAN neighbour. Dial it so identify tells us its node name.
      if (this.#stopped || this.#options.ways?.direct === false) return;
      const peer = event.detail.id.toString();
      void libp2p.dial(event.detail.id, { signal: AbortSignal.timeout(this.#options.dialTimeoutMs ?? 3_000) }).catch((error) => {
        const message = describeError(error);
        // The mesh key is the noise prologue: another key fails the handshake's first decryption.
        if (/decrypt|handshake|invalid tag|ciphertext|noise/i.test(message) && !this.#warnedKeys.has(peer)) {
          this.#warnedKeys.add(peer);
          this.#log.error({ peer, err: message }, "a LAN peer failed the encrypted handshake: the pre-shared keys differ (give every agent of the mesh the same --psk)");
        } else {
          this.#log.debug({ peer, err: message }, "LAN peer did not answer");
        }
      });
    });
    libp2p.addEventListener("peer:identify", (event) => {
      const peerId = event.detail.peerId.toString();
      const node = host.nodeOf(peerId);
      if (!node || node === this.node || this.#stopped) return;
      if (event.detail.connection && this.#kindOf(event.detail.connection) === "direct") this.#lanPeers.set(node, peerId);
      this.#onConnectionChange(node, peerId);
    });
    libp2p.addEventListener("connection:open", (event) => {
      const peerId = event.detail.remotePeer.toString();
      const node = this.#nodeOfPeer(peerId);
      if (node && !this.#stopped) this.#onConnectionChange(node, peerId);
    });
    libp2p.addEventListener("connection:close", (event) => {
      const peerId = event.detail.remotePeer.toString();
      const node = this.#nodeOfPeer(peerId);
      if (!node || this.#stopped) return;
      const path = this.#paths.get(node);
      if (!path) return;
      const current = pathKindOf(path.actor.getSnapshot().value);
      const kind = this.#kindOf(event.detail);
      if (kind !== current) return;
      if (this.#connectionsOf(peerId).some((other) => other.kind === kind)) return;
      path.actor.send({ type: "LOST", kind, reason: `${kind} connection closed` });
    });
  }

  /** A connection appeared (either side opened it): tell the node's path, creating it if needed. */
  #onConnectionChange(node: string, peerId: string): void {
    const existing = this.#paths.get(node);
    if (!existing) {
      this.#ensurePath(node, peerId);
      return;
    }
    const best = this.#connectionsOf(peerId)[0];
    if (best) existing.actor.send({ type: "CONNECTED", kind: best.kind });
  }

  #record(): NodeRecord {
    const host = this.#host!;
    return {
      node: this.node,
      peerId: host.libp2p.peerId.toString(),
      listen: host.libp2p.getMultiaddrs().map((address) => address.decapsulateCode(421).toString()),
      observed: this.#mapped ? [this.#mapped] : [],
      site: this.#options.site,
      region: this.#options.region,
      nat: this.#nat,
      relay: this.#options.ways?.relay !== false,
      pskFingerprint: host.pskFingerprint,
      at: nowIso(this.#clock.now),
    };
  }

  #connectLocal(target: TunnelTarget): Promise<Duplex> {
    if (target.protocol !== "TCP") throw new LeafmeshError("TUNNEL_FAILED", "UDP to this node itself needs no tunnel: the traffic actor sends it directly");
    return new Promise((resolve, reject) => {
      const socket = netConnect({ host: target.host, port: target.port });
      socket.once("connect", () => resolve(socket));
      socket.once("error", reject);
    });
  }
}

/** "::ffff:198.18.64.12" (a dual-stack listener's view) → "198.18.64.12". */
function plainIPv4(address: string | undefined): string {
  return (address ?? "").replace(/^::ffff:/, "");
}

function dedupe(addresses: Multiaddr[]): Multiaddr[] {
  const seen = new Set<string>();
  return addresses.filter((address) => {
    const key = address.toString();
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Creates the tunnel actor (call `start()`); link it with `linkActorToBus({ bus, actorName: "tunnel", actor: tunnel.actor })`. */
export function createTunnelActor(options: TunnelOptions): TunnelActor {
  return new TunnelActor(options);
}
