/**
 * The TLS carriers (carrier.ts): each tunnel stream under a TLS session of its
 * own, with the nodes' mesh certificates, instead of on the pair's libp2p
 * connection (noise and yamux in JavaScript: ~0.2–0.3× of raw TCP; TLS runs in
 * OpenSSL and needs no multiplexer, tls-streams.ts says more). One per path kind:
 *
 * - direct TLS: a TCP connection to the peer's TLS port (announced in identify);
 * - relayed TLS: a relay channel of its own ("tls-stream"); the hubs carry ciphertext;
 * - punched TLS: a TCP connection punched for the stream (punch-coordinator.ts).
 *
 * A relayed or punched session costs round trips, so it is made ahead of time:
 * each stream takes the spare made for it, and the opener has the next one made
 * (`prepareNext`) once the stream's open is done (spares.ts, stream-opener.ts).
 * `TlsStreams` is this node's side of all three: the TLS server, the serving end
 * of sessions over relay channels and punched connections, and the counts.
 *
 * ```ts
 * const tls = await TlsStreams.start({ identity, listen: { host: "0.0.0.0", port: 4102 }, log, onStream: (stream, peer, options) => server.serve(stream, peer, options) });
 * const carrier = new RelayedTlsCarrier({ tls, relay, spares, clock, timeoutMs: 3_000, servesTls: (peer) => ... });
 * const stream = await carrier.open({ node: "edge-b", peerId }); // then the target header (stream-header.ts)
 * ```
 */
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import type { Logger } from "../../lib/log.ts";
import { LeafmeshError, describeError } from "../../lib/errors.ts";
import { BurstLog } from "../../lib/burst-log.ts";
import { systemClock } from "../../lib/clock.ts";
import type { Carrier, CarrierBackoff, CarrierName, CarrierPeer } from "./carrier.ts";
import type { PathConnections } from "./connections.ts";
import type { TunnelHost } from "./host.ts";
import type { NodeDirectory } from "./node-directory.ts";
import type { PathKind } from "./path-machine.ts";
import type { PunchCoordinator } from "./punch-coordinator.ts";
import type { NodeIdentity } from "./node-identity.ts";
import type { PeerTrust } from "./peer-trust.ts";
import type { RelayEndpoint } from "./relay.ts";
import type { RelayChannel } from "./relay-channel.ts";
import { spareSessionLifetimeMs, type SpareSessions } from "./spares.ts";
import type { PeerLiveness } from "./peer-liveness.ts";
import { connectTlsStream, startTlsStreamServer, tlsClientOver, tlsServerOver, type TlsStreamServer } from "./tls-streams.ts";

/** What carries a TLS session that is not on a connection of its own, as errors and logs say it. */
const carrierName = { relayed: "the relay", "hole-punched": "a punched connection" } as const;

/** Where a served stream goes: the stream server (stream-server.ts), or a test's own end. */
export type TlsStreamHandler = (stream: Duplex, peer: string, options: { headerTimeoutMs?: number; onTarget?: () => void }) => void;

/** This node's side of TLS streams: the server for direct ones, the serving end over relay channels and punched connections, the counts. */
export class TlsStreams {
  readonly identity: NodeIdentity;
  /** Revoked certificates refused at every TLS handshake, sessions cut when revoked later (peer-trust.ts). */
  readonly trust: PeerTrust | undefined;
  readonly #server: TlsStreamServer;
  readonly #log: Logger;
  readonly #onStream: TlsStreamHandler;
  readonly #handshakeTimeoutMs: number;
  /** Refused sessions over a relay channel or punched connection: said once per burst, not per session. */
  readonly #refusals: Record<"relayed" | "hole-punched", BurstLog>;
  #opened = 0;
  #served = 0;
  /** Watches the far agent of every direct and punched TLS stream, both ends (peer-liveness.ts); set once the paths exist. */
  liveness: PeerLiveness | undefined;

  private constructor(options: { identity: NodeIdentity; server: TlsStreamServer; log: Logger; onStream: TlsStreamHandler; handshakeTimeoutMs: number; trust?: PeerTrust }) {
    this.identity = options.identity;
    this.trust = options.trust;
    this.#server = options.server;
    this.#log = options.log;
    this.#onStream = options.onStream;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs;
    const refusals = (carrier: "relayed" | "hole-punched") => new BurstLog({ log: options.log, clock: systemClock, message: `TLS stream over ${carrierName[carrier]} refused` });
    this.#refusals = { relayed: refusals("relayed"), "hole-punched": refusals("hole-punched") };
  }

