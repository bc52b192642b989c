/**
 * The libp2p host of one agent: TCP, noise (with the mesh's pre-shared key bound
 * into its handshake), yamux, identify, ping and mDNS, plus the tunnel protocol:
 * a stream that asks the remote agent to connect to a target and splice.
 *
 * Every path ends as an ordinary libp2p connection: a LAN dial through
 * @libp2p/tcp, a hole-punched socket or a relay channel handed to
 * `upgrade()` (the libp2p upgrader runs noise + yamux over it).
 *
 * ```ts
 * const host = await startTunnelHost({ node: "edge-a", listen: ["/ip4/0.0.0.0/tcp/4101"], psk, log });
 * const connection = await host.upgrade(socket, "outbound", remoteAddr);
 * const duplex = await host.openTarget(connection, { host: "10.0.0.5", port: 80, protocol: "TCP" });
 * ```
 */
import { createHash } from "node:crypto";
import { Socket, type SocketConstructorOpts } from "node:net";
import { createSocket } from "node:dgram";
import type { Duplex, Readable, Writable } from "node:stream";
import { createLibp2p, type Libp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify, type Identify } from "@libp2p/identify";
import { ping, type Ping } from "@libp2p/ping";
import { mdns } from "@libp2p/mdns";
import type { Connection, Stream, Upgrader, ComponentLogger } from "@libp2p/interface";
import { multiaddr, type Multiaddr } from "@multiformats/multiaddr";
import { LeafmeshError, describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { DuplexMultiaddrConnection, streamToDuplex } from "./libp2p-duplex.ts";
import { tunnelNoiseCrypto } from "./noise-crypto.ts";
import { connectTlsStream, startTlsStreamServer, tlsClientOver, tlsServerOver } from "./tls-streams.ts";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey } from "@libp2p/peer-id";
import { checkPeerClaim, makePeerProof, tlsPortOf, userAgentFor, type NodeIdentity } from "./node-identity.ts";

export const tunnelProtocol = "/leafmesh/tunnel/1.0.0";

export interface TunnelTarget {
  host: string;
  port: number;
  protocol: "TCP" | "UDP";
}

/** Parses a PSK in the go-ipfs swarm.key format (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits). */
export function parsePsk(psk: string | Uint8Array): Uint8Array {
  const text = typeof psk === "string" ? psk : new TextDecoder().decode(psk);
  const lines = text.trim().split(/\r?\n/);
  if (lines.length !== 3 || lines[0] !== "/key/swarm/psk/1.0.0/" || lines[1] !== "/base16/" || !/^[0-9a-fA-F]{64}$/.test(lines[2])) {
    throw new LeafmeshError(
      "CONFIG_INVALID",
      "tunnel psk: expected the swarm.key format: three lines '/key/swarm/psk/1.0.0/', '/base16/' and 64 hex digits (make one with `leafmesh keys psk`)",
    );
  }
  return new TextEncoder().encode(`${lines.join("\n")}\n`);
}

/** The remote agent answered that it cannot reach the stream's target: no other path or carrier changes that. */
export class TargetRefusedError extends LeafmeshError {
  constructor(message: string) {
    super("TUNNEL_FAILED", message);
  }
}

/** How long a TLS session made ahead of a stream (a spare, relayed or punched) is kept unused. */
export const spareSessionLifetimeMs = 60_000;

/** Noise transport messages carry at most 65,535 bytes, 16 of them the tag (the noise spec, section 3). */
const noiseMaxPlaintext = 65_535 - 16;
const yamuxHeaderBytes = 12;

/** The noise prologue made of the PSK: peers with another key fail the handshake. */
export function pskPrologue(psk: Uint8Array): Uint8Array {
  return createHash("sha256").update("leafmesh noise prologue\0").update(psk).digest();
}

/** A salted hash of the PSK, published in the node record: lets peers say "the keys differ". */
export function pskFingerprint(psk: Uint8Array): string {
  return createHash("sha256").update("leafmesh psk fingerprint\0").update(psk).digest("hex").slice(0, 16);
}

