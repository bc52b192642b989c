/**
 * Tunnel streams each under TLS of their own: on a direct path over a TCP
 * connection to the peer's TLS port, on a relayed path over a relay channel of
 * their own (relay.ts, purpose "tls-stream"; the hubs carry ciphertext only).
 *
 * Why: the libp2p stack (noise, yamux, message streams) runs every byte through
 * JavaScript: ~0.2–0.3× of raw TCP between two lab hosts, and ~0.3× of plain NATS
 * relayed (bench/tunnel). node:tls encrypts inside OpenSSL (AES-GCM with AES-NI)
 * and moves whole records; one TLS session per stream needs no multiplexer at
 * all. Measured on loopback: TLS 0.83× of raw TCP; TLS over a JavaScript Duplex
 * (what runs over a relay channel) ~770 MB/s.
 *
 * Who is who: both ends present their mesh certificate (CN = node name, issued
 * by the mesh CA, the same certificate that signs node records); the dialler
 * accepts only the certificate of the node it meant, the listener learns the
 * dialler's node from its certificate. So this exists only with security on;
 * an `--insecure` mesh keeps every stream on libp2p. With a `PeerTrust`
 * (peer-trust.ts) both ends also refuse a revoked certificate at the handshake,
 * and hand every session over to be reset if its certificate is revoked later.
 *
 * What goes over it is what goes over a libp2p tunnel stream (stream-header.ts): the
 * target header, the status reply, then the spliced bytes; half-close and
 * reset behave as on a socket: a session that ends before both its directions
 * did resets what carries it (`resetWithCarrier`), so the far end reads an
 * error, never an end. A TCP stream's bytes go in end frames (lib/end-frames.ts)
 * when both ends offer `endFramesProtocol` by ALPN: a session that ends without
 * its end frame was cut, which a kernel's FIN for a crashed agent would
 * otherwise pass for (Node's TLS takes a FIN without close_notify for an end).
 *
 * ```ts
 * const server = await startTlsStreamServer({ identity, listen: { host: "0.0.0.0", port: 4102 }, log, onStream: (socket, node) => serve(socket, node) });
 * const socket = await connectTlsStream({ identity, node: "edge-b", host: "198.18.1.12", port: 4102, timeoutMs: 3_000 });
 * const relayed = await tlsClientOver(await relay.open("edge-b", "tls-stream"), { identity, node: "edge-b", timeoutMs: 3_000, where: "the relay" });
 * const served = await tlsServerOver(inboundChannel, { identity, peer: inboundChannel.peer, timeoutMs: 5_000, where: "a relay channel" });
 * ```
 */
import { X509Certificate } from "node:crypto";
import { connect as netConnect, Socket } from "node:net";
import type { Duplex } from "node:stream";
import { connect as tlsConnect, createSecureContext, createServer, TLSSocket, type ConnectionOptions, type PeerCertificate, type SecureContext } from "node:tls";
import { endFramesProtocol } from "../../lib/end-frames.ts";
import { LeafmeshError, describeError } from "../../lib/errors.ts";
import { listenMeaning } from "../../lib/listen-errors.ts";
import { resetSocket } from "../../lib/join-streams.ts";
import type { Logger } from "../../lib/log.ts";
import { commonName } from "../../trust/record-signature.ts";
import type { NodeIdentity } from "./node-identity.ts";
import type { PeerTrust, TrustPoint } from "./peer-trust.ts";
import { keepTunnelConnectionAlive } from "./tcp-liveness.ts";

export interface TlsStreamServer {
  readonly port: number;
  /** Connections refused at the handshake or after it, by reason (STYLE 16). */
  readonly refused: ReadonlyMap<string, number>;
  close(): Promise<void>;
}

function commonNameOf(certificate: PeerCertificate | undefined): string | undefined {
  const name = certificate?.subject?.CN;
  return typeof name === "string" && name.length > 0 ? name : undefined;
}

/** The node named by our own certificate: a peer claiming it is refused (no streams to ourselves). */
function ownNode(identity: NodeIdentity): string {
  const name = commonName(new X509Certificate(identity.certPem));
  if (!name) throw new LeafmeshError("TRUST_FAILED", "the node certificate has no common name (CN = node name)");
  return name;
}