  /** Starts the TLS server for streams on direct paths (port 0 picks one). */
  static async start(options: {
    identity: NodeIdentity;
    listen: { host: string; port: number };
    log: Logger;
    onStream: TlsStreamHandler;
    /** @default 5_000 — a TLS handshake over a relay channel or punched connection. */
    handshakeTimeoutMs?: number;
    trust?: PeerTrust;
  }): Promise<TlsStreams> {
    let streams: TlsStreams | undefined;
    const server = await startTlsStreamServer({
      identity: options.identity,
      listen: options.listen,
      log: options.log,
      trust: options.trust,
      // The connection may be the dialler's spare, made ahead of its next stream (DirectTlsCarrier).
      onStream: (socket, node) => {
        streams!.liveness?.watch(node, socket, "direct");
        streams!.#serve(socket, `node ${node} (TLS)`, { headerTimeoutMs: spareSessionLifetimeMs + 60_000 });
      },
    });
    streams = new TlsStreams({ identity: options.identity, server, log: options.log, onStream: options.onStream, handshakeTimeoutMs: options.handshakeTimeoutMs ?? 5_000, trust: options.trust });
    return streams;
  }

  /** Where this node serves TLS streams on direct paths. */
  get port(): number {
    return this.#server.port;
  }

  /** TLS streams opened and served, and connections refused by reason. */
  stats(): { opened: number; served: number; refused: Record<string, number> } {
    return { opened: this.#opened, served: this.#served, refused: Object.fromEntries(this.#server.refused) };
  }

  /** A TLS carrier handed out a stream. */
  countOpened(): void {
    this.#opened++;
  }

  /** Serves the tunnel stream under TLS that arrives from `peer` on a relay channel or a connection punched for it. */
  accept(channel: Duplex, peer: string, carrier: "relayed" | "hole-punched"): void {
    const point = carrier === "relayed" ? "relayed TLS" : "punched TLS";
    tlsServerOver(channel, { identity: this.identity, peer, timeoutMs: this.#handshakeTimeoutMs, where: carrierName[carrier], trust: this.trust, point }).then(
      (socket) => {
        if (carrier === "hole-punched") this.liveness?.watch(peer, socket, "hole-punched");
        // The session may be the dialler's spare, made ahead of its next stream: its target
        // comes when that stream opens (a relay channel's pings keep it alive meanwhile).
        this.#serve(socket, `node ${peer} (TLS, ${carrier})`, { headerTimeoutMs: spareSessionLifetimeMs + 60_000 });
      },
      (error: unknown) => {
        this.#refusals[carrier].note(peer, { peer, err: describeError(error) });
        // A turn later: a session refused in its handshake callback resets its carrier then (tls-streams.ts
        // destroyOutsideRead); destroyed first, the carrier would end without that reset.
        setImmediate(() => channel.destroy());
      },
    );
  }

  /** Ends the server and every stream it serves (it does not wait for them). */
  close(): Promise<void> {
    this.liveness?.stop();
    return this.#server.close();
  }

  #serve(stream: Duplex, peer: string, options: { headerTimeoutMs?: number }): void {
    this.#onStream(stream, peer, { ...options, onTarget: () => this.#served++ });
  }
}

/**
 * A stream on a direct path over a TLS connection of its own to the peer's TLS
 * port. With `spares`, each stream takes the connection made ahead of it (TCP
 * connect and TLS handshake done: about 2.5 ms of a new stream's first byte in
 * bench/tunnel), and `prepareNext` makes the next one, as for relayed streams; a
 * spare still being made is waited for (it started earlier than a new one would).
 */
export interface DirectTlsCarrierOptions {
  tls: TlsStreams;
  /** The TCP connect and TLS handshake together. */
  timeoutMs: number;
  /** Where the peer serves TLS streams, if it does (its direct connection's address, the port from identify). */
  addressOf: (peer: CarrierPeer) => Promise<{ host: string; port: number } | undefined>;
  spares?: SpareSessions;
}

export class DirectTlsCarrier implements Carrier {
  readonly name: CarrierName = "direct TLS";
  readonly #options: DirectTlsCarrierOptions;

  constructor(options: DirectTlsCarrierOptions) {
    this.#options = options;
  }

