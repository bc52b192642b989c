/**
 * The serving end of tunnel streams, whatever carried them here (a libp2p
 * stream, a TLS session over a TCP connection, a punched connection or a relay
 * channel): reads the target header, connects to the target, answers with the
 * status, then splices — TCP with backpressure both ways, UDP as 2-byte-length
 * framed datagrams (the traffic actor's framing). A TCP client's early bytes
 * (sent behind the header) wait unread until the target is connected, go to it
 * first, and are dropped with a refusal: never written to a refused target.
 *
 * Every inbound tunnel stream of this node passes `serve`: the place for what
 * holds for all of them (limits per peer, how a cut is passed on, and the targets
 * this node serves to no other node: `servedLocallyOnly`, internalTrafficPolicy Local).
 *
 * ```ts
 * const server = new StreamServer({ node: "edge-b", log });
 * server.serve(inboundStream, "edge-a");
 * ```
 */
import { isIP, Socket, type LookupFunction, type SocketConstructorOpts } from "node:net";
import { createSocket } from "node:dgram";
import { lookup } from "node:dns";
import type { Duplex, Readable, Writable } from "node:stream";
import { LeafmeshError, describeError } from "../../lib/errors.ts";
import { joinStreams } from "../../lib/join-streams.ts";
import { watchesReadsOnly } from "../../lib/read-buffers.ts";
import type { Logger } from "../../lib/log.ts";
import { DatagramDecoder, datagramBacklogBytes, encodeDatagram, localTrafficPolicyCode, overCapacityCode } from "../../bus/streams.ts";
import { BurstLog } from "../../lib/burst-log.ts";
import { systemClock } from "../../lib/clock.ts";
import { frameEnds, frameReads, sessionFramesEnds } from "../../lib/end-frames.ts";
import { encodeStatus, readTarget, statusOk, statusRefused, StreamNeverStarted, type StreamTarget } from "./stream-header.ts";

import { defaultMaxStreamsPerPeer } from "./limits.ts";

export { defaultMaxStreamsPerPeer };

/** What `batchWrites` gathers before the writer pushes back. */
const batchBytes = 256 * 1024;

export interface StreamServerOptions {
  /** This node's name, as refusals say it. */
  node: string;
  log: Logger;
  /** @default 5_000 — connecting to a target; also how long a fresh stream's header may take. */
  targetConnectTimeoutMs?: number;
  /**
   * @default 4_096 — streams one peer may have open here at once (counted per carrier label: its
   * libp2p streams apart from its TLS ones); beyond, a stream is refused with `OVER_CAPACITY`. A
   * peer's own proxies admit 2,048 + 1,024 at most by default; this bounds a peer that does not.
   */
  maxStreamsPerPeer?: number;
  /**
   * Why this node serves a target to no other node (its host an IP address; a name is checked at each address it
   * resolves to), or undefined to serve it: the agent hands in internalTrafficPolicy Local's rule
   * (services/traffic/local-only.ts). Absent: every target is served.
   */
  servedLocallyOnly?: (target: StreamTarget) => string | undefined;
}

/** The reason a refusal by `servedLocallyOnly` is counted and logged under. */
export const localOnlyReason = "target served to its own node only (internalTrafficPolicy Local)";

/** A name that resolved to an address `servedLocallyOnly` refuses. */
class ServedLocallyOnly extends Error {
  readonly code = localTrafficPolicyCode;
}

export class StreamServer {
  readonly #options: StreamServerOptions;
  readonly #targetTimeoutMs: number;
  readonly #openByPeer = new Map<string, number>();
  readonly #refusals: BurstLog;
  /** Streams refused by reason (for status and metrics). */
  readonly refused = new Map<string, number>();
  /** What was dropped inside streams under way, by reason (UDP answers past the stream's backlog). */
  readonly dropped = new Map<string, number>();

  constructor(options: StreamServerOptions) {
    this.#options = options;
    this.#targetTimeoutMs = options.targetConnectTimeoutMs ?? 5_000;
    this.#refusals = new BurstLog({ log: options.log, clock: systemClock, message: "tunnel stream refused" });
  }