const secureContexts = new WeakMap<NodeIdentity, SecureContext>();

/** The identity's certificate, key and CA parsed once: every stream opens a TLS session with them. */
function secureContextOf(identity: NodeIdentity): SecureContext {
  let context = secureContexts.get(identity);
  if (!context) {
    context = createSecureContext({ cert: identity.certPem, key: identity.keyPem, ca: identity.caPem, minVersion: "TLSv1.3" });
    secureContexts.set(identity, context);
  }
  return context;
}

export async function startTlsStreamServer(options: {
  identity: NodeIdentity;
  listen: { host: string; port: number };
  log: Logger;
  onStream: (socket: TLSSocket, node: string) => void;
  /** @default 5_000 */
  handshakeTimeoutMs?: number;
  /** Refuses revoked certificates, and cuts sessions whose certificate is revoked later. */
  trust?: PeerTrust;
}): Promise<TlsStreamServer> {
  const me = ownNode(options.identity);
  const refused = new Map<string, number>();
  const open = new Set<TLSSocket>();
  /** Every TCP connection, the ones still in their handshake too: close() ends them all (a spare being made must not hold the server open). */
  const connections = new Set<Socket>();
  const warned = new Set<string>();
  const refuse = (reason: string, detail: Record<string, unknown>) => {
    // Reasons come from strangers' handshakes: a bounded set of counters, "other" beyond it.
    const key = refused.has(reason) || refused.size < 32 ? reason : "other";
    refused.set(key, (refused.get(key) ?? 0) + 1);
    if (!warned.has(key)) options.log.warn(detail, `TLS tunnel connection refused: ${reason}`);
    warned.add(key);
  };
  const server = createServer(
    {
      cert: options.identity.certPem,
      key: options.identity.keyPem,
      ca: options.identity.caPem,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.3",
      allowHalfOpen: true,
      ALPNProtocols: [endFramesProtocol],
      handshakeTimeout: options.handshakeTimeoutMs ?? 5_000,
    },
    (socket) => {
      open.add(socket);
      socket.once("close", () => open.delete(socket));
      // The TCP connection under a served session (Node keeps it as _parent): reset with it.
      const tcp = (socket as TLSSocket & { _parent?: unknown })._parent;
      if (tcp instanceof Socket) resetWithCarrier(socket, tcp);
      const node = commonNameOf(socket.getPeerCertificate());
      if (!node || node === me) {
        refuse(node ? "a peer presented this node's own certificate" : "the peer certificate has no common name", { remote: socket.remoteAddress });
        destroyOutsideRead(socket);
        return;
      }
      // The chain is the CA's (rejectUnauthorized); the CA's word is taken back for what the revocation list names.
      const fingerprint = socket.getPeerX509Certificate()?.fingerprint256;
      if (options.trust?.isRevoked(fingerprint)) {
        refuse("revoked certificate", { remote: socket.remoteAddress, peer: node });
        options.trust.refuse("direct TLS", node, { remote: socket.remoteAddress });
        destroyOutsideRead(socket); // before a byte was served: resetWithCarrier resets the TCP connection
        return;
      }
      options.trust?.track(socket, fingerprint, node, "direct TLS");
      options.onStream(socket, node);
    },
  );
  server.on("connection", (tcp: Socket) => {
    tcp.setNoDelay(true);
    // A dialler gone silent (no FIN, no RST) is noticed: its sessions reset, never left open (tcp-liveness.ts).
    keepTunnelConnectionAlive(tcp);
    connections.add(tcp);
    tcp.once("close", () => connections.delete(tcp));
  });
  // Handshake failures (another CA, no certificate, plaintext): counted and said once per reason.
  server.on("tlsClientError", (error, socket) => {
    // A client certificate that does not verify (another mesh's CA, expired, self-signed) fails after OpenSSL's
    // handshake: Node destroys the socket and reports only "socket hang up"; why is in authorizationError.
    const untrusted = socket.authorizationError;
    if (untrusted) refuse(`client certificate not trusted: ${String(untrusted)}`, { remote: socket.remoteAddress });
    else {
      const code = (error as { code?: string }).code;
      refuse(code ? `${code} (${describeError(error).slice(0, 120)})` : describeError(error).slice(0, 120), { remote: socket.remoteAddress });
    }
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.listen.port, options.listen.host, () => {
      server.off("error", reject);
      resolve();
    });
  }).catch((error: unknown) => {
    const why = listenMeaning(error, "another agent on this machine? each needs a --tunnel-tls port of its own") ?? describeError(error);
    throw new LeafmeshError("CONFIG_INVALID", `--tunnel-tls ${options.listen.host}:${options.listen.port}: cannot listen for TLS tunnel streams there: ${why}`, { cause: error });
  });
  const address = server.address();
  return {
    port: typeof address === "object" && address ? address.port : options.listen.port,
    refused,
    // Streams still open end with the tunnel (close() alone waits for every one of them), reset: a stream cut by
    // the stop must end in an error at the far end. A plain destroy closed TCP with a FIN, and the peer read a
    // clean end of stream (its stream ended whole to its reader) whenever it had read all that was sent.
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of open) socket.destroy();
        for (const tcp of connections) resetSocket(tcp);
      }),
  };
}

