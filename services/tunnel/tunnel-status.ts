/** What the tunnel actor tells status replies and heartbeats (tunnel-actor.ts status()). */
import type { NatType } from "../../bus/node-record.ts";
import type { PathStateKind } from "./path-machine.ts";
import type { ProtocolSkew } from "./peer-versions.ts";

export interface TunnelStatus {
  nat: NatType;
  paths: Record<string, PathStateKind>;
  relayChannels: number;
  relayDrops: Record<string, number>;
  /**
   * Streams under TLS of their own (tls-carriers.ts), on direct paths, relay channels and punched
   * connections; `spares`: sessions ready for the next stream ("punched TLS edge-b", spares.ts).
   */
  tlsStreams: { opened: number; served: number; refused: Record<string, number>; spares: string[] };
  /** Revoked certificates refused at a handshake or in a record, and what was cut when they were revoked, by reason (peer-trust.ts). */
  trust: Record<string, number>;
  /** Peers on another leafmesh protocol level, and which side to upgrade (bus/protocol.ts). */
  versions: ProtocolSkew[];
}
