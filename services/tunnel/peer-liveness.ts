/**
 * Whether the far agent of direct and punched TLS streams still answers (tls-streams.ts), asked of
 * its process, not of a stream's target. A stream on a direct or hole-punched path runs on a TCP
 * connection of its own, and what watched it could not tell a dead far agent from a slow target:
 *
 * - a far agent frozen (SIGSTOP, a VM paused, a process stuck in a loop): its kernel still
 *   acknowledges bytes and answers TCP keepalive (tcp-liveness.ts), so the streams were held
 *   for ever, and their targets with them. A ping inside a stream could not help: behind a slow
 *   target the far agent stops reading the stream too (backpressure), exactly as a frozen one does;
 * - a direct path blackholed while this side sends: bytes in flight are retransmitted until the
 *   kernel gives up (tcp_retries2, ~15 minutes); keepalive is not asked while data is unacknowledged,
 *   and Node sets no TCP_USER_TIMEOUT.
 *
 * So while a node has such TLS streams here (either end), its agent is pinged every `intervalMs`
 * on the pair's libp2p connection of the same kind (direct, or hole-punched) — libp2p's ping
 * protocol, answered by the far agent's event loop, on a connection no stream's backpressure holds.
 * `misses` pings in a row unanswered (each given `intervalMs`), or no such connection to ping on at
 * all, and every TLS stream of that kind with that node is reset with an error (never a clean end,
 * STYLE 20), at both ends as far as the far one can still hear it. A frozen agent's streams so end at most
 * `intervalMs × (misses + 1)` after it froze: 20 s by default. A slow target with a paused
 * reader is not cut: its agent answers.
 *
 * ```ts
 * const liveness = new PeerLiveness({ ping: pathPing({ host, connections, peerOf: (node) => paths.peerOf(node) }), clock, log });
 * liveness.watch("edge-b", tlsSocket, "direct");   // unwatched when the socket closes
 * ```
 */
import { randomBytes } from "node:crypto";
import type { Duplex } from "node:stream";
import type { Connection } from "@libp2p/interface";
import type { Clock } from "../../lib/clock.ts";
import { LeafmeshError, describeError } from "../../lib/errors.ts";
import { resetStream } from "../../lib/join-streams.ts";
import type { Logger } from "../../lib/log.ts";
import type { CarrierPeer } from "./carrier.ts";
import type { PathConnections } from "./connections.ts";
import type { TunnelHost } from "./host.ts";
import { streamToDuplex } from "./libp2p-duplex.ts";

/** The path kinds whose TLS streams ride a TCP connection of their own (relayed ones ride relay channels, which have their own idle timeout). */
export type WatchedKind = "direct" | "hole-punched";

/** @default 5_000 — how often a node with direct or punched TLS streams here is pinged, and how long each ping may take. */
export const livenessIntervalMs = 5_000;
/** @default 3 — pings in a row unanswered before its streams are reset: 15 s of silence, as libp2p's own 10 s ping timeout and keepalive's ~15 s. */
export const livenessMisses = 3;

export interface PeerLivenessOptions {
  /** Resolves when `node`'s agent answered on a `kind` connection; rejects (with why) when it did not, or cannot be asked. */
  ping: (node: string, kind: WatchedKind, signal: AbortSignal) => Promise<void>;
  clock: Clock;
  log: Logger;
  intervalMs?: number;
  misses?: number;
}

interface Watched {
  node: string;
  kind: WatchedKind;
  streams: Set<Duplex>;
  timer: unknown;
  misses: number;
  pinging: boolean;
  lastError?: unknown;
}

export class PeerLiveness {
  readonly #options: PeerLivenessOptions;
  readonly #nodes = new Map<string, Watched>();
  #stopped = false;
  /** Streams reset because their far agent stopped answering. */
  cut = 0;

  constructor(options: PeerLivenessOptions) {
    this.#options = options;
  }