/** A TLS connection to `node`'s stream server: resolves once the handshake proved it is `node`. */
export function connectTlsStream(options: { identity: NodeIdentity; node: string; host: string; port: number; timeoutMs: number; trust?: PeerTrust }): Promise<TLSSocket> {
  // A TCP socket of our own under the session, not tls.connect's: it is what a reset resets (resetWithCarrier).
  const tcp = netConnect({ host: options.host, port: options.port, allowHalfOpen: true, noDelay: true });
  // A peer gone silent mid-stream (no FIN, no RST) is noticed: the stream resets, never hangs (tcp-liveness.ts).
  keepTunnelConnectionAlive(tcp);
  return tlsClient({ ...options, where: `${options.host}:${options.port}`, carrier: tcp, point: "direct TLS" });
}

/**
 * TLS to `node` over a byte channel that is already open (a relay channel, a punched
 * connection), said as `where` in errors: resolves once the handshake proved it is `node`.
 */
export function tlsClientOver(channel: Duplex, options: { identity: NodeIdentity; node: string; timeoutMs: number; where: string; trust?: PeerTrust; point: TrustPoint }): Promise<TLSSocket> {
  return tlsClient({ ...options, carrier: halfClosing(channel) });
}

/** A TLSSocket takes allowHalfOpen from the channel it wraps: end() must half-close, as on every tunnel stream (a punched net.Socket has it off). */
function halfClosing(channel: Duplex): Duplex {
  channel.allowHalfOpen = true;
  return channel;
}

/**
 * The serving end of TLS over an open byte channel whose far end claims to be `peer`
 * (a relay channel: by its NATS subject, under the node's own account; a punched
 * connection: by the punch request), said as `where` in errors: the client
 * certificate must be `peer`'s.
 */
