/**
 * Who may hold a place in the tunnel host's handshakes. libp2p admits a fixed
 * number of inbound connections that have not finished their upgrade (noise,
 * then yamux), counted over every address, and ends each after its upgrade
 * timeout (10 s): a stranger on the LAN who opens sockets to the tunnel port
 * and sends nothing held them all, and every peer's dial was refused, its
 * relayed connection too (an inbound upgrade like any other).
 *
 * - Connections the fabric brought (relay channels) bypass libp2p's count: they
 *   carry the remote address `fabricAddress`, which no TCP peer can have (the
 *   broadcast address), and libp2p's allow list admits it (`allow`).
 * - From any one host, at most `perHost` connections may be unproven at once:
 *   the next is refused at once (the gater's denyInboundConnection), so a
 *   stranger holds a few places, never the lot. A connection is proven once its
 *   noise handshake, which binds the mesh key, has passed.
 *
 * ```ts
 * const gate = new InboundGate();
 * createLibp2p({ connectionManager: { allow: [fabricAddress], maxIncomingPendingConnections: gate.pendingLimit }, connectionGater: gate.gater });
 * ```
 */
import type { ConnectionGater, MultiaddrConnection } from "@libp2p/interface";

/** The remote address of a connection over a relay channel: 255.255.255.255, never a TCP peer's, so nothing dials it. */
export const fabricAddress = "/ip4/255.255.255.255/tcp/1";
const fabricHost = "255.255.255.255";

export interface InboundGateOptions {
  /** @default 4 — unproven connections one host may hold at once. */
  perHost?: number;
  /** @default 256 — unproven inbound connections in all (libp2p's maxIncomingPendingConnections; its default is 10). */
  pendingLimit?: number;
  /** @default 10_000 — libp2p's inbound upgrade timeout: a place is held no longer than that, whatever happened to its connection. */
  upgradeTimeoutMs?: number;
}

export class InboundGate {
  readonly perHost: number;
  readonly pendingLimit: number;
  readonly #upgradeTimeoutMs: number;
  /** Per host, each unproven connection and when it came. */
  readonly #pending = new Map<string, Map<MultiaddrConnection, number>>();
  #refused = 0;

  constructor(options: InboundGateOptions = {}) {
    this.perHost = options.perHost ?? 4;
    this.pendingLimit = options.pendingLimit ?? 256;
    this.#upgradeTimeoutMs = options.upgradeTimeoutMs ?? 10_000;
  }

  /** Inbound connections refused because their host already held `perHost` places. */
  get refused(): number {
    return this.#refused;
  }

  /** The hooks for libp2p's connectionGater. */
  readonly gater: ConnectionGater = {
    denyInboundConnection: (connection) => this.#deny(connection),
    denyInboundEncryptedConnection: (_peer, connection) => {
      this.#release(connection);
      return false;
    },
  };

  #deny(connection: MultiaddrConnection): boolean {
    const host = hostOf(connection);
    if (host === undefined || host === fabricHost) return false;
    const now = performance.now();
    let places = this.#pending.get(host);
    if (!places) this.#pending.set(host, (places = new Map()));
    for (const [held, since] of places) if (now - since > this.#upgradeTimeoutMs) places.delete(held);
    if (places.size >= this.perHost) {
      this.#refused++;
      return true;
    }
    places.set(connection, now);
    connection.addEventListener("close", () => this.#release(connection), { once: true });
    return false;
  }

  #release(connection: MultiaddrConnection): void {
    const host = hostOf(connection);
    if (host === undefined) return;
    const places = this.#pending.get(host);
    if (!places?.delete(connection) || places.size > 0) return;
    this.#pending.delete(host);
  }
}

/** The address a connection came from (IPv4 or IPv6), undefined for one that has none. */
function hostOf(connection: MultiaddrConnection): string | undefined {
  const component = connection.remoteAddr.getComponents().find((part) => part.name === "ip4" || part.name === "ip6");
  return component?.value;
}