  async open(peer: CarrierPeer): Promise<Duplex | undefined> {
    const address = await this.#options.addressOf(peer);
    if (!address) return undefined;
    const spare = await this.#options.spares?.take(this.#key(peer, address));
    const stream = spare ?? (await this.#connect(peer, address));
    this.#options.tls.liveness?.watch(peer.node, stream, "direct");
    return stream;
  }

  prepareNext(peer: CarrierPeer): void {
    const spares = this.#options.spares;
    if (!spares) return;
    void this.#options.addressOf(peer).then(
      (address) => {
        if (!address) return;
        spares.prepare(this.#key(peer, address), async () => {
          const session = await this.#connect(peer, address);
          session.on("error", () => undefined); // as a relayed spare: nobody listens while it waits
          return session;
        });
      },
      () => undefined,
    );
  }

  /** The address is part of the key: a peer that moved gets no spare made to where it was. */
  #key(peer: CarrierPeer, address: { host: string; port: number }): string {
    return `${this.name} ${peer.node} ${address.host}:${address.port}`;
  }

  #connect(peer: CarrierPeer, address: { host: string; port: number }): Promise<TLSSocket> {
    return connectTlsStream({ identity: this.#options.tls.identity, node: peer.node, ...address, timeoutMs: this.#options.timeoutMs, trust: this.#options.tls.trust });
  }
}

/**
 * A relayed stream on a relay channel of its own, under TLS end to end (the hubs
 * carry ciphertext only, as with noise): no yamux or noise in JavaScript on the
 * way. The next stream to the node finds its session ready (a spare): only the
 * target's round trip left.
 */
export interface RelayedTlsCarrierOptions {
  tls: TlsStreams;
  relay: RelayEndpoint;
  spares: SpareSessions;
  /** The channel's TLS handshake. */
  timeoutMs: number;
  /** Whether the peer announced TLS streams in identify. */
  servesTls: (peer: CarrierPeer) => boolean;
}

export class RelayedTlsCarrier implements Carrier {
  readonly name: CarrierName = "relayed TLS";
  readonly #options: RelayedTlsCarrierOptions;

  constructor(options: RelayedTlsCarrierOptions) {
    this.#options = options;
  }

