/**
 * Two agents' tunnel ends on loopback, with the network between them in a test's hands: edge-a's StreamOpener
 * reaches edge-b's real StreamServer over real TLS stream sessions (tls-streams.ts, with end frames), through a TCP
 * relay that can hold back the answer direction (edge-b → edge-a) of a session, then release it or cut it with
 * resets both ways. With it a test sees what the far agent did with a stream (the target it connected, the bytes it
 * wrote there) while the opener has no answer yet: how a client's first bytes go with the target header
 * (lib/early-bytes.ts; services/tunnel/early-bytes.test.ts, services/gateway/early-bytes.test.ts), or silence a
 * session for good, as a far agent killed without a FIN or RST leaves it.
 *
 * ```ts
 * const tunnel = await startHeldAnswerTunnel();
 * tunnel.held = true; // the next sessions' answers wait from their handshake on
 * const opening = tunnel.opener().open(peerAt(2), "relayed", { host: "127.0.0.2", port, protocol: "TCP" }, undefined, early);
 * tunnel.gates.at(-1)!.release();
 * ```
 */
import { mkdtempSync, rmSync } from "node:fs";
import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ManualClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { CarrierBackoff, type Carrier, type CarrierPeer } from "../../services/tunnel/carrier.ts";
import type { PathConnections } from "../../services/tunnel/connections.ts";
import type { NodeIdentity } from "../../services/tunnel/node-identity.ts";
import { Libp2pCarrier, StreamOpener, type StreamOpenerOptions } from "../../services/tunnel/stream-opener.ts";
import { StreamServer } from "../../services/tunnel/stream-server.ts";
import { connectTlsStream, startTlsStreamServer } from "../../services/tunnel/tls-streams.ts";
import type { SpareSessions } from "../../services/tunnel/spares.ts";
import { DirectTlsCarrier, TlsStreams } from "../../services/tunnel/tls-carriers.ts";
import { initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { loadNodeSecurity, nodeIdentityPems } from "../../trust/security.ts";

/** One relayed session's answer direction: held (what comes waits), released (what waited goes, then the rest), or cut (RST both ways). */
export interface AnswerGate {
  hold(): void;
  release(): void;
  cut(): void;
  /** The far agent gone without a FIN or RST (killed behind a relay, its cable cut): from now on nothing passes either way, and nothing ends. */
  silence(): void;
}

export interface HeldAnswerTunnel {
  /** A new opener on edge-a whose only carrier is the relay to edge-b ("relayed"). */
  opener(): StreamOpener;
  /**
   * A new opener on edge-a whose only carrier is the tunnel's DirectTlsCarrier (as "relayed") with `spares`, its TLS
   * connections through the relay: after each open it makes the next stream's session ahead (spares.ts).
   */
  spareOpener(spares: SpareSessions, options?: Partial<StreamOpenerOptions>): Promise<StreamOpener>;
  /** Each relayed session's gate, in the order they were opened (opens run one at a time in these tests). */
  readonly gates: AnswerGate[];
  /** While set, each session opened has its answers held from its handshake on. */
  held: boolean;
  /** Releases every gate and forgets them (between tests). */
  releaseAll(): void;
  close(): Promise<void>;
}

/** edge-b as an opener on edge-a sees it: `protocol` is what its node record says (mesh protocol 2 takes early bytes). */
export const peerAt = (protocol: number): CarrierPeer => ({ node: "edge-b", peerId: "peer-b", protocol });

/** An opener whose only carrier is `carrier` (as "relayed"): no libp2p connection, backoffs on a clock that stands still. */
export function openerOver(carrier: Carrier, options: Partial<StreamOpenerOptions> = {}): StreamOpener {
  const connections = { ranked: () => [] } as unknown as PathConnections;
  return new StreamOpener({
    connections,
    libp2p: new Libp2pCarrier({ host: undefined as never, connections }),
    tlsCarriers: { relayed: carrier },
    backoff: new CarrierBackoff({ clock: new ManualClock(), log: silentLogger() }),
    log: silentLogger(),
    headerTimeoutMs: 5_000,
    ...options,
  });
}

export async function startHeldAnswerTunnel(): Promise<HeldAnswerTunnel> {
  const base = mkdtempSync(join(tmpdir(), "leafmesh-held-answers-"));
  const keys = join(base, "keys");
  const identities: Record<string, NodeIdentity> = {};
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) {
    await issueNode({ dir: keys, node });
    identities[node] = nodeIdentityPems(loadNodeSecurity(keys, node));
  }
  const open = new Set<Socket>();
  const gates: AnswerGate[] = [];
  /** edge-a's TLS side, made for the first spareOpener (its carrier takes the identity from it). */
  let near: TlsStreams | undefined;
  const server = new StreamServer({ node: "edge-b", log: silentLogger() });
  const tlsServer = await startTlsStreamServer({ identity: identities["edge-b"], listen: { host: "127.0.0.1", port: 0 }, log: silentLogger(), onStream: (socket) => void server.serve(socket, "edge-a") });
  const relay: Server = createServer({ allowHalfOpen: true }, (near: Socket) => {
    const far = netConnect({ host: "127.0.0.1", port: tlsServer.port, allowHalfOpen: true });
    for (const socket of [near, far]) open.add(socket.on("error", () => undefined));
    near.pipe(far);
    const waiting: Buffer[] = [];
    let gated = false;
    let ended = false;
    let silent = false;
    far.on("data", (chunk: Buffer) => silent || (gated ? waiting.push(chunk) : near.write(chunk)));
    far.on("end", () => silent || (gated ? (ended = true) : near.end()));
    near.once("close", () => far.destroy());
    far.once("close", () => near.destroy());
    gates.push({
      hold: () => (gated = true),
      release: () => {
        gated = false;
        for (const chunk of waiting.splice(0)) near.write(chunk);
        if (ended) near.end();
      },
      cut: () => {
        near.resetAndDestroy();
        far.resetAndDestroy();
      },
      silence: () => {
        silent = true;
        waiting.length = 0;
        near.unpipe(far);
        near.on("data", () => undefined); // read and dropped, as a dead host's packets go nowhere
      },
    });
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
  const tunnel: HeldAnswerTunnel = {
    gates,
    held: false,
    opener() {
      /** A TLS session through the relay, its answers held from its handshake on while `held` is set. */
      const carrier: Carrier = {
        name: "relayed TLS",
        async open() {
          const socket = await connectTlsStream({ identity: identities["edge-a"], node: "edge-b", host: "127.0.0.1", port: (relay.address() as { port: number }).port, timeoutMs: 5_000 });
          // Opens run one at a time here: the relay's last connection is this session's. Its answers wait from now on.
          if (tunnel.held) gates.at(-1)!.hold();
          return socket;
        },
      };
      return openerOver(carrier);
    },
    async spareOpener(spares, options) {
      near ??= await TlsStreams.start({ identity: identities["edge-a"], listen: { host: "127.0.0.1", port: 0 }, log: silentLogger(), onStream: (stream) => stream.destroy() });
      const port = (relay.address() as { port: number }).port;
      return openerOver(new DirectTlsCarrier({ tls: near, timeoutMs: 5_000, spares, addressOf: async () => ({ host: "127.0.0.1", port }) }), options);
    },
    releaseAll() {
      tunnel.held = false;
      for (const gate of gates) gate.release();
      gates.length = 0;
    },
    async close() {
      for (const socket of open) socket.destroy();
      await near?.close();
      await tlsServer.close();
      await new Promise((resolve) => relay.close(resolve));
      rmSync(base, { recursive: true, force: true });
    },
  };
  return tunnel;
}