export interface TunnelHostOptions {
  node: string;
  /** libp2p listen multiaddrs, e.g. "/ip4/0.0.0.0/tcp/4101". */
  listen: string[];
  psk: Uint8Array;
  log: Logger;
  /** @default true */
  mdns?: boolean;
  /** @default 1_000 — mDNS query interval: a LAN neighbour is found within about a second. */
  mdnsIntervalMs?: number;
  /** @default 5_000 — connecting to a target on the remote side. */
  targetConnectTimeoutMs?: number;
  /**
   * With security on: the node's certificate and key and the mesh CA. The host then
   * announces a signed proof of (node, peer id) in identify, hangs up on a peer whose
   * claim it cannot verify, and serves tunnel streams only to proven nodes (node-identity.ts).
   */
  identity?: NodeIdentity;
  /** @default 5_000 — how long an inbound tunnel stream waits for its peer's identify. */
  identifyTimeoutMs?: number;
  /**
   * With an identity: where streams on direct paths are served over their own TLS
   * connections (tls-streams.ts); port 0 picks one. Announced in identify.
   */
  tlsStreams?: { host: string; port: number };
}

export interface TunnelHost {
  readonly libp2p: Libp2p<{ identify: Identify; ping: Ping; leafmeshUpgrade: { upgrader: Upgrader; logger: ComponentLogger } }>;
  readonly pskFingerprint: string;
  /** Makes a libp2p connection of a connected socket or relay channel (noise + yamux over it). */
  upgrade(duplex: Duplex, direction: "inbound" | "outbound", remoteAddr: Multiaddr): Promise<Connection | undefined>;
  /** Opens a tunnel stream on a connection: the remote side connects to `target` and splices. */
  openTarget(connection: Connection, target: TunnelTarget): Promise<Duplex>;
  /**
   * The same over a TLS connection of its own to the peer's address on `connection`
   * (a direct path), when both ends serve TLS streams; undefined when they cannot.
   */
  openTlsTarget(connection: Connection, target: TunnelTarget, timeoutMs: number): Promise<Duplex | undefined>;
  /** Whether a peer announced in identify that it serves TLS streams (and this host does too). */
  servesTls(peerId: string): boolean;
  /** TLS with `node` over an open relay channel or punched connection (it must serve TLS streams): resolves once the handshake proved it is `node`. */
  tlsOver(channel: Duplex, node: string, carrier: "relayed" | "hole-punched", timeoutMs: number): Promise<Duplex>;
  /** Uses a TLS session from tlsOver for one tunnel stream: sends the target, waits for the status. */
  openTargetOn(session: Duplex, node: string, target: TunnelTarget): Promise<Duplex>;
  /** Serves the tunnel stream under TLS that arrives from `peer` on a relay channel or a connection punched for it. */
  serveTlsOver(channel: Duplex, peer: string, carrier: "relayed" | "hole-punched"): void;
  /** Where this host serves TLS streams, if it does. */
  readonly tlsStreamPort: number | undefined;
  /** TLS streams opened and served, and connections refused by reason. */
  tlsStats(): { opened: number; served: number; refused: Record<string, number> };
  /** The node name a peer announced through identify (proven, with an identity), if known. */
  nodeOf(peerId: string): string | undefined;
  stop(): Promise<void>;
}

const statusOk = 0;
const statusError = 1;

function frameHeader(json: unknown): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify(json));
  const bytes = new Uint8Array(2 + body.byteLength);
  new DataView(bytes.buffer).setUint16(0, body.byteLength);
  bytes.set(body, 2);
  return bytes;
}

/** "/ip4/198.18.1.12/tcp/4101[/p2p/…]" → "198.18.1.12": the address of a plain TCP connection, nothing for relayed or other ones. */
function tcpHostOf(address: Multiaddr): string | undefined {
  const match = /^\/(ip4|ip6)\/([^/]+)\/tcp\/\d+(\/p2p\/[^/]+)?$/.exec(address.toString());
  return match?.[2];
}

