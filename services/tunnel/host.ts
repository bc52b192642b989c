/**
 * The libp2p host of one agent: TCP, noise (with the mesh's pre-shared key bound
 * into its handshake), yamux, identify, ping and mDNS, plus the tunnel protocol
 * (`/leafmesh/tunnel/1.0.0`), whose streams it hands to `onStream` once the peer
 * has proven which node it is.
 *
 * Every path between two nodes ends as an ordinary libp2p connection: a LAN dial
 * through @libp2p/tcp, or a hole-punched socket or relay channel handed to
 * `upgrade()` (the libp2p upgrader runs noise + yamux over it). identify tells
 * which node a peer is (proven by its certificate, with an identity) and where it
 * serves TLS streams.
 *
 * ```ts
 * const host = await startTunnelHost({ node: "edge-a", listen: ["/ip4/0.0.0.0/tcp/4101"], psk, log, onStream: (stream, peer) => server.serve(stream, peer) });
 * const connection = await host.upgrade(socket, "outbound", remoteAddr);
 * const stream = await host.openStream(connection); // a carrier stream: send the target header on it (stream-header.ts)
 * ```
 */
import type { Duplex } from "node:stream";
import { createLibp2p, type Libp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify, type Identify } from "@libp2p/identify";
import { ping, type Ping } from "@libp2p/ping";
import { mdns } from "@libp2p/mdns";
import type { Connection, PeerId, Stream, Upgrader, ComponentLogger, PeerDiscovery } from "@libp2p/interface";
import type { Multiaddr } from "@multiformats/multiaddr";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey, peerIdFromString } from "@libp2p/peer-id";
import { LeafmeshError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { DuplexMultiaddrConnection, streamToDuplex } from "./libp2p-duplex.ts";
import { tunnelNoiseCrypto } from "./noise-crypto.ts";
import { checkPeerClaim, makePeerProof, tlsPortOf, userAgentFor, type NodeIdentity } from "./node-identity.ts";
import { lanServiceTag, pskFingerprint, pskPrologue } from "./psk.ts";
import type { PeerTrust } from "./peer-trust.ts";
import { loadOrCreatePeerKey } from "./peer-key.ts";
import { fabricAddress, InboundGate } from "./inbound-gate.ts";

export const tunnelProtocol = "/leafmesh/tunnel/1.0.0";

/** Noise transport messages carry at most 65,535 bytes, 16 of them the tag (the noise spec, section 3). */
const noiseMaxPlaintext = 65_535 - 16;
const yamuxHeaderBytes = 12;

/**
 * Whether a dial failed in the encrypted handshake: libp2p's EncryptionFailedError
 * (libp2p tells its errors apart by name), also inside the AggregateError of a
 * dial to several addresses. A peer whose mesh key differs fails there (the key is
 * the noise prologue), as does a peer that is no leafmesh agent at all; a dial
 * that timed out mid-handshake fails there too, so the caller checks its signal.
 */
export function failedHandshake(error: unknown): boolean {
  if (error instanceof AggregateError) return error.errors.some(failedHandshake);
  return error instanceof Error && (error.name === "EncryptionFailedError" || (error.cause !== undefined && failedHandshake(error.cause)));
}

/**
 * What a failed handshake says (failedHandshake said it failed there): `key differs` when the far end's
 * first noise message did not decrypt — the mesh key is the noise prologue, so another mesh's key (or no
 * leafmesh agent at all) fails so; `wrong peer` when the handshake went through with a peer other than the
 * one dialled (its address reaches another node, or this node itself: noise checks the identity key, so
 * the keys matched); `closed` when the far end hung up mid-handshake. libp2p gives the first two no class
 * of their own, so they are told by noise's messages ("handshake stage N validation fail", "Payload
 * identity key X does not match expected remote identity key Y"); across a dial to several addresses a
 * differing key wins, then a wrong peer.
 */
export type HandshakeFailure = { kind: "key differs" } | { kind: "wrong peer"; answeredAs: string } | { kind: "closed" };

export function handshakeFailure(error: unknown): HandshakeFailure | undefined {
  if (!failedHandshake(error)) return undefined;
  const messages: string[] = [];
  const collect = (value: unknown, depth: number) => {
    if (depth > 8 || !(value instanceof Error)) return;
    messages.push(value.message);
    if (value instanceof AggregateError) for (const inner of value.errors) collect(inner, depth + 1);
    collect(value.cause, depth + 1);
  };
  collect(error, 0);
  if (messages.some((message) => /validation fail/.test(message))) return { kind: "key differs" };
  for (const message of messages) {
    const wrong = /Payload identity key (\S+) does not match expected remote identity key/.exec(message);
    if (wrong) return { kind: "wrong peer", answeredAs: wrong[1] };
  }
  return { kind: "closed" };
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
  /**
   * @default 10_000 — libp2p's: how often the connection monitor pings every connection. A path that then
   * stops answering is found broken one interval plus the 10 s ping timeout later, at most.
   */
  connectionPingIntervalMs?: number;
  /**
   * With security on: the node's certificate and key and the mesh CA. The host then
   * announces a signed proof of (node, peer id) in identify, hangs up on a peer whose
   * claim it cannot verify, and hands over tunnel streams only of proven nodes (node-identity.ts).
   */
  identity?: NodeIdentity;
  /** With an identity: a peer whose proof is signed by a revoked certificate is refused, and cut when revoked later (peer-trust.ts). */
  trust?: PeerTrust;
  /** Where the libp2p key is kept across restarts (peer-key.ts); undefined: a new key, so a new peer id, at every start. */
  keyFile?: string;
  /** @default 5_000 — how long an inbound tunnel stream waits for its peer's identify. */
  identifyTimeoutMs?: number;
  /** Where this node serves TLS streams (tls-carriers.ts), announced in identify. */
  tlsStreamPort?: number;
  /** Called with each peer mDNS announces on the LAN (`leafmesh netcheck` lists them). */
  onLanPeer?: (peerId: string, addresses: string[]) => void;
  /** Called with each inbound tunnel stream and its peer id; without it, inbound streams are refused. */
  onStream?: (stream: Duplex, peerId: string) => void;
}

export interface TunnelHost {
  readonly libp2p: Libp2p<{ identify: Identify; ping: Ping; leafmeshUpgrade: { upgrader: Upgrader; logger: ComponentLogger } }>;
  readonly pskFingerprint: string;
  /** Makes a libp2p connection of a connected socket or relay channel (noise + yamux over it). */
  upgrade(duplex: Duplex, direction: "inbound" | "outbound", remoteAddr: Multiaddr): Promise<Connection | undefined>;
  /** A tunnel-protocol stream on a connection, as a carrier stream (libp2p-duplex.ts). */
  openStream(connection: Connection): Promise<Duplex>;
  /** The node name a peer announced through identify (proven, with an identity), if known. */
  nodeOf(peerId: string): string | undefined;
  /** The proven node of a peer, waiting for its identify (up to identifyTimeoutMs) when it has not come yet. */
  provenNode(peerId: string): Promise<string | undefined>;
  /** The port a peer announced in identify for TLS streams, if it serves them. */
  tlsPortOf(peerId: string): number | undefined;
  /**
   * Aborts the connections of every proven peer whose certificate is now revoked (their streams
   * are reset, not closed) and forgets which node they were; returns those nodes.
   */
  cutRevoked(): string[];
  stop(): Promise<void>;
}

export async function startTunnelHost(options: TunnelHostOptions): Promise<TunnelHost> {
  const log = options.log;
  const nodes = new Map<string, string>();
  const privateKey = options.keyFile ? await loadOrCreatePeerKey(options.keyFile) : await generateKeyPair("Ed25519");
  const ownPeerId = peerIdFromPrivateKey(privateKey).toString();
  const proof = options.identity ? makePeerProof(options.node, ownPeerId, options.identity) : undefined;
  const gate = new InboundGate();
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
    // libp2p's own peer:discovery fires for every new peer (a relayed one too): only mDNS's answers are LAN peers.
    // The service is the mesh's own (psk.ts): another mesh's agents on the LAN are not found.
    peerDiscovery: options.mdns === false ? [] : [lanDiscovery(mdns({ interval: options.mdnsIntervalMs ?? 1_000, serviceTag: lanServiceTag(options.psk) }), options.onLanPeer)],
    // identify's agent version carries the node name (and, with security on, its signed proof), so a
    // neighbour found by mDNS is known by name without the hub.
    nodeInfo: { userAgent: userAgentFor(options.node, proof, options.tlsStreamPort) },
    // A path that stops answering pings for 10 s is broken (the path machine falls back); 5 s tripped on busy CI machines.
    connectionMonitor: { pingInterval: options.connectionPingIntervalMs ?? 10_000, pingTimeout: { minTimeout: 10_000 } },
    // A stranger's idle sockets must not hold every place in the handshakes (inbound-gate.ts).
    connectionManager: { allow: [fabricAddress], maxIncomingPendingConnections: gate.pendingLimit },
    connectionGater: gate.gater,
    services: {
      identify: identify(),
      // The connection monitor pings every connection every 10 s over this same
      // protocol and aborts a connection whose ping fails; with the default of 2
      // inbound / 1 outbound ping streams, our RTT probes made its pings fail.
      ping: ping({ maxInboundStreams: 32, maxOutboundStreams: 32 }),
      // Hands us the upgrader, the same one @libp2p/tcp uses (components are handed in, not reached for).
      leafmeshUpgrade: (components: { upgrader: Upgrader; logger: ComponentLogger }) => ({ upgrader: components.upgrader, logger: components.logger }),
    },
  });
  const identified = new Map<string, Set<() => void>>();
  const tlsPorts = new Map<string, number>();
  /** The certificate each proven peer's proof was signed with, for a revocation that comes later. */
  const certificates = new Map<string, string>();
  const warned = new Set<string>();
  /** Aborted, not closed: a close lets streams end cleanly, and a stream of a revoked peer must read as cut (STYLE 20). */
  const abortPeer = (peerId: PeerId, reason: string) => {
    const error = new LeafmeshError("TRUST_FAILED", reason);
    for (const connection of libp2p.getConnections(peerId)) connection.abort(error);
  };
  libp2p.addEventListener("peer:identify", (event) => {
    const peerId = event.detail.peerId.toString();
    const claim = checkPeerClaim(event.detail.agentVersion, peerId, options.identity, (fingerprint) => options.trust?.isRevoked(fingerprint) ?? false);
    if (claim?.refused !== undefined) {
      nodes.delete(peerId);
      certificates.delete(peerId);
      if (claim.revoked) {
        options.trust?.refuse("libp2p", claim.node, { peerId });
        abortPeer(event.detail.peerId, claim.refused);
      } else {
        if (!warned.has(claim.refused)) log.warn({ peer: peerId, claimed: claim.node }, `libp2p peer refused: ${claim.refused}`);
        // Said once per reason; a flood of impostors (each reason names its peer id) must not grow this without end.
        if (warned.size >= 1_000) warned.clear();
        warned.add(claim.refused);
        void libp2p.hangUp(event.detail.peerId).catch(() => undefined);
      }
    } else if (claim) {
      nodes.set(peerId, claim.node);
      if (claim.certificate) certificates.set(peerId, claim.certificate);
      const tlsPort = tlsPortOf(event.detail.agentVersion);
      if (tlsPort) tlsPorts.set(peerId, tlsPort);
      else tlsPorts.delete(peerId);
    }
    for (const wake of identified.get(peerId) ?? []) wake();
    identified.delete(peerId);
  });
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

  await libp2p.handle(
    tunnelProtocol,
    async (stream: Stream, connection: Connection) => {
      const peerId = connection.remotePeer.toString();
      if (options.identity && !(await provenNode(peerId))) {
        log.warn({ peer: peerId }, "tunnel stream refused: the peer has not proven which node of this mesh it is");
        stream.abort(new LeafmeshError("TRUST_FAILED", "not a proven node of this mesh"));
        return;
      }
      if (!options.onStream) {
        stream.abort(new LeafmeshError("TUNNEL_FAILED", "this node serves no tunnel streams"));
        return;
      }
      options.onStream(streamToDuplex(stream, connection), peerId);
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
    async openStream(connection) {
      const stream = await connection.newStream(tunnelProtocol, { runOnLimitedConnection: true, signal: AbortSignal.timeout(10_000) });
      return streamToDuplex(stream, connection);
    },
    nodeOf: (peerId) => nodes.get(peerId),
    provenNode,
    tlsPortOf: (peerId) => tlsPorts.get(peerId),
    cutRevoked() {
      const cut: string[] = [];
      for (const [peerId, certificate] of [...certificates]) {
        if (!options.trust?.isRevoked(certificate)) continue;
        const node = nodes.get(peerId) ?? "?";
        certificates.delete(peerId);
        nodes.delete(peerId);
        tlsPorts.delete(peerId);
        options.trust.cut("libp2p", node);
        abortPeer(peerIdFromString(peerId), `node '${node}''s certificate was revoked`);
        cut.push(node);
      }
      return cut;
    },
    async stop() {
      await libp2p.stop();
      // libp2p 3.3's address manager debounces its peer-store update by 1 s at each listener's close, and nothing stops
      // that timer: it held every stopped agent's process for a second after its last line (and then wrote to a
      // stopped peer store). An internal: on a libp2p without it, nothing is done.
      const components = (libp2p as unknown as { components?: { addressManager?: { _updatePeerStoreAddresses?: { stop?: () => void } } } }).components;
      components?.addressManager?._updatePeerStoreAddresses?.stop?.();
    },
  };
}

/** An mDNS discovery whose answers are also told to `onLanPeer`. */
function lanDiscovery<C>(factory: (components: C) => PeerDiscovery, onLanPeer: TunnelHostOptions["onLanPeer"]): (components: C) => PeerDiscovery {
  return (components) => {
    const discovery = factory(components);
    if (onLanPeer) discovery.addEventListener("peer", (event) => onLanPeer(event.detail.id.toString(), event.detail.multiaddrs.map(String)));
    return discovery;
  };
}
