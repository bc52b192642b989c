/**
 * The tunnel's per-peer limits, in a module of their own: the agent's options
 * show them as defaults without loading the tunnel (which brings libp2p: the
 * agent loads it only when the tunnel is on, roles/agent-actors.ts).
 */

/** StreamServerOptions.maxStreamsPerPeer's default (the agent's --tunnel-max-streams-per-peer). */
export const defaultMaxStreamsPerPeer = 4_096;

/** PunchCoordinatorOptions.maxPunchesPerPeer's default (the agent's --tunnel-max-punches-per-peer). */
export const defaultMaxPunchesPerPeer = 16;

/**
 * RelayEndpointOptions.idleTimeoutMs's default (the agent's --tunnel-relay-idle-timeout): silence after which a
 * relay channel is reset. A leaf moves to another hub in ~1-2 s (docs/nats-facts.md); a channel is pinged every
 * quarter of this (2 s), so four pings lost mean the path, or the far node, is gone.
 */
export const defaultRelayIdleTimeoutMs = 8_000;