/** Reads exactly `size` bytes from a Duplex in paused mode. */
function readExactly(duplex: Duplex, size: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new LeafmeshError("TUNNEL_FAILED", `tunnel header not received within ${timeoutMs} ms`)), timeoutMs);
    const finish = (error?: Error, value?: Buffer) => {
      clearTimeout(timer);
      duplex.off("readable", onReadable);
      duplex.off("end", onEnd);
      duplex.off("error", onError);
      if (error) reject(error);
      else resolve(value!);
    };
    const onReadable = () => {
      const chunk = duplex.read(size) as Buffer | null;
      if (chunk) finish(undefined, chunk);
    };
    const onEnd = () => finish(new LeafmeshError("TUNNEL_FAILED", "tunnel stream ended before its header"));
    const onError = (error: Error) => finish(error);
    duplex.on("readable", onReadable);
    duplex.once("end", onEnd);
    duplex.once("error", onError);
    onReadable();
  });
}

async function readHeader(duplex: Duplex, timeoutMs: number): Promise<unknown> {
  const length = (await readExactly(duplex, 2, timeoutMs)).readUInt16BE(0);
  return JSON.parse((await readExactly(duplex, length, timeoutMs)).toString("utf8"));
}

/** What carries a TLS stream that is not on a connection of its own, as errors and logs say it. */
const carrierName = { relayed: "the relay", "hole-punched": "a punched connection" } as const;

/** What `pipeBatched` gathers before the writer pushes back. */
const batchBytes = 256 * 1024;

/**
 * `from.pipe(to)`, with the chunks that arrive in one turn of the event loop written
 * to `to` in one go (cork until setImmediate: one writev). A TLS session hands its
 * plaintext over in 16 KiB records; written one by one, each is a syscall on the
 * target socket (bench/tunnel, direct: ~10% less CPU at the receiving agent, within
 * the noise of one run).
 */
export function pipeBatched(from: Readable, to: Writable): void {
  let corked = false;
  const uncork = () => {
    corked = false;
    to.uncork();
  };
  const resume = () => from.resume();
  from.on("data", (chunk: Buffer) => {
    if (to.destroyed) return;
    if (!corked) {
      corked = true;
      to.cork();
      setImmediate(uncork);
    }
    if (!to.write(chunk)) {
      from.pause();
      to.once("drain", resume);
    }
  });
  from.once("end", () => to.end());
}

/** UDP over a stream: each datagram is a 2-byte length and its bytes. */
export function spliceUdp(stream: Duplex, target: { host: string; port: number }, log: Logger): void {
  const socket = createSocket(target.host.includes(":") ? "udp6" : "udp4");
  socket.connect(target.port, target.host);
  let buffered = Buffer.alloc(0);
  stream.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.byteLength >= 2) {
      const length = buffered.readUInt16BE(0);
      if (buffered.byteLength < 2 + length) break;
      socket.send(buffered.subarray(2, 2 + length));
      buffered = buffered.subarray(2 + length);
    }
  });
  socket.on("message", (message) => {
    const frame = Buffer.alloc(2 + message.byteLength);
    frame.writeUInt16BE(message.byteLength, 0);
    message.copy(frame, 2);
    stream.write(frame);
  });
  socket.on("error", (error) => {
    log.debug({ err: error, target }, "udp target error");
    stream.destroy(error);
  });
  stream.once("close", () => socket.close());
  stream.once("end", () => stream.end());
}