  /** How long a target connect may take (an opener waits for the status a little longer). */
  get targetTimeoutMs(): number {
    return this.#targetTimeoutMs;
  }

  /**
   * Serves one tunnel stream from a proven peer: reads the target header, connects
   * to the target, replies with the status, then splices. `headerTimeoutMs` is
   * longer for a TLS session made ahead of its stream (a spare waits for its target).
   */
  async serve(duplex: Duplex, peer: string, options: { headerTimeoutMs?: number; onTarget?: () => void } = {}): Promise<void> {
    const log = this.#options.log;
    duplex.on("error", (error) => log.debug({ err: error, peer }, "tunnel stream error"));
    const open = this.#openByPeer.get(peer) ?? 0;
    const limit = this.#options.maxStreamsPerPeer ?? defaultMaxStreamsPerPeer;
    if (open >= limit) {
      // Refused before its header is read: the opener reads this status in place of the target's.
      this.refused.set("peer over its limit", (this.refused.get("peer over its limit") ?? 0) + 1);
      this.#refusals.note("peer over its limit", { peer, open });
      duplex.end(encodeStatus(statusRefused, `${this.#options.node} carries ${open} streams from ${peer}, its limit (--tunnel-max-streams-per-peer)`, overCapacityCode));
      // Read to its end (unread, the header would keep it from closing), and no longer than a header may take.
      duplex.resume();
      setTimeout(() => duplex.destroy(), this.#targetTimeoutMs).unref();
      return;
    }
    this.#openByPeer.set(peer, open + 1);
    duplex.once("close", () => {
      const left = (this.#openByPeer.get(peer) ?? 1) - 1;
      if (left > 0) this.#openByPeer.set(peer, left);
      else this.#openByPeer.delete(peer);
    });
    let target: StreamTarget;
    try {
      target = await readTarget(duplex, options.headerTimeoutMs ?? this.#targetTimeoutMs);
    } catch (error) {
      // A spare session retired unused closes before any header: said at debug, not as a peer's fault.
      if (error instanceof StreamNeverStarted) log.debug({ err: error.cause, peer }, "tunnel carrier closed before a stream header (a spare session retired, or the peer left)");
      else log.warn({ err: error, peer }, "tunnel stream refused: bad header");
      duplex.destroy();
      return;
    }
    options.onTarget?.();
    // A TCP stream's early bytes (stream-header.ts) come framed right behind its header: read framed from here on.
    if (target.protocol === "TCP" && sessionFramesEnds(duplex)) frameReads(duplex);
    const why = isIP(target.host) ? this.#options.servedLocallyOnly?.(target) : undefined;
    if (why) return this.#refuseLocalOnly(duplex, peer, target, why);
    if (target.protocol === "UDP") return this.#serveUdp(duplex, target, peer);
    this.#spliceTcp(duplex, target, peer);
  }

  /**
   * A UDP target by name is resolved, and each address checked, before the status (as a TCP one is before its
   * connect): a refused or unknown name is refused with its code. Resolved after an "ok", as dgram would, the
   * stream was cut instead, and the opener counted a cut against the endpoint where a refusal said why.
   */
  async #serveUdp(duplex: Duplex, target: StreamTarget, peer: string): Promise<void> {
    let host = target.host;
    if (!isIP(host)) {
      const check = this.#options.servedLocallyOnly;
      try {
        host = await resolveUdpTarget(host, this.#targetTimeoutMs, check && ((address) => check({ ...target, host: address })));
      } catch (error) {
        if (duplex.destroyed) return;
        if (error instanceof ServedLocallyOnly) return this.#refuseLocalOnly(duplex, peer, target, error.message);
        return this.#refuseUnreachable(duplex, target, error as NodeJS.ErrnoException);
      }
      if (duplex.destroyed) return; // the stream went while its name was resolved
    }
    duplex.write(encodeStatus(statusOk));
    spliceUdp(duplex, { host, port: target.port }, this.#options.log, (reason) => this.dropped.set(reason, (this.dropped.get(reason) ?? 0) + 1));
  }

  /** A target that cannot be reached (not connected, not resolved): said to the opener with the error's code. */
  #refuseUnreachable(duplex: Duplex, target: StreamTarget, error: NodeJS.ErrnoException, code = error.code): void {
    duplex.write(encodeStatus(statusRefused, `${this.#options.node} cannot connect to ${target.host}:${target.port}: ${describeError(error)}`, code));
    duplex.end();
    // Early bytes and datagrams held for the target are dropped, never written anywhere: the opener sends them elsewhere.
    duplex.resume();
  }

  /** Refused by `servedLocallyOnly`: counted, logged once per burst, and said to the opener with its code. */
  #refuseLocalOnly(duplex: Duplex, peer: string, target: StreamTarget, why: string): void {
    this.refused.set(localOnlyReason, (this.refused.get(localOnlyReason) ?? 0) + 1);
    this.#refusals.note(localOnlyReason, { peer, target: `${target.host}:${target.port}/${target.protocol}`, why });
    duplex.write(encodeStatus(statusRefused, `${this.#options.node} refuses the stream: ${why}`, localTrafficPolicyCode));
    duplex.end();
    // Early bytes and datagrams behind the header are dropped unread, never written anywhere.
    duplex.resume();
  }


  #spliceTcp(duplex: Duplex, target: StreamTarget, peer: string): void {
    // A write buffer that holds what batchWrites gathers in one turn (the default, 16 KiB, is one TLS record).
    // net.Socket hands stream options to its Duplex, though the typings omit them.
    const socketOptions: SocketConstructorOpts & { writableHighWaterMark: number } = { writableHighWaterMark: batchBytes, allowHalfOpen: true };
    const check = this.#options.servedLocallyOnly;
    // A name: each address it resolves to is checked before the connect (a peer must not reach by "10.5" what it may not by 10.0.0.5).
    const checked = check && !isIP(target.host) ? { lookup: checkedLookup((address) => check({ ...target, host: address })) } : {};
    const socket = new Socket(socketOptions).setTimeout(this.#targetTimeoutMs).connect({ host: target.host, port: target.port, ...checked });
    // Whether the target answered: after that, an error is a cut of a stream under way, never a refused connect
    // (socket.remoteAddress cannot tell: it is gone once a reset destroyed the socket).
    let connected = false;
    socket.once("connect", () => {
      connected = true;
      socket.setTimeout(0);
      if (duplex.destroyed) return void socket.resetAndDestroy(); // the stream went while the target was dialled
      const status = encodeStatus(statusOk);
      // A session that frames ends frames this TCP stream after its status, as the opener reads it (stream-header.ts).
      if (sessionFramesEnds(duplex)) frameEnds(duplex, { rawWrites: status.length });
      duplex.write(status);
      spliceToTarget(duplex, socket);
    });
    let timedOut = false;
    socket.once("timeout", () => {
      timedOut = true;
      socket.destroy(new LeafmeshError("TUNNEL_TARGET_REFUSED", `connect to ${target.host}:${target.port} timed out`));
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      if (connected || duplex.destroyed) return; // a cut after connect: the splice resets the stream
      if (error instanceof ServedLocallyOnly) return this.#refuseLocalOnly(duplex, peer, target, error.message);
      this.#refuseUnreachable(duplex, target, error, timedOut ? "ETIMEDOUT" : error.code);
    });
    // A stream that goes while its target is being dialled takes the dial with it (nothing was carried yet).
    duplex.once("close", () => {
      if (!connected) socket.destroy();
    });
  }
}

/**
 * The tunnel stream and its target's connection joined (lib/join-streams.ts): bytes
 * both ways with backpressure, a real end passed on as a half-close, and anything
 * else — the target's RST, the stream's reset by its far end, a carrier cut — as a
 * reset of the other side (STYLE 20): the client and the target each read an
 * error, never a clean end of a stream that did not finish.
 */
export function spliceToTarget(stream: Duplex, target: Socket): void {
  batchWrites(stream, target);
  joinStreams(stream, target);
}

/**
 * The chunks `from` emits in one turn of the event loop go to `to` in one write:
 * `to` is corked at the turn's first chunk and uncorked at setImmediate (one
 * writev). Register it before whatever copies from → to, so the cork comes first.
 * A TLS session hands its plaintext over in 16 KiB records; written one by one,
 * each is a syscall on the target socket (bench/tunnel, direct: ~10% less CPU at
 * the receiving agent, within the noise of one run).
 */
export function batchWrites(from: Readable, to: Writable): void {
  let corked = false;
  const uncork = () => {
    corked = false;
    to.uncork();
  };
  const onData = () => {
    if (corked || to.destroyed) return;
    corked = true;
    to.cork();
    setImmediate(uncork);
  };
  // Once the join reads bulk into a buffer of its own (lib/read-buffers.ts), this watcher goes: a record
  // written into the uncorked target costs less than a record through the stream's allocation and 'data'
  // (TLS into a TCP sink on loopback, three runs each: 546-580 MiB/s against 424-485 with the batching).
  from.on("data", Object.assign(onData, { [watchesReadsOnly]: true }));
}

/** UDP over a stream: framed datagrams (bus/streams.ts), one UDP socket to the target; answers past `datagramBacklogBytes` unsent are dropped (`onDrop`). */
export function spliceUdp(stream: Duplex, target: { host: string; port: number }, log: Logger, onDrop: (reason: string) => void = () => undefined): void {
  const socket = createSocket(target.host.includes(":") ? "udp6" : "udp4");
  const decoder = new DatagramDecoder();
  // Read only once connected: a send() on a socket still connecting is taken for an unconnected one
  // and throws (no port), and a datagram can come in the same read as the header. Until then the
  // bytes wait in the stream, within its own window.
  socket.connect(target.port, target.host, () => {
    stream.on("data", (chunk: Buffer) => {
      for (const datagram of decoder.push(chunk)) socket.send(datagram);
    });
  });
  socket.on("message", (message) => {
    // Bounded as the opening end is (services/traffic/udp-proxy.ts): a stream that cannot take more
    // (a relay channel out of credit, a stalled peer) drops answers instead of queueing them all.
    if (stream.writableLength > datagramBacklogBytes) return onDrop("udp answer dropped: tunnel backlog");
    stream.write(encodeDatagram(message));
  });
  socket.on("error", (error) => {
    log.debug({ err: error, target }, "udp target error");
    stream.destroy(error);
  });
  stream.once("close", () => socket.close());
  stream.once("end", () => stream.end());
}

/**
 * The address a UDP target's name is sent to: its first IPv4 address (as a udp4 socket resolved it before), else
 * its first IPv6 one. Every address it resolves to passes `refuse` first (ServedLocallyOnly); bounded by `timeoutMs`.
 */
function resolveUdpTarget(name: string, timeoutMs: number, refuse: ((address: string) => string | undefined) | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    // getaddrinfo cannot be cancelled: past the timeout its answer is ignored.
    const timer = setTimeout(() => reject(Object.assign(new Error(`resolving ${name} timed out after ${timeoutMs} ms`), { code: "ETIMEDOUT" })), timeoutMs);
    checkedLookup(refuse ?? (() => undefined))(name, { all: true }, (error, addresses) => {
      clearTimeout(timer);
      if (error) return reject(error);
      const all = addresses as unknown as { address: string; family: number }[];
      const chosen = all.find((entry) => entry.family === 4) ?? all[0];
      if (chosen) resolve(chosen.address);
      else reject(Object.assign(new Error(`${name} resolves to no address`), { code: "ENOTFOUND" }));
    });
  });
}

/**
 * dns.lookup, with every address a name resolves to passed to `refuse` first: one it refuses fails the lookup
 * with ServedLocallyOnly (net's connect resolves a TCP target through it, resolveUdpTarget a UDP one).
 */
function checkedLookup(refuse: (address: string) => string | undefined): LookupFunction {
  return (hostname, options, callback) => {
    lookup(hostname, options, (error: NodeJS.ErrnoException | null, address: string | { address: string }[], family?: number) => {
      if (error) return callback(error, "", 0);
      for (const each of Array.isArray(address) ? address.map((entry) => entry.address) : [address]) {
        const why = refuse(each);
        if (why) return callback(new ServedLocallyOnly(why), "", 0);
      }
      (callback as (error: null, address: unknown, family?: number) => void)(null, address, family);
    });
  };
}