  /** Watches a TLS stream to or from `node` on a path of `kind` until it closes. */
  watch(node: string, stream: Duplex, kind: WatchedKind): void {
    if (this.#stopped || stream.destroyed) return;
    const key = `${kind} ${node}`;
    let watched = this.#nodes.get(key);
    if (!watched) {
      const started: Watched = { node, kind, streams: new Set(), timer: undefined, misses: 0, pinging: false };
      started.timer = this.#options.clock.setInterval(() => void this.#ask(key, started), this.#options.intervalMs ?? livenessIntervalMs);
      this.#nodes.set(key, (watched = started));
    }
    const entry = watched;
    entry.streams.add(stream);
    stream.once("close", () => {
      entry.streams.delete(stream);
      if (entry.streams.size === 0 && this.#nodes.get(key) === entry) this.#forget(key, entry);
    });
  }

  /** Nodes (by path kind) watched now (a gauge: what a leak would grow). */
  get watching(): number {
    return this.#nodes.size;
  }

  /**
   * Resets every watched stream whose socket `select` picks, with `why` of it: sockets bound to an address this
   * host no longer has (network-watch.ts), or to a far address whose libp2p connection stopped answering while
   * its node answers elsewhere. Such a socket can carry nothing more, and its end would learn it only from
   * keepalive or these pings, 15–20 s on. Reset, never ended: the stream did not finish (STYLE 20). Returns how many.
   */
  resetWhere(select: (socket: SocketEnds, node: string, kind: WatchedKind) => boolean, why: (socket: SocketEnds, node: string, kind: WatchedKind) => string): number {
    let reset = 0;
    for (const watched of this.#nodes.values()) {
      for (const stream of watched.streams) {
        const ends = stream as Duplex & SocketEnds;
        const socket = { localAddress: plainAddress(ends.localAddress), remoteAddress: plainAddress(ends.remoteAddress) };
        if (!select(socket, watched.node, watched.kind)) continue;
        reset++;
        this.cut++;
        resetStream(stream, new LeafmeshError("TUNNEL_FAILED", why(socket, watched.node, watched.kind)));
      }
    }
    return reset;
  }

  stop(): void {
    this.#stopped = true;
    for (const [node, watched] of this.#nodes) this.#forget(node, watched);
  }

  #forget(key: string, watched: Watched): void {
    this.#options.clock.clearInterval(watched.timer);
    this.#nodes.delete(key);
  }

  async #ask(key: string, watched: Watched): Promise<void> {
    const { node, kind } = watched;
    if (watched.pinging) return; // the previous ping still has its time
    watched.pinging = true;
    const intervalMs = this.#options.intervalMs ?? livenessIntervalMs;
    try {
      await this.#options.ping(node, kind, AbortSignal.timeout(intervalMs));
      watched.misses = 0;
    } catch (error) {
      watched.misses++;
      watched.lastError = error;
    } finally {
      watched.pinging = false;
    }
    if (watched.misses < (this.#options.misses ?? livenessMisses) || this.#nodes.get(key) !== watched) return;
    const silentMs = watched.misses * intervalMs;
    const error = new LeafmeshError("TUNNEL_FAILED", `the agent of ${node} stopped answering on the ${kind} path (no ping answered for ${silentMs} ms: ${describeError(watched.lastError)}); its ${kind} TLS streams are reset`);
    this.#options.log.warn({ peer: node, path: kind, streams: watched.streams.size, err: describeError(watched.lastError) }, `a node's agent stopped answering on the ${kind} path (frozen, or the path is cut): its TLS streams there are reset`);
    this.#forget(key, watched);
    for (const stream of watched.streams) {
      this.cut++;
      resetStream(stream, error);
    }
  }
}

/** The two addresses of a stream's socket (a TLSSocket has its TCP socket's), as resetWhere sees them. */
export interface SocketEnds {
  localAddress?: string;
  remoteAddress?: string;
}

/** "::ffff:198.18.1.2" (a dual-stack socket's view of an IPv4 address) → "198.18.1.2". */
export function plainAddress(address: string | undefined): string | undefined {
  return address?.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "");
}

/**
 * The ping of PeerLiveness: libp2p's ping protocol on an open libp2p connection of the streams' kind to the
 * node (never a relayed one: the streams ride the direct or punched path), the path's own first, else any the
 * node is known on by name (the serving end of a stream may hold no path to its dialler).
 */
export function pathPing(options: { host: Pick<TunnelHost, "libp2p" | "nodeOf">; connections: PathConnections; peerOf: (node: string) => CarrierPeer | undefined }): (node: string, kind: WatchedKind, signal: AbortSignal) => Promise<void> {
  const { host, connections } = options;
  return async (node, kind, signal) => {
    const peer = options.peerOf(node);
    const same =
      (peer && connections.ranked(peer.peerId).find((entry) => entry.kind === kind)?.connection) ??
      host.libp2p.getConnections().find((connection) => connection.status === "open" && host.nodeOf(connection.remotePeer.toString()) === node && connections.kindOf(connection) === kind);
    if (!same) throw new LeafmeshError("TUNNEL_FAILED", `no ${kind} connection to ${node} open`);
    await pingOver(same, signal);
  };
}

/** libp2p's ping (`/ipfs/ping/1.0.0`): 32 random bytes, echoed by the far agent's ping service. */
export async function pingOver(connection: Connection, signal: AbortSignal): Promise<void> {
  const stream = await connection.newStream("/ipfs/ping/1.0.0", { signal });
  const duplex = streamToDuplex(stream, connection);
  const probe = randomBytes(32);
  try {
    await new Promise<void>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let received = 0;
      const fail = (error: unknown) => reject(error);
      const onAbort = () => fail(new LeafmeshError("TUNNEL_FAILED", "ping not answered in time"));
      signal.addEventListener("abort", onAbort, { once: true });
      duplex.on("data", (chunk: Buffer) => {
        chunks.push(chunk);
        received += chunk.length;
        if (received < probe.length) return;
        signal.removeEventListener("abort", onAbort);
        if (Buffer.concat(chunks).subarray(0, probe.length).equals(probe)) resolve();
        else fail(new LeafmeshError("TUNNEL_FAILED", "ping answered with other bytes"));
      });
      duplex.once("error", (error) => (signal.removeEventListener("abort", onAbort), fail(error)));
      duplex.once("end", () => (signal.removeEventListener("abort", onAbort), fail(new LeafmeshError("TUNNEL_FAILED", "ping stream ended unanswered"))));
      duplex.write(probe);
    });
  } finally {
    duplex.destroy();
  }
}
