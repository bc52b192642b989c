/**
 * The carrier contract: what carries the bytes of one tunnel stream between two
 * nodes. A path (paths.ts) says how two nodes reach each other — direct,
 * hole-punched or relayed — and always holds a libp2p connection; a carrier is
 * what one stream rides on over that path:
 *
 * | carrier      | path kind    | what it is                                                         |
 * |--------------|--------------|--------------------------------------------------------------------|
 * | libp2p       | any          | a stream on the pair's libp2p connection (noise + yamux)           |
 * | direct TLS   | direct       | a TCP connection of its own to the peer's TLS port                 |
 * | punched TLS  | hole-punched | a TCP connection punched for the stream ahead of time, under TLS   |
 * | relayed TLS  | relayed      | a relay channel of its own (relay.ts), under TLS end to end        |
 *
 * The TLS carriers (tls-carriers.ts) need security on (node certificates) and a
 * peer that serves TLS streams; libp2p carries whatever they cannot
 * (stream-opener.ts tries them in that order).
 *
 * Every carrier stream is a Node Duplex that keeps these promises, checked on each
 * carrier by one suite (test/support/carrier-compliance.ts):
 * - order: bytes arrive as written, none lost, none twice;
 * - half-close: `end()` ends the other end's reading ('end' there) while the
 *   other direction keeps flowing until that end ends too;
 * - reset: `destroy()` before both ends ended reaches the other end as an
 *   'error', never as an 'end' — a cut stream must not pass for a whole one;
 * - backpressure: `write()` returns false while the far reader is slow, and what
 *   sits between writer and reader stays bounded (a window, not the transfer);
 * - size: a transfer of any length arrives whole (64 MiB in the suite).
 *
 * ```ts
 * const stream = await carrier.open({ node: "edge-b", peerId });   // undefined: this carrier cannot now
 * if (stream) await requestTarget(stream, target, { timeoutMs, peer: "edge-b", log });
 * ```
 */
import type { Duplex } from "node:stream";
import type { Clock } from "../../lib/clock.ts";
import { describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import type { PathKind } from "./path-machine.ts";

/** The node at the far end, and the libp2p peer id it is known by now. */
export interface CarrierPeer {
  node: string;
  peerId: string;
  /** The mesh protocol level its node record says (bus/protocol.ts); none known: treated as 0 (what a stream may send it). */
  protocol?: number;
}

export type CarrierName = "libp2p" | "direct TLS" | "punched TLS" | "relayed TLS";

export interface Carrier {
  readonly name: CarrierName;
  /**
   * A stream to the tunnel service of `peer`, proven to be that node (its
   * certificate, or the libp2p connection's identify); `undefined` when this
   * carrier cannot carry one right now (the next one is tried). A rejection
   * means it failed: the caller backs off from it towards that peer.
   */
  open(peer: CarrierPeer): Promise<Duplex | undefined>;
  /**
   * Makes ahead the session the next stream to `peer` takes (spares.ts), called once a stream's open is done.
   * Made during the open, its handshake's CPU came before the open's own steps: on a spare ready 100 ms ahead,
   * the far end's connect to the target waited 1–5 ms behind the next spare's handshake (bench/tunnel's first byte).
   */
  prepareNext?(peer: CarrierPeer): void;
}

/** @default 60_000 — how long a carrier that failed towards a peer is left alone (a firewall in between would cost every stream a timeout). */
export const carrierRetryMs = 60_000;

/**
 * Carriers that failed towards a peer lately, so streams skip them for a while
 * (libp2p then carries them). Said once per carrier and peer; bounded by the
 * peers this node streams to (one entry per carrier and peer).
 */
export class CarrierBackoff {
  readonly #until = new Map<string, number>();
  readonly #clock: Clock;
  readonly #log: Logger;

  constructor(options: { clock: Clock; log: Logger }) {
    this.#clock = options.clock;
    this.#log = options.log;
  }

  isBackedOff(carrier: CarrierName, peer: CarrierPeer): boolean {
    return (this.#until.get(`${carrier} ${peer.peerId}`) ?? 0) > this.#clock.monotonic();
  }

  failed(carrier: CarrierName, peer: CarrierPeer, error: unknown): void {
    const key = `${carrier} ${peer.peerId}`;
    if (!this.#until.has(key)) this.#log.warn({ peer: peer.node, err: describeError(error) }, failureSaid[carrier]);
    this.#until.set(key, this.#clock.monotonic() + carrierRetryMs);
  }
}

const failureSaid: Record<CarrierName, string> = {
  libp2p: "libp2p stream failed",
  "direct TLS": "TLS stream to a direct peer failed; its streams use libp2p for a minute",
  "relayed TLS": "TLS stream over the relay failed; its streams use the relayed libp2p connection for a minute",
  "punched TLS": "punching a TCP connection for TLS streams failed; streams use the hole-punched libp2p connection for a minute",
};

/** The TLS carrier of each path kind. */
export const tlsCarrierOf: Record<PathKind, CarrierName> = { direct: "direct TLS", "hole-punched": "punched TLS", relayed: "relayed TLS" };
