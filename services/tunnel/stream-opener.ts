/**
 * Opens a tunnel stream to a node over the path its machine holds: the path
 * kind's TLS carrier first (tls-carriers.ts), libp2p otherwise (carrier.ts lists
 * them), then the target header (stream-header.ts). A carrier that failed towards
 * a peer is skipped for a while (CarrierBackoff); a target the remote agent
 * refused fails the stream at once — no other carrier changes that.
 *
 * ```ts
 * const opener = new StreamOpener({ host, connections, tlsCarriers, backoff, log, headerTimeoutMs: 10_000 });
 * const stream = await opener.open({ node: "edge-b", peerId }, "direct", { host: "10.0.0.5", port: 80, protocol: "TCP" }, clientLeft.signal);
 * ```
 *
 * A caller's `signal` (its client hung up) ends the open at once: out of the queue if it
 * waits for its turn, its carrier stream reset if the target header is under way (the far
 * agent drops its target connection). A carrier still being opened (a TLS handshake) keeps
 * its turn until it is made, then is reset at once: the turns stay a bound on real opens.
 *
 * A caller's `early` (lib/early-bytes.ts: its client's first bytes) goes right behind the target header to a peer
 * whose node record says protocol 2 or above (bus/protocol.ts), without waiting for the answer; to an older one
 * the open is as before. Once some went, a stream that fails without an answer is not tried again on another
 * carrier: it fails with EarlyBytesInDoubt, and the caller resets its client. So they never ride a spare session
 * whose peer was not heard lately (spares.ts isQuietSpare): there they wait for the answer, as to an older peer,
 * and a peer found dead costs the open only its carrier (the caller tries another endpoint with them).
 * A libp2p stream needs no such check: it is handed out only once the far agent answered its protocol negotiation
 * (multistream-select), a round trip before the bytes go; to a dead peer its open fails first (libp2p-early-bytes.test.ts).
 */