export function tlsServerOver(channel: Duplex, options: { identity: NodeIdentity; peer: string; timeoutMs: number; where: string; trust?: PeerTrust; point: TrustPoint }): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const carrier = halfClosing(channel);
    const socket = new TLSSocket(carrier, {
      isServer: true,
      requestCert: true,
      rejectUnauthorized: true,
      secureContext: secureContextOf(options.identity),
      ALPNProtocols: [endFramesProtocol],
    });
    resetWithCarrier(socket, carrier);
    const timer = setTimeout(() => socket.destroy(new LeafmeshError("TUNNEL_FAILED", `TLS handshake with ${options.peer} over ${options.where} not done within ${options.timeoutMs} ms`)), options.timeoutMs);
    const onError = (error: Error) => {
      clearTimeout(timer);
      reject(error instanceof LeafmeshError ? error : new LeafmeshError("TRUST_FAILED", `TLS from ${options.peer} over ${options.where}: ${describeError(error)}`, { cause: error }));
    };
    // `on`, not `once`: a TLSSocket over a JavaScript Duplex (a relay channel) can emit a failed handshake's error twice
    // (seen with the handshake timeout under a burst of relayed opens), and an unheard second one ends the process.
    socket.on("error", onError);
    // A carrier closed without an error (destroyed here) closes the session quietly: the handshake failed all the same
    // (a turn later: a real error, emitted after 'close', says more and comes first).
    socket.once("close", () => setImmediate(() => onError(new LeafmeshError("TUNNEL_FAILED", `TLS from ${options.peer} over ${options.where} closed before its handshake`))));
    socket.once("secure", () => {
      clearTimeout(timer);
      socket.off("error", onError);
      const node = commonNameOf(socket.getPeerCertificate());
      if (node !== options.peer) {
        destroyOutsideRead(socket);
        reject(new LeafmeshError("TRUST_FAILED", `${options.where} from ${options.peer} presented the certificate of '${node ?? "no name"}'`));
        return;
      }
      const fingerprint = socket.getPeerX509Certificate()?.fingerprint256;
      if (options.trust?.isRevoked(fingerprint)) {
        const error = options.trust.refuse(options.point, node);
        destroyOutsideRead(socket, error); // resets the channel (resetWithCarrier): the dialler reads an error
        reject(error);
        return;
      }
      options.trust?.track(socket, fingerprint, node, options.point);
      resolve(socket);
    });
  });
}

function tlsClient(options: { identity: NodeIdentity; node: string; timeoutMs: number; where: string; carrier: Duplex; trust?: PeerTrust; point: TrustPoint }): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const connectOptions: ConnectionOptions & { allowHalfOpen: boolean } = {
      socket: options.carrier,
      secureContext: secureContextOf(options.identity),
      allowHalfOpen: true,
      // Offered, not required: a node of a release before end frames answers without it, and its streams go unframed.
      ALPNProtocols: [endFramesProtocol],
      // The chain is checked against the mesh CA (rejectUnauthorized); the name must be the node we meant, and
      // its certificate not on the revocation list: an error here fails the handshake before a byte is sent.
      checkServerIdentity: (_host, certificate) => {
        if (commonNameOf(certificate) !== options.node) {
          return new LeafmeshError("TRUST_FAILED", `${options.where} presented the certificate of '${commonNameOf(certificate) ?? "no name"}', not of node '${options.node}'`);
        }
        if (options.trust?.isRevoked(certificate.fingerprint256)) return options.trust.refuse(options.point, options.node, { where: options.where });
        return undefined;
      },
    };
    // allowHalfOpen reaches the TLSSocket (node's _tls_wrap.js) though the typings omit it: end() half-closes, as on a libp2p stream.
    const socket = tlsConnect(connectOptions);
    resetWithCarrier(socket, options.carrier);
    const timer = setTimeout(() => socket.destroy(new LeafmeshError("TUNNEL_FAILED", `TLS connection to ${options.node} at ${options.where} not established within ${options.timeoutMs} ms`)), options.timeoutMs);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      socket.off("error", onError);
      options.trust?.track(socket, socket.getPeerX509Certificate()?.fingerprint256, options.node, options.point);
      resolve(socket);
    });
    const onError = (error: Error) => {
      clearTimeout(timer);
      reject(error instanceof LeafmeshError ? error : new LeafmeshError("TUNNEL_FAILED", `TLS connection to ${options.node} at ${options.where}: ${describeError(error)}`, { cause: error }));
    };
    // `on`, not `once`: a TLSSocket over a JavaScript Duplex (a relay channel) can emit a failed handshake's error twice
    // (seen with the handshake timeout under a burst of relayed opens), and an unheard second one ends the process.
    socket.on("error", onError);
    // A carrier closed without an error (destroyed here) closes the session quietly: the handshake failed all the same
    // (a turn later: a real error, emitted after 'close', says more and comes first).
    socket.once("close", () => setImmediate(() => onError(new LeafmeshError("TUNNEL_FAILED", `TLS connection to ${options.node} at ${options.where} closed before its handshake`))));
  });
}

