/**
 * What a tunnel is started with (createTunnelActor): the node, its fabric connection, its key
 * material, the ways it may use and their timings, its limits. Apart from the actor, which
 * assembles the rooms of services/tunnel, so that each option's default and reason are read in
 * one place.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import type { Bus } from "../../bus/bus.ts";
import type { Clock } from "../../lib/clock.ts";
import type { Logger } from "../../lib/log.ts";
import type { ObserverAddress } from "./nat.ts";
import type { NodeIdentity } from "./node-identity.ts";
import type { Ways } from "./paths.ts";
import type { RevocationSource } from "./peer-trust.ts";
import type { StreamTarget } from "../../bus/streams.ts";

export interface TunnelOptions {
  bus: Bus;
  log: Logger;
  node: string;
  /** The agent's local leaf connection. */
  nats: NatsConnection;
  /** libp2p listen multiaddrs. @default ["/ip4/0.0.0.0/tcp/0"] */
  listen?: string[];
  /** The mesh's pre-shared key, swarm.key format (three lines). */
  psk: string | Uint8Array;
  site?: string;
  region?: string;
  clock?: Clock;
  /** The NAT observer next to the hubs (two ports on one address); without it the NAT type stays "unknown". */
  observer?: ObserverAddress;
  /** @default true */
  mdns?: boolean;
  /** Ways this node may use; all on by default (turning them off is for tests and odd networks). */
  ways?: Ways;
  /** @default 20_000 — how long openStream waits for a path to a node it has none to yet. */
  pathTimeoutMs?: number;
  /** @default 8_000 — a hole punch that has not connected by then has failed. */
  punchTimeoutMs?: number;
  /** @default 3_000 — direct dial timeout (also a TLS stream's connect and handshake). */
  dialTimeoutMs?: number;
  /** @default 8_000 (limits.ts defaultRelayIdleTimeoutMs) — silence after which a relay channel is reset; pinged every quarter of it. */
  relayIdleTimeoutMs?: number;
  /** @default 10_000 — how often every libp2p connection is pinged (TunnelHostOptions.connectionPingIntervalMs). */
  connectionPingIntervalMs?: number;
  /** Path machine timings (see path-machine.ts). */
  upgradeIntervalMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** Node record refresh and TTL (see node-directory.ts). */
  /** @default networkWatchIntervalMs (network-watch.ts): how often this host's own addresses are looked at. */
  networkWatchMs?: number;
  recordRefreshMs?: number;
  recordTtlMs?: number;
  /**
   * With security on (the agent's --keys bundle): node records are signed and checked, and a
   * libp2p peer must prove with its mesh certificate which node it is (node-identity.ts).
   */
  identity?: NodeIdentity;
  /**
   * With an identity: where streams on direct paths are served over TLS connections of
   * their own (tls-carriers.ts: OpenSSL instead of noise and yamux in JavaScript); port 0
   * picks one. With it, relayed and hole-punched streams between two such nodes also get
   * a relay channel or punched connection of their own under TLS. Leave out to keep every
   * stream on libp2p.
   */
  tlsStreams?: { host: string; port: number };
  /** The leaf's upstreams with their TCP connect time measured now (`leafmesh netcheck`); the role knows them. */
  measureUpstreams?: () => Promise<{ url: string; rttMs?: number }[]>;
  /** @default 4_096 — see StreamServerOptions.maxStreamsPerPeer; also the relay channels a peer may have open here */
  maxStreamsPerPeer?: number;
  /** @default 16 — see PunchCoordinatorOptions.maxPunchesPerPeer */
  maxPunchesPerPeer?: number;
  /**
   * With an identity: the mesh's revocation list in force (trust/revocations.ts followRevocations).
   * A revoked node's certificate is then refused on every carrier and in node records, and what
   * it has open is cut when the list arrives (peer-trust.ts).
   */
  revocations?: RevocationSource;
  /**
   * Where the node's libp2p key is kept (peer-key.ts): made once, reused at every start, so the
   * node keeps its peer id across restarts. Undefined: a new key (and peer id) at every start.
   */
  keyFile?: string;
  /** See StreamServerOptions.servedLocallyOnly: the targets this node serves to no other node (internalTrafficPolicy Local). */
  servedLocallyOnly?: (target: StreamTarget) => string | undefined;
}