import { connect as netConnect } from "node:net";
import type { Duplex } from "node:stream";
import type { Connection } from "@libp2p/interface";
import { LeafmeshError, describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import type { Carrier, CarrierBackoff, CarrierName, CarrierPeer } from "./carrier.ts";
import type { PathConnections } from "./connections.ts";
import type { TunnelHost } from "./host.ts";
import type { PathKind } from "./path-machine.ts";
import { requestTarget, TargetRefusedError, type StreamTarget } from "./stream-header.ts";
import { Admission, AdmissionRefused } from "../../lib/admission.ts";
import { systemClock } from "../../lib/clock.ts";
import { resetStream } from "../../lib/join-streams.ts";
import { EarlyBytesInDoubt, type EarlyBytes } from "../../lib/early-bytes.ts";
import { earlyBytesProtocol } from "../../bus/protocol.ts";
import { isQuietSpare } from "./spares.ts";

/** Opens under way at once towards one node (StreamOpenerOptions.maxOpeningPerPeer). */
export const defaultMaxOpeningPerPeer = 64;

/** The error of an open whose caller gave it up (its client hung up). */
function abandoned(peer: CarrierPeer): LeafmeshError {
  return new LeafmeshError("TUNNEL_FAILED", `stream to '${peer.node}' abandoned: the client left while it was being opened`);
}

/** A stream on the pair's libp2p connection: the carrier of every path kind, and the last one tried. */
export class Libp2pCarrier implements Carrier {
  readonly name: CarrierName = "libp2p";
  readonly #host: TunnelHost;
  readonly #connections: PathConnections;

  constructor(options: { host: TunnelHost; connections: PathConnections }) {
    this.#host = options.host;
    this.#connections = options.connections;
  }

  /** On the best open connection to the peer; undefined when there is none. */
  async open(peer: CarrierPeer): Promise<Duplex | undefined> {
    const best = this.#connections.ranked(peer.peerId)[0];
    return best && this.openOn(best.connection);
  }

  openOn(connection: Connection): Promise<Duplex> {
    return this.#host.openStream(connection);
  }
}

export interface StreamOpenerOptions {
  connections: PathConnections;
  libp2p: Libp2pCarrier;
  /** The TLS carrier of each path kind this node has (none with security off). */
  tlsCarriers: Partial<Record<PathKind, Carrier>>;
  backoff: CarrierBackoff;
  log: Logger;
  /** How long the remote agent's status may take (its target connect timeout and some). */
  headerTimeoutMs: number;
  /** A TLS carrier handed out a stream (counted for status). */
  onTlsOpened?: () => void;
  /**
   * @default 64 — stream opens under way at once towards one node; the next wait their turn.
   * Why: 2,000 relayed opens at once were 2,000 relay channels and TLS handshakes in one burst;
   * the event loop fell seconds behind, channels went silent past their idle timeout and were
   * reset, the TLS carrier was backed off, and libp2p refused the rest ("max outbound streams
   * exceeded"): not one stream carried (issue 15 item 8). 64 at a time, each opens in milliseconds.
   */
  maxOpeningPerPeer?: number;
  /** @default 20_000 — how long an open may wait for its turn (the path timeout: as long as waiting for a path). */
  openQueueTimeoutMs?: number;
}

/**
 * @default 20 — how long after a stream's open the next stream's session is made (carrier.ts prepareNext).
 * Made at once, its handshake's CPU at both ends came just when the new stream's first exchange did: in the
 * NAT lab a direct stream's first echoed byte came ~7 ms after its open with a spare being made, ~0.5 ms
 * without (timestamps at both agents). Opens in a row push it back; it is made once they pause.
 */
export const nextSessionDelayMs = 20;

export class StreamOpener {
  readonly #options: StreamOpenerOptions;
  /** The next session's pending make, per carrier and node (at most one each). */
  readonly #nextSessions = new Map<string, NodeJS.Timeout>();
  /** Opens under way towards each node (lib/admission.ts: only its opening limit and queue are used here). */
  readonly #turns = new Map<string, Admission>();

  constructor(options: StreamOpenerOptions) {
    this.#options = options;
  }

  #turnsTo(node: string): Admission {
    let turns = this.#turns.get(node);
    if (!turns) {
      // The wait is bounded in time; its length by what the callers (the proxies' admission) let through, 16,384 at most.
      const limits = { maxConnections: Infinity, maxOpening: this.#options.maxOpeningPerPeer ?? defaultMaxOpeningPerPeer, maxPerClient: Infinity, maxWaiting: 16_384, waitTimeoutMs: this.#options.openQueueTimeoutMs ?? 20_000 };
      this.#turns.set(node, (turns = new Admission({ clock: systemClock, limits })));
    }
    return turns;
  }

  /** A stream to `target` at `peer`'s node over a path of `path` kind, opened in turn with the other opens towards that node. */
  async open(peer: CarrierPeer, path: PathKind, target: StreamTarget, signal?: AbortSignal, early?: EarlyBytes): Promise<Duplex> {
    if (signal?.aborted) throw abandoned(peer);
    let turn;
    try {
      turn = await this.#turnsTo(peer.node).admit(peer.node, signal);
    } catch (error) {
      if (signal?.aborted) throw abandoned(peer);
      const reason = error instanceof AdmissionRefused ? error.reason : "refused";
      throw new LeafmeshError("OVER_CAPACITY", `stream to '${peer.node}' not opened: ${reason} (${describeError(error)})`, { cause: error });
    }
    // Early bytes only to a peer that reads them (its node record says protocol 2 or above); to others, opened as before.
    const sent = early && (peer.protocol ?? 0) >= earlyBytesProtocol ? early : undefined;
    try {
      return await this.#open(peer, path, target, signal, sent);
    } finally {
      turn.release();
    }
  }

  async #open(peer: CarrierPeer, path: PathKind, target: StreamTarget, signal: AbortSignal | undefined, early: EarlyBytes | undefined): Promise<Duplex> {
    const tls = this.#options.tlsCarriers[path];
    if (tls) {
      const stream = await this.#overTls(tls, peer, target, signal, early);
      if (stream) return stream;
    }
    return this.#overLibp2p(peer, path, target, signal, early);
  }

  /** A TCP connection to a target on this very node (no tunnel). */
  connectLocal(target: StreamTarget): Promise<Duplex> {
    if (target.protocol !== "TCP") throw new LeafmeshError("TUNNEL_FAILED", "UDP to this node itself needs no tunnel: the traffic actor sends it directly");
    return new Promise((resolve, reject) => {
      const socket = netConnect({ host: target.host, port: target.port });
      socket.once("connect", () => resolve(socket));
      socket.once("error", reject);
    });
  }

  /** A stream over a TLS carrier; undefined (libp2p then) when it cannot, or failed lately towards that peer. */
  async #overTls(carrier: Carrier, peer: CarrierPeer, target: StreamTarget, signal: AbortSignal | undefined, early: EarlyBytes | undefined): Promise<Duplex | undefined> {
    const { backoff } = this.#options;
    if (backoff.isBackedOff(carrier.name, peer)) return undefined;
    try {
      const stream = await carrier.open(peer);
      if (!stream) return undefined;
      this.#options.onTlsOpened?.();
      return await this.#request(stream, target, peer, carrier.name, signal, early);
    } catch (error) {
      if (error instanceof TargetRefusedError) throw error; // libp2p would not change that
      if (error instanceof EarlyBytesInDoubt) throw error; // the client's first bytes may have reached the target: not sent again
      if (signal?.aborted) throw abandoned(peer); // the client left: no fault of the carrier
      backoff.failed(carrier.name, peer, error);
      return undefined;
    } finally {
      this.#prepareSoon(carrier, peer);
    }
  }

  /** The next stream's session, made `nextSessionDelayMs` after the last open towards the node, unless its carrier failed. */
  #prepareSoon(carrier: Carrier, peer: CarrierPeer): void {
    if (!carrier.prepareNext) return;
    const key = `${carrier.name} ${peer.node}`;
    clearTimeout(this.#nextSessions.get(key));
    const timer = setTimeout(() => {
      this.#nextSessions.delete(key);
      if (!this.#options.backoff.isBackedOff(carrier.name, peer)) carrier.prepareNext!(peer);
    }, nextSessionDelayMs);
    timer.unref();
    this.#nextSessions.set(key, timer);
  }

  /** No more sessions made ahead (the tunnel stops). */
  stop(): void {
    for (const timer of this.#nextSessions.values()) clearTimeout(timer);
    this.#nextSessions.clear();
  }

  /**
   * Best connection first; a connection closing under us (both sides punched at once,
   * a path switch) gives way to the next, and after a short pause to a fresh one. Bounded: 3 rounds.
   */
  async #overLibp2p(peer: CarrierPeer, path: PathKind, target: StreamTarget, signal: AbortSignal | undefined, early: EarlyBytes | undefined): Promise<Duplex> {
    let lastError: unknown;
    for (let round = 0; round < 3; round++) {
      if (round > 0) await new Promise((resolve) => setTimeout(resolve, 250 * round));
      for (const { connection } of this.#options.connections.ranked(peer.peerId)) {
        if (signal?.aborted) throw abandoned(peer);
        try {
          return await this.#request(await this.#options.libp2p.openOn(connection), target, peer, "libp2p", signal, early);
        } catch (error) {
          if (error instanceof TargetRefusedError || error instanceof EarlyBytesInDoubt) throw error; // no other path changes that; nor sends them again
          if (signal?.aborted) throw abandoned(peer);
          lastError = error;
        }
      }
    }
    if (!lastError) throw new LeafmeshError("TUNNEL_FAILED", `no connection to '${peer.node}' right now (path ${path}); retry`);
    throw new LeafmeshError("TUNNEL_FAILED", `could not open a stream to '${peer.node}': ${describeError(lastError)}`, { cause: lastError });
  }

  /**
   * The target header on a fresh carrier stream; a stream whose header exchange failed is destroyed (it would
   * otherwise stay open, unused), and so is one whose client left meanwhile: reset, so the far agent drops its target.
   */
  async #request(stream: Duplex, target: StreamTarget, peer: CarrierPeer, carrier: CarrierName, signal: AbortSignal | undefined, early: EarlyBytes | undefined): Promise<Duplex> {
    let gone = () => undefined as void;
    const left = new Promise<never>((_resolve, reject) => {
      gone = () => {
        resetStream(stream, abandoned(peer));
        reject(abandoned(peer));
      };
    });
    left.catch(() => undefined); // rejects only when the client left, and then the race below says so
    if (signal?.aborted) gone();
    else signal?.addEventListener("abort", gone, { once: true });
    try {
      // Not on a spare whose peer was not heard lately (spares.ts): it may be dead without a FIN, and bytes sent to it
      // could be neither answered nor proven unread. They wait for its answer, and go elsewhere if none comes.
      const sent = early && !isQuietSpare(stream) ? early : undefined;
      const requested = requestTarget(stream, target, { timeoutMs: this.#options.headerTimeoutMs, peer: `${peer.node} (${carrier})`, log: this.#options.log, early: sent });
      if (!signal) return await requested;
      requested.catch(() => undefined); // its failure once the race below was lost to the abort is expected
      return await Promise.race([requested, left]);
    } catch (error) {
      stream.destroy();
      early?.unanswered();
      if (early?.inDoubt) throw new EarlyBytesInDoubt(early.sentBytes, error);
      throw error;
    } finally {
      signal?.removeEventListener("abort", gone);
    }
  }
}