/**
 * Destroys a TLS session from within its own handshake callback ('secure'), one turn
 * later. Those callbacks run inside OpenSSL's read of the session (TLSWrap::ClearOut);
 * destroyed there, its TCP connection reset under it (resetWithCarrier), OpenSSL went
 * on reading the freed session: the agent died with SIGSEGV (state_machine ←
 * SSL_read ← TLSWrap::ClearOut, from a core of the revocation test) when a
 * revoked peer's first bytes came in the same read as its handshake.
 */
function destroyOutsideRead(socket: TLSSocket, error?: Error): void {
  if (error && socket.listenerCount("error") === 0) socket.on("error", () => undefined);
  socket.pause();
  setImmediate(() => socket.destroy(error));
}

/**
 * Joins a TLS session to what carries it, both ways, for a cut never to pass for
 * an end (STYLE 20):
 * - the session destroyed before both its directions ended (with an error or
 *   without) resets the carrier: RST on a TCP connection, a reset frame on a relay
 *   channel. TLS alone closes its TCP connection with a FIN, and the far end read
 *   that as a clean end of stream;
 * - the carrier failing (the far end's reset) destroys the session with that
 *   error: over a JavaScript Duplex (a relay channel) Node's TLSSocket closed
 *   quietly, with neither an error nor an end.
 */
function resetWithCarrier(session: TLSSocket, carrier: Duplex): void {
  carrier.on("error", (error: Error) => session.destroy(error));
  const destroy = session._destroy.bind(session);
  session._destroy = (error: Error | null, callback: (error?: Error | null) => void) => {
    // Reads that come meanwhile go nowhere, as Node's own _destroy sends them a turn later: they reached Node's read
    // callback on a session already destroyed, and Node 24 threw ERR_OUT_OF_RANGE there ("Received 4": the far end's
    // end frame behind an answer that the gateway's HTTP/1.0 backend closed after), which ended the agent.
    const handle = (session as unknown as { _handle?: { onread?: unknown } | null })._handle;
    if (handle) handle.onread = () => undefined;
    // A turn later, never on OpenSSL's stack: Node destroys a client session from within its handshake callback
    // (checkServerIdentity's error, in SSL_read), and a TCP connection reset under it there left OpenSSL reading
    // a freed session: SIGSEGV, in 1 of ~4 runs of tls-streams.test.ts, every time in a loop of refused handshakes
    // (tls-crash.test.ts). Destroyed, the session takes no more writes meanwhile.
    setImmediate(() => {
      const complete = session.readableEnded && session.writableFinished;
      // Reset before the session closes its handle: TLS's own close sends the FIN we must not send.
      // (Node then emits the session's 'close' ahead of its 'error'; `errored` is set all the same.)
      if (!complete && !carrier.destroyed) {
        if (carrier instanceof Socket) resetSocket(carrier);
        else carrier.destroy(error ?? new LeafmeshError("TUNNEL_FAILED", "the TLS session over this channel was closed before its end"));
      }
      if (complete && !(carrier instanceof Socket)) return afterCarrierEnd(carrier, () => destroy(error, callback));
      destroy(error, callback);
    });
  };
}

/** @default 5 s — how long a session that ended whole waits for its channel's own end before it closes the channel. */
const carrierEndWaitMs = 5_000;

/**
 * Runs `then` once a channel has read its far end's end (or is gone), within carrierEndWaitMs.
 * A session that ended whole read the peer's close_notify, which travels in a data frame ahead
 * of the channel's end (a relay channel's FIN): closed at once, the channel was closed before
 * its end, which is a reset, and the peer saw an error after a complete stream (the relayed-TLS
 * half-close flake: when the two frames came in separate reads). A peer that never ends it is
 * reset after the wait, as before.
 */
function afterCarrierEnd(carrier: Duplex, then: () => void): void {
  if (carrier.readableEnded || carrier.destroyed) return then();
  const done = () => {
    clearTimeout(timer);
    carrier.off("end", done);
    carrier.off("close", done);
    then();
  };
  const timer = setTimeout(done, carrierEndWaitMs);
  carrier.once("end", done);
  carrier.once("close", done);
  // Node's TLS stopped reading the channel at close_notify: the end behind it is read here.
  carrier.resume();
}
