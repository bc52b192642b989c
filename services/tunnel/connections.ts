/**
 * The libp2p connections that hold the paths up: one per path kind at most
 * between two nodes, told apart by how they were made. This file makes them —
 * a direct dial to a node's addresses, libp2p over a relay channel, libp2p over
 * a punched socket — and classifies and ranks the open ones (direct before
 * hole-punched before relayed). Streams ride on them (the libp2p carrier), and
 * their opening and closing drive the path machines (paths.ts).
 *
 * ```ts
 * const connections = new PathConnections({ host, relay, log, clock });
 * const connection = await connections.dialDirect(peerId, record);
 * connections.ranked(peerId)[0]; // { kind: "direct", connection }
 * ```
 */
import { isIPv4, isIPv6 } from "node:net";
import type { Duplex } from "node:stream";
import type { Connection, PeerId } from "@libp2p/interface";
import { peerIdFromString } from "@libp2p/peer-id";
import { multiaddr, type Multiaddr } from "@multiformats/multiaddr";
import type { NodeRecord } from "../../bus/node-record.ts";
import type { Clock } from "../../lib/clock.ts";
import { LeafmeshError, describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { handshakeFailure, type TunnelHost } from "./host.ts";
import { fabricAddress } from "./inbound-gate.ts";
import type { PathChecks } from "./path-check.ts";
import type { PathKind } from "./path-machine.ts";
import { pingOver } from "./peer-liveness.ts";
import type { RelayChannel, RelayEndpoint } from "./relay.ts";


/**
 * @default 5_000 — how long a doubted connection has to answer a ping (abortUnanswering). A connection
 * from an address that is gone cannot answer at all; a live one answers in milliseconds, or in a few
 * seconds behind a full send window on a slow uplink.
 */
export const verifyTimeoutMs = 5_000;

const rank: Record<PathKind, number> = { direct: 0, "hole-punched": 1, relayed: 2 };

export interface PathConnectionsOptions {
  host: TunnelHost;
  /** Absent when this node does not relay. */
  relay?: RelayEndpoint;
  log: Logger;
  clock: Clock;
  /** @default 3_000 — direct dial timeout. */
  dialTimeoutMs?: number;
  /**
   * Whether a direct or punched connection carries full-sized packets (path-check.ts); one that
   * was not seen to holds no path. Without it every open connection counts.
   */
  checks?: PathChecks;
}

export class PathConnections {
  readonly #options: PathConnectionsOptions;
  /** Remote "host:port" of hole-punched sockets, to tell their connections apart. */
  readonly #punched = new Set<string>();

  constructor(options: PathConnectionsOptions) {
    this.#options = options;
  }

  /** Which path a connection holds up: relayed by its marker address, hole-punched by its punched socket's address, else direct. */
  kindOf(connection: Connection): PathKind {
    const address = connection.remoteAddr.toString();
    if (address.startsWith(fabricAddress)) return "relayed";
    const match = /^\/ip[46]\/([^/]+)\/tcp\/(\d+)/.exec(address);
    if (match && this.#punched.has(`${match[1]}:${match[2]}`)) return "hole-punched";
    return "direct";
  }

  /** The open connections to a peer that carry data (path-check.ts), best kind first. */
  ranked(peerId: string): { kind: PathKind; connection: Connection }[] {
    const checks = this.#options.checks;
    return this.#options.host.libp2p
      .getConnections(peerIdFromString(peerId))
      .filter((connection) => connection.status === "open")
      .map((connection) => ({ kind: this.kindOf(connection), connection }))
      .filter(({ kind, connection }) => kind === "relayed" || !checks || checks.carries(connection))
      .sort((a, b) => rank[a.kind] - rank[b.kind]);
  }

  /**
   * Whether this side must check a new connection before a path rests on it: one it made
   * (dialled, punched outbound) that does not run over the relay (a relay channel is NATS
   * messages, not packets of the path's MTU).
   */
  needsCheck(connection: Connection): boolean {
    return this.#options.checks !== undefined && connection.direction === "outbound" && this.kindOf(connection) !== "relayed";
  }

  /** Resolves once a connection this side made carried the check's probe; rejects (the connection aborted) when it did not. */
  async checked(connection: Connection): Promise<void> {
    if (this.needsCheck(connection)) await this.#options.checks!.check(connection);
  }

  /** Dials every address known for a peer at once (libp2p's peer store, its record's listen addresses); the first direct connection wins. */
  async dialDirect(peerId: string, record: NodeRecord | undefined): Promise<Connection> {
    const host = this.#options.host;
    const id: PeerId = peerIdFromString(peerId);
    const known = (await host.libp2p.peerStore.get(id).catch(() => undefined))?.addresses.map((address) => address.multiaddr) ?? [];
    // A record lists loopback next to the LAN addresses (listen 0.0.0.0): from another
    // host, loopback is ourselves, so use it only when it is all the record has (one machine).
    const listen = record?.listen ?? [];
    const isLoopback = (text: string) => text.startsWith("/ip4/127.") || text.startsWith("/ip6/::1/");
    const usable = listen.some((text) => !isLoopback(text)) ? listen.filter((text) => !isLoopback(text)) : listen;
    const fromRecord = usable.map((text) => multiaddr(text));
    const addresses = [...known, ...fromRecord]
      .filter((address) => !address.toString().startsWith(fabricAddress) && (usable === listen || !isLoopback(address.toString())))
      .map((address) => (address.toString().includes("/p2p/") ? address : address.encapsulate(`/p2p/${peerId}`)));
    if (addresses.length === 0) throw new LeafmeshError("TUNNEL_FAILED", "no address known");
    const timeout = this.#options.dialTimeoutMs ?? 3_000;
    // All addresses at once: a silent one (a NAT that drops) must not delay an answering one.
    try {
      return await Promise.any(
        dedupe(addresses).map(async (address) => {
          // force: libp2p would otherwise hand back the existing (relayed) connection to this peer.
          const connection = await host.libp2p.dial(address, { signal: AbortSignal.timeout(timeout), force: true }).catch((error: unknown) => {
            throw explainDial(address, peerId, host.libp2p.peerId.toString(), error);
          });
          if (connection.remotePeer.toString() === peerId && this.kindOf(connection) === "direct") {
            await this.checked(connection);
            return connection;
          }
          throw new LeafmeshError("TUNNEL_FAILED", `${address.toString()} is not a direct connection to ${peerId}`);
        }),
      );
    } catch (error) {
      const causes = error instanceof AggregateError ? error.errors : [error];
      throw new LeafmeshError("TUNNEL_FAILED", `no listen address answered (${addresses.length} tried): ${describeError(causes[0])}`, { cause: error });
    }
  }

  /** A libp2p connection to `node` over a relay channel of its own; it must reach the node's recorded peer id. */
  async openRelayed(node: string, peerId: string): Promise<Connection> {
    const relay = this.#options.relay;
    if (!relay) throw new LeafmeshError("TUNNEL_FAILED", "this node does not relay");
    const channel = await relay.open(node);
    const connection = await this.#options.host.upgrade(channel, "outbound", multiaddr(fabricAddress));
    if (!connection || connection.remotePeer.toString() !== peerId) {
      await connection?.close();
      throw new LeafmeshError("TUNNEL_FAILED", `the relay reached a peer that is not ${node}'s recorded peer id`);
    }
    return connection;
  }

  /** The far end of openRelayed: a peer's relay channel for a libp2p connection. */
  acceptRelayed(channel: RelayChannel): void {
    this.#options.host.upgrade(channel, "inbound", multiaddr(fabricAddress)).catch((error) => this.#options.log.warn({ peer: channel.peer, err: describeError(error) }, "relayed connection upgrade failed"));
  }

  /**
   * A libp2p connection over a punched socket (either side of the punch). Outbound,
   * it must reach `expected` (the record's peer id of the node we punched to).
   */
  async upgradePunched(socket: Duplex & { remoteAddress?: string; remotePort?: number }, direction: "inbound" | "outbound", expected?: { node: string; peerId: string }): Promise<Connection | undefined> {
    const remoteAddr = punchedAddress(socket.remoteAddress, socket.remotePort);
    const [, remoteHost, remotePort] = /^\/ip[46]\/([^/]+)\/tcp\/(\d+)$/.exec(remoteAddr.toString())!;
    this.#punched.add(`${remoteHost}:${remotePort}`);
    const connection = await this.#options.host.upgrade(socket, direction, remoteAddr);
    if (direction === "outbound" && expected && (!connection || connection.remotePeer.toString() !== expected.peerId)) {
      await connection?.close();
      throw new LeafmeshError("TUNNEL_FAILED", `the punched connection reached a peer that is not ${expected.node}`);
    }
    if (connection) await this.checked(connection);
    return connection;
  }

  /** The round trip to a connection's peer by libp2p ping (2 s at most); undefined when it did not answer. */
  async rtt(connection: Connection): Promise<number | undefined> {
    try {
      return await this.#options.host.libp2p.services.ping.ping(connection.remotePeer, { signal: AbortSignal.timeout(2_000) });
    } catch {
      return undefined;
    }
  }

  /**
   * Pings the open direct and hole-punched connections `which` selects (all of them without it), each on its own
   * with `timeoutMs`, and aborts every one that does not answer: its streams end in an error and the paths it held
   * fall back (paths.ts). For when there is reason to doubt them — this host's addresses changed (network-watch.ts),
   * a peer connected again of the same kind — rather than waiting 10–20 s for libp2p's connection monitor. The
   * timeout is generous: a live connection on a slow uplink queues its ping behind its data, and a false verdict
   * cuts live streams. Resolves with the connections aborted.
   */
  async abortUnanswering(reason: string, which?: (connection: Connection) => boolean, timeoutMs = verifyTimeoutMs): Promise<Connection[]> {
    const doubted = this.#options.host.libp2p.getConnections().filter((connection) => connection.status === "open" && this.kindOf(connection) !== "relayed" && (!which || which(connection)));
    const aborted = await Promise.all(
      doubted.map(async (connection) => {
        try {
          await pingOver(connection, AbortSignal.timeout(timeoutMs));
          return undefined;
        } catch (error) {
          if (connection.status !== "open") return undefined;
          this.#options.log.info({ peer: this.#options.host.nodeOf(connection.remotePeer.toString()) ?? connection.remotePeer.toString(), remote: connection.remoteAddr.toString(), err: describeError(error) }, `a ${this.kindOf(connection)} connection did not answer after ${reason}: aborted`);
          connection.abort(new LeafmeshError("TUNNEL_FAILED", `the ${this.kindOf(connection)} connection did not answer a ping within ${timeoutMs} ms after ${reason}`, { cause: error }));
          return connection;
        }
      }),
    );
    return aborted.filter((connection): connection is Connection => connection !== undefined);
  }

  /** Closes a connection the path no longer uses once its last stream is done (bounded: checks for an hour). */
  closeWhenIdle(connection: Connection): void {
    const clock = this.#options.clock;
    let checks = 0;
    const check = () => {
      if (connection.status !== "open") return clock.clearInterval(timer);
      if (connection.streams.length === 0 || ++checks > 720) {
        clock.clearInterval(timer);
        void connection.close().catch(() => undefined);
      }
    };
    const timer = clock.setInterval(check, 5_000);
    if (connection.streams.length === 0) check();
  }
}

/** A failed dial to one address, said as what happened there (host.ts handshakeFailure): another peer, this node, another mesh's key, a hang-up. */
function explainDial(address: Multiaddr, peerId: string, self: string, error: unknown): LeafmeshError {
  const where = address.decapsulateCode(421).toString();
  const failure = handshakeFailure(error);
  const said =
    failure?.kind === "wrong peer"
      ? `${where} reached ${failure.answeredAs === self ? "this node itself" : `another node (peer ${failure.answeredAs})`}, not ${peerId}`
      : failure?.kind === "key differs"
        ? `${where} answered with another mesh key (its handshake did not decrypt)`
        : failure?.kind === "closed"
          ? `${where} hung up during the encrypted handshake`
          : `${where}: ${describeError(error)}`;
  return new LeafmeshError("TUNNEL_FAILED", said, { cause: error });
}

/**
 * The multiaddr of a punched socket's far end, in its own family: "/ip4/198.18.64.12/tcp/P" (also from
 * "::ffff:198.18.64.12", a dual-stack listener's view of an IPv4 peer), "/ip6/fd00:18::b/tcp/P" for an
 * IPv6 one (a pair behind stateful IPv6 firewalls punches as behind NATs). A socket with no address (it
 * closed before its upgrade) is refused with that reason, never turned into an address that is none.
 */
export function punchedAddress(address: string | undefined, port: number | undefined): Multiaddr {
  const host = (address ?? "").replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "");
  const family = isIPv4(host) ? "ip4" : isIPv6(host) ? "ip6" : undefined;
  if (!family || !port) throw new LeafmeshError("TUNNEL_FAILED", `the punched socket has no remote address ('${address ?? ""}', port ${port ?? "none"}): it closed before its upgrade`);
  return multiaddr(`/${family}/${host}/tcp/${port}`);
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