  async open(peer: CarrierPeer): Promise<Duplex | undefined> {
    if (!this.#options.servesTls(peer)) return undefined;
    const spare = await this.#options.spares.take(`${this.name} ${peer.node}`);
    return spare ?? (await this.#session(peer.node));
  }

  prepareNext(peer: CarrierPeer): void {
    // The peer's pings on the spare's channel say it is alive while the spare waits.
    const heardAt = (session: Duplex) => this.#channels.get(session)?.lastHeardAt;
    if (this.#options.servesTls(peer)) this.#options.spares.prepare(`${this.name} ${peer.node}`, () => this.#session(peer.node), { heardAt });
  }

  /** The relay channel under each session made here. */
  readonly #channels = new WeakMap<Duplex, RelayChannel>();

  /** A relay channel of its own to `node` with TLS done over it. */
  async #session(node: string): Promise<Duplex> {
    const channel = await this.#options.relay.open(node, "tls-stream");
    try {
      const session = await tlsClientOver(channel, { identity: this.#options.tls.identity, node, timeoutMs: this.#options.timeoutMs, where: carrierName.relayed, trust: this.#options.tls.trust, point: "relayed TLS" });
      // A spare waits with nobody listening: its channel reset (relay closed, path lost) must not go unhandled.
      session.on("error", () => undefined);
      this.#channels.set(session, channel);
      return session;
    } catch (error) {
      channel.destroy();
      throw error;
    }
  }
}

/**
 * A stream on a hole-punched path over a punched TCP connection of its own under
 * TLS, like a direct one: the pair's libp2p connection carried ~0.25× of raw TCP
 * across the NATs in bench/tunnel. A punch takes round trips through the fabric,
 * so it is made ahead of time: each stream takes the spare punched for it, and
 * `prepareNext` punches the next one; with none ready (the first stream to a node, or the hub
 * out of reach) open() gives undefined and the stream goes over libp2p. A punch
 * still under way is not waited for: it can take seconds to fail.
 */
export interface PunchedTlsCarrierOptions {
  tls: TlsStreams;
  spares: SpareSessions;
  /** The punched connection's TLS handshake. */
  timeoutMs: number;
  /** Whether a punch to the peer can be tried (it serves TLS streams, both NATs measured). */
  ready: (peer: CarrierPeer) => boolean;
  /** A TCP connection punched to `node` for one TLS stream. */
  punch: (node: string) => Promise<Socket>;
  /** A spare's punch or handshake failed (the caller backs off). */
  onFailure: (peer: CarrierPeer, error: unknown) => void;
}

export class PunchedTlsCarrier implements Carrier {
  readonly name: CarrierName = "punched TLS";
  readonly #options: PunchedTlsCarrierOptions;

  constructor(options: PunchedTlsCarrierOptions) {
    this.#options = options;
  }

  async open(peer: CarrierPeer): Promise<Duplex | undefined> {
    if (!this.#options.ready(peer)) return undefined;
    const spare = await this.#options.spares.take(`${this.name} ${peer.node}`, { readyOnly: true });
    if (spare) this.#options.tls.liveness?.watch(peer.node, spare, "hole-punched");
    return spare;
  }

  /** With no spare ready the stream went over libp2p; the next one finds this one punched. */
  prepareNext(peer: CarrierPeer): void {
    if (this.#options.ready(peer)) this.#options.spares.prepare(`${this.name} ${peer.node}`, () => this.#session(peer.node), { onFailure: (error) => this.#options.onFailure(peer, error) });
  }

  /** A punched TCP connection to `node` with TLS done over it. */
  async #session(node: string): Promise<Duplex> {
    const socket = await this.#options.punch(node);
    try {
      const session = await tlsClientOver(socket, { identity: this.#options.tls.identity, node, timeoutMs: this.#options.timeoutMs, where: carrierName["hole-punched"], trust: this.#options.tls.trust, point: "punched TLS" });
      session.on("error", () => undefined); // as a relayed spare: nobody listens while it waits
      return session;
    } catch (error) {
      socket.destroy();
      throw error;
    }
  }
}

/**
 * The TLS carrier of each path kind this node can offer, joined to the tunnel's
 * rooms: direct always, relayed with a relay endpoint, punched with a NAT observer.
 */
export function tlsCarriersOf(options: {
  tls: TlsStreams;
  host: TunnelHost;
  connections: PathConnections;
  relay?: RelayEndpoint;
  /** Absent without a NAT observer (no punches). */
  punches?: PunchCoordinator;
  directory: NodeDirectory;
  spares: SpareSessions;
  backoff: CarrierBackoff;
  /** A connect and TLS handshake. */
  timeoutMs: number;
}): Partial<Record<PathKind, Carrier>> {
  const { tls, host, connections, relay, punches, directory, spares, backoff, timeoutMs } = options;
  const servesTls = (peer: CarrierPeer) => host.tlsPortOf(peer.peerId) !== undefined;
  const carriers: Partial<Record<PathKind, Carrier>> = {};
  carriers.direct = new DirectTlsCarrier({
    tls,
    timeoutMs,
    spares,
    addressOf: async (peer) => {
      // The newest direct connection: the latest proof of where the peer is (an older one may lead to an address it lost).
      const direct = connections.ranked(peer.peerId).filter((entry) => entry.kind === "direct").at(-1);
      const address = direct && tcpHostOf(direct.connection.remoteAddr.toString());
      // A connection just made is identified a moment later: its TLS port comes with identify.
      if (!address || (await host.provenNode(peer.peerId)) !== peer.node) return undefined;
      const port = host.tlsPortOf(peer.peerId);
      return port ? { host: address, port } : undefined;
    },
  });
  if (relay) carriers.relayed = new RelayedTlsCarrier({ tls, relay, spares, timeoutMs, servesTls });
  if (punches) {
    carriers["hole-punched"] = new PunchedTlsCarrier({
      tls,
      spares,
      timeoutMs,
      ready: (peer) => servesTls(peer) && punches.measured(directory.get(peer.node)),
      punch: (node) => {
        const record = directory.get(node);
        if (!record) return Promise.reject(new LeafmeshError("TUNNEL_FAILED", `no record of ${node} in mesh-nodes to punch by`));
        return punches.punch(record, "tls-stream");
      },
      onFailure: (peer, error) => backoff.failed("punched TLS", peer, error),
    });
  }
  return carriers;
}

/** "/ip4/198.18.1.12/tcp/4101[/p2p/…]" → "198.18.1.12": the address of a plain TCP connection, nothing for relayed or other ones. */
function tcpHostOf(address: string): string | undefined {
  return /^\/(ip4|ip6)\/([^/]+)\/tcp\/\d+(\/p2p\/[^/]+)?$/.exec(address)?.[2];
}