export async function startTunnelHost(options: TunnelHostOptions): Promise<TunnelHost> {
  const log = options.log;
  const nodes = new Map<string, string>();
  const privateKey = await generateKeyPair("Ed25519");
  const ownPeerId = peerIdFromPrivateKey(privateKey).toString();
  const proof = options.identity ? makePeerProof(options.node, ownPeerId, options.identity) : undefined;
  const tlsStats = { opened: 0, served: 0 };
  const targetTimeout = options.targetConnectTimeoutMs ?? 5_000;
  /**
   * Serves one tunnel stream from a proven peer, whatever carries it (a libp2p
   * stream, a TLS connection): reads the target header, connects to the target,
   * replies with the status, then splices.
   */
  const serveTunnelStream = async (duplex: Duplex, peer: string, headerTimeoutMs = targetTimeout, onTarget?: () => void): Promise<void> => {
    duplex.on("error", (error) => log.debug({ err: error, peer }, "tunnel stream error"));
    let target: TunnelTarget;
    try {
      target = (await readHeader(duplex, headerTimeoutMs)) as TunnelTarget;
      if (typeof target?.host !== "string" || !Number.isInteger(target.port) || (target.protocol !== "TCP" && target.protocol !== "UDP")) {
        throw new LeafmeshError("TUNNEL_FAILED", "malformed tunnel target");
      }
    } catch (error) {
      log.warn({ err: error, peer }, "tunnel stream refused: bad header");
      duplex.destroy();
      return;
    }
    onTarget?.();
    const reply = (status: number, message?: string) => duplex.write(Buffer.concat([Buffer.from([status]), Buffer.from(frameHeader({ message: message ?? "" }))]));
    if (target.protocol === "UDP") {
      reply(statusOk);
      spliceUdp(duplex, target, log);
      return;
    }
    // A write buffer that holds what pipeBatched gathers in one turn (the default, 16 KiB, is one TLS record).
    // net.Socket hands stream options to its Duplex, though the typings omit them.
    const socketOptions: SocketConstructorOpts & { writableHighWaterMark: number } = { writableHighWaterMark: batchBytes };
    const socket = new Socket(socketOptions).setTimeout(targetTimeout).connect({ host: target.host, port: target.port });
    socket.once("connect", () => {
      socket.setTimeout(0);
      reply(statusOk);
      socket.pipe(duplex);
      pipeBatched(duplex, socket);
    });
    socket.once("timeout", () => socket.destroy(new LeafmeshError("TUNNEL_FAILED", `connect to ${target.host}:${target.port} timed out`)));
    socket.once("error", (error) => {
      if (socket.connecting || !socket.remoteAddress) {
        reply(statusError, `${options.node} cannot connect to ${target.host}:${target.port}: ${describeError(error)}`);
        duplex.end();
      } else {
        duplex.destroy(error);
      }
    });
    duplex.once("close", () => socket.destroy());
    socket.once("close", () => {
      if (!duplex.writableEnded) duplex.end();
    });
  };

  // Started before libp2p: its port goes into identify.
  const tlsServer =
    options.identity && options.tlsStreams
      ? await startTlsStreamServer({
          identity: options.identity,
          listen: options.tlsStreams,
          log,
          onStream: (socket, node) => void serveTunnelStream(socket, `node ${node} (TLS)`, targetTimeout, () => tlsStats.served++),
        })
      : undefined;
  const libp2p = await createLibp2p({
    privateKey,
    addresses: { listen: options.listen },
    transports: [tcp()],
    // The mesh key is bound into every noise handshake as its prologue (both sides
    // must hash the same prologue or the handshake fails), which keeps foreign
    // peers out like @libp2p/pnet does, without pnet's second cipher over every byte
    // (XSalsa20 in WebAssembly: measured ~40% of the direct path's throughput, and
    // it xors a connection's whole pending write buffer in one call, which failed
    // with "Memory.grow(): Maximum memory size exceeded" under load).
    connectionEncrypters: [noise({ prologueBytes: pskPrologue(options.psk), crypto: tunnelNoiseCrypto })],
    // yamux grows a stream's window up to 16 MiB by default, while a libp2p stream
    // aborts once 4 MiB sit unread (abstract-message-stream.js): a slow reader would
    // get its stream reset. 1 MiB keeps the two consistent and fills a LAN or relay path.
    // A yamux frame (12-byte header + data) must fit one noise message (65,519 bytes of
    // plaintext): with yamux's default 64 KiB of data, every frame became a full noise
    // message plus one of 29 bytes, each with its own cipher, tag and write.
    streamMuxers: [yamux({ maxMessageSize: noiseMaxPlaintext - yamuxHeaderBytes, streamOptions: { maxStreamWindowSize: 1024 * 1024 } })],
    peerDiscovery: options.mdns === false ? [] : [mdns({ interval: options.mdnsIntervalMs ?? 1_000 })],
    // identify's agent version carries the node name (and, with security on, its signed proof), so a
    // neighbour found by mDNS is known by name without the hub.
    nodeInfo: { userAgent: userAgentFor(options.node, proof, tlsServer?.port) },
    // A path that stops answering pings for 10 s is broken (the path machine falls back); 5 s tripped on busy CI machines.
    connectionMonitor: { pingTimeout: { minTimeout: 10_000 } },
    services: {
      identify: identify(),
      // The connection monitor pings every connection every 10 s over this same
      // protocol and aborts a connection whose ping fails; with the default of 2
      // inbound / 1 outbound ping streams, our RTT probes made its pings fail.
      ping: ping({ maxInboundStreams: 32, maxOutboundStreams: 32 }),
      // Hands us the upgrader, the same one @libp2p/tcp uses (components are handed in: STYLE.md 5).
      leafmeshUpgrade: (components: { upgrader: Upgrader; logger: ComponentLogger }) => ({ upgrader: components.upgrader, logger: components.logger }),
    },
  }).catch(async (error: unknown) => {
    await tlsServer?.close(); // its port must not stay taken by a tunnel that never started
    throw error;
  });
  const identified = new Map<string, Set<() => void>>();
  const tlsPorts = new Map<string, number>();
  const warned = new Set<string>();
  libp2p.addEventListener("peer:identify", (event) => {
    const peerId = event.detail.peerId.toString();
    const claim = checkPeerClaim(event.detail.agentVersion, peerId, options.identity);
    if (claim?.refused !== undefined) {
      nodes.delete(peerId);
      if (!warned.has(claim.refused)) log.warn({ peer: peerId, claimed: claim.node }, `libp2p peer refused: ${claim.refused}`);
      // Said once per reason; a flood of impostors (each reason names its peer id) must not grow this without end.
      if (warned.size >= 1_000) warned.clear();
      warned.add(claim.refused);
      void libp2p.hangUp(event.detail.peerId).catch(() => undefined);
    } else if (claim) {
      nodes.set(peerId, claim.node);
      const tlsPort = tlsPortOf(event.detail.agentVersion);
      if (tlsPort) tlsPorts.set(peerId, tlsPort);
      else tlsPorts.delete(peerId);
    }
    for (const wake of identified.get(peerId) ?? []) wake();
    identified.delete(peerId);
  });
  /** The proven node of a peer, waiting for its identify when a stream comes first. */
  const provenNode = async (peerId: string): Promise<string | undefined> => {
    if (nodes.has(peerId)) return nodes.get(peerId);
    await new Promise<void>((resolve) => {
      const waiters = identified.get(peerId) ?? new Set();
      identified.set(peerId, waiters);
      const timer = setTimeout(done, options.identifyTimeoutMs ?? 5_000);
      function done() {
        clearTimeout(timer);
        waiters.delete(done);
        if (waiters.size === 0 && identified.get(peerId) === waiters) identified.delete(peerId);
        resolve();
      }
      waiters.add(done);
    });
    return nodes.get(peerId);
  };

  /** Sends the target header on a fresh stream and waits for the remote agent's status. */
  const requestTarget = async (duplex: Duplex, target: TunnelTarget, peer: string): Promise<Duplex> => {
    // A reset after the header was read (a peer that refuses us, a cut) must not go unhandled; the caller adds its own handling.
    duplex.on("error", (error) => log.debug({ err: error, peer }, "tunnel stream error"));
    duplex.write(frameHeader(target));
    const status = (await readExactly(duplex, 1, targetTimeout + 5_000))[0];
    const { message } = (await readHeader(duplex, targetTimeout + 5_000)) as { message: string };
    if (status !== statusOk) {
      duplex.destroy();
      throw new TargetRefusedError(message || "the remote agent refused the stream");
    }
    return duplex;
  };

  await libp2p.handle(
    tunnelProtocol,
    async (stream: Stream, connection: Connection) => {
      if (options.identity && !(await provenNode(connection.remotePeer.toString()))) {
        log.warn({ peer: connection.remotePeer.toString() }, "tunnel stream refused: the peer has not proven which node of this mesh it is");
        stream.abort(new LeafmeshError("TRUST_FAILED", "not a proven node of this mesh"));
        return;
      }
      void serveTunnelStream(streamToDuplex(stream, connection), connection.remotePeer.toString());
    },
    { runOnLimitedConnection: true, maxInboundStreams: 4096, maxOutboundStreams: 4096 },
  );

  const upgrader = libp2p.services.leafmeshUpgrade;
  return {
    libp2p,
    pskFingerprint: pskFingerprint(options.psk),
    async upgrade(duplex, direction, remoteAddr) {
      const maConn = new DuplexMultiaddrConnection({
        duplex,
        remoteAddr,
        direction,
        log: upgrader.logger.forComponent(`leafmesh:tunnel:${direction}`),
        inactivityTimeout: 0,
      });
      const signal = AbortSignal.timeout(10_000);
      if (direction === "outbound") return upgrader.upgrader.upgradeOutbound(maConn, { signal });
      await upgrader.upgrader.upgradeInbound(maConn, { signal });
      return undefined;
    },
    async openTarget(connection, target) {
      const stream = await connection.newStream(tunnelProtocol, { runOnLimitedConnection: true, signal: AbortSignal.timeout(10_000) });
      return requestTarget(streamToDuplex(stream, connection), target, connection.remotePeer.toString());
    },
    async openTlsTarget(connection, target, timeoutMs) {
      const peer = connection.remotePeer.toString();
      const host = tcpHostOf(connection.remoteAddr);
      if (!options.identity || !tlsServer || !host) return undefined;
      // A connection just made is identified a moment later: its TLS port comes with identify.
      const node = await provenNode(peer);
      const port = tlsPorts.get(peer);
      if (!node || !port) return undefined;
      const socket = await connectTlsStream({ identity: options.identity, node, host, port, timeoutMs });
      tlsStats.opened++;
      return requestTarget(socket, target, `node ${node} (TLS)`);
    },
    servesTls(peerId) {
      return tlsServer !== undefined && tlsPorts.has(peerId);
    },
    async tlsOver(channel, node, carrier, timeoutMs) {
      if (!options.identity) throw new LeafmeshError("TUNNEL_FAILED", "TLS streams need the node's certificate (--keys)");
      return tlsClientOver(channel, { identity: options.identity, node, timeoutMs, where: carrierName[carrier] });
    },
    openTargetOn(session, node, target) {
      tlsStats.opened++;
      return requestTarget(session, target, `node ${node} (TLS)`);
    },
    serveTlsOver(channel, peer, carrier) {
      if (!options.identity || !tlsServer) {
        channel.destroy(new LeafmeshError("TUNNEL_FAILED", "this node does not serve TLS streams"));
        return;
      }
      tlsServerOver(channel, { identity: options.identity, peer, timeoutMs: targetTimeout, where: carrierName[carrier] }).then(
        (socket) => {
          // The session may be the dialler's spare, made ahead of its next stream: its target
          // comes when that stream opens (a relay channel's pings keep it alive meanwhile).
          void serveTunnelStream(socket, `node ${peer} (TLS, ${carrier})`, spareSessionLifetimeMs + 60_000, () => tlsStats.served++);
        },
        (error: unknown) => {
          log.warn({ peer, err: describeError(error) }, `TLS stream over ${carrierName[carrier]} refused`);
          channel.destroy();
        },
      );
    },
    tlsStreamPort: tlsServer?.port,
    tlsStats: () => ({ ...tlsStats, refused: Object.fromEntries(tlsServer?.refused ?? []) }),
    nodeOf(peerId) {
      return nodes.get(peerId);
    },
    async stop() {
      await tlsServer?.close();
      await libp2p.stop();
    },
  };
}

export { multiaddr };
