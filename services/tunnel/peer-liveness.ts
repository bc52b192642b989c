/**
 * Whether the far agent of direct TLS streams still answers (tls-streams.ts), asked of its
 * process, not of a stream's target. A stream on a direct path runs on a TCP connection of its
 * own, and what watched it could not tell a dead far agent from a slow target:
 *
 * - a far agent frozen (SIGSTOP, a VM paused, a process stuck in a loop): its kernel still
 *   acknowledges bytes and answers TCP keepalive (tcp-liveness.ts), so the streams were held
 *   for ever, and their targets with them. A ping inside a stream could not help: behind a slow
 *   target the far agent stops reading the stream too (backpressure), exactly as a frozen one does;
 * - a direct path blackholed while this side sends: bytes in flight are retransmitted until the
 *   kernel gives up (tcp_retries2, ~15 minutes); keepalive is not asked while data is unacknowledged,
 *   and Node sets no TCP_USER_TIMEOUT.
 *
 * So while a node has direct TLS streams here (either end), its agent is pinged every
 * `intervalMs` on the path's direct libp2p connection — libp2p's ping protocol, answered by the
 * far agent's event loop, on a connection no stream's backpressure holds. `misses` pings in a row
 * unanswered (each given `intervalMs`), or no direct connection to ping on at all, and every
 * direct TLS stream to that node is reset with an error (never a clean end, STYLE 20), at both
 * ends as far as the far one can still hear it. A frozen agent's streams so end at most
 * `intervalMs × (misses + 1)` after it froze: 20 s by default. A slow target with a paused
 * reader is not cut: its agent answers.
 *
 * ```ts
 * const liveness = new PeerLiveness({ ping: directPing({ host, connections, peerOf: (node) => paths.peerOf(node) }), clock, log });
 * liveness.watch("edge-b", tlsSocket);   // unwatched when the socket closes
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

/** @default 5_000 — how often a node with direct TLS streams here is pinged, and how long each ping may take. */
export const livenessIntervalMs = 5_000;
/** @default 3 — pings in a row unanswered before its streams are reset: 15 s of silence, as libp2p's own 10 s ping timeout and keepalive's ~15 s. */
export const livenessMisses = 3;

export interface PeerLivenessOptions {
  /** Resolves when `node`'s agent answered on the direct path; rejects (with why) when it did not, or cannot be asked. */
  ping: (node: string, signal: AbortSignal) => Promise<void>;
  clock: Clock;
  log: Logger;
  intervalMs?: number;
  misses?: number;
}

interface Watched {
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

  /** Watches a direct TLS stream to or from `node` until it closes. */
  watch(node: string, stream: Duplex): void {
    if (this.#stopped || stream.destroyed) return;
    let watched = this.#nodes.get(node);
    if (!watched) {
      const started: Watched = { streams: new Set(), timer: undefined, misses: 0, pinging: false };
      started.timer = this.#options.clock.setInterval(() => void this.#ask(node, started), this.#options.intervalMs ?? livenessIntervalMs);
      this.#nodes.set(node, (watched = started));
    }
    const entry = watched;
    entry.streams.add(stream);
    stream.once("close", () => {
      entry.streams.delete(stream);
      if (entry.streams.size === 0 && this.#nodes.get(node) === entry) this.#forget(node, entry);
    });
  }

  /** Nodes watched now (a gauge: what a leak would grow). */
  get watching(): number {
    return this.#nodes.size;
  }

  stop(): void {
    this.#stopped = true;
    for (const [node, watched] of this.#nodes) this.#forget(node, watched);
  }

  #forget(node: string, watched: Watched): void {
    this.#options.clock.clearInterval(watched.timer);
    this.#nodes.delete(node);
  }

  async #ask(node: string, watched: Watched): Promise<void> {
    if (watched.pinging) return; // the previous ping still has its time
    watched.pinging = true;
    const intervalMs = this.#options.intervalMs ?? livenessIntervalMs;
    try {
      await this.#options.ping(node, AbortSignal.timeout(intervalMs));
      watched.misses = 0;
    } catch (error) {
      watched.misses++;
      watched.lastError = error;
    } finally {
      watched.pinging = false;
    }
    if (watched.misses < (this.#options.misses ?? livenessMisses) || this.#nodes.get(node) !== watched) return;
    const silentMs = watched.misses * intervalMs;
    const error = new LeafmeshError("TUNNEL_FAILED", `the agent of ${node} stopped answering on the direct path (no ping answered for ${silentMs} ms: ${describeError(watched.lastError)}); its direct TLS streams are reset`);
    this.#options.log.warn({ peer: node, streams: watched.streams.size, err: describeError(watched.lastError) }, "a node's agent stopped answering on the direct path (frozen, or the path is cut): its direct TLS streams are reset");
    this.#forget(node, watched);
    for (const stream of watched.streams) {
      this.cut++;
      resetStream(stream, error);
    }
  }
}

/**
 * The ping of PeerLiveness: libp2p's ping protocol on an open direct libp2p connection to the node (never a
 * relayed one: the streams ride the direct path), the path's own first, else any the node is known on by name
 * (the serving end of a stream may hold no path to its dialler).
 */
export function directPing(options: { host: Pick<TunnelHost, "libp2p" | "nodeOf">; connections: PathConnections; peerOf: (node: string) => CarrierPeer | undefined }): (node: string, signal: AbortSignal) => Promise<void> {
  const { host, connections } = options;
  return async (node, signal) => {
    const peer = options.peerOf(node);
    const direct =
      (peer && connections.ranked(peer.peerId).find((entry) => entry.kind === "direct")?.connection) ??
      host.libp2p.getConnections().find((connection) => connection.status === "open" && host.nodeOf(connection.remotePeer.toString()) === node && connections.kindOf(connection) === "direct");
    if (!direct) throw new LeafmeshError("TUNNEL_FAILED", `no direct connection to ${node} open`);
    await pingOver(direct, signal);
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
