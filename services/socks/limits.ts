/** The SOCKS proxy's default limits: read by the agent's flags without loading the proxy (cli/agent.ts). */
import type { AdmissionLimits } from "../../lib/admission.ts";

/**
 * The SOCKS proxy's limits: an operator's tool (ssh, curl, a browser), not a data
 * path for a fleet; a scan or a runaway script must not take the agent's memory
 * or every tunnel stream to a peer.
 */
export const defaultSocksLimits: AdmissionLimits = {
  /** @default 1_024 — clients served at once (each a socket and, through the tunnel, a TLS session: ~100 KiB). */
  maxConnections: 1_024,
  /** @default 128 — clients between accept and joined at once (their handshake, then the target's connect or tunnel stream open, a TLS handshake). */
  maxOpening: 128,
  /** @default 64 — one client address's share: a browser opens tens, a scan thousands; half the openings, so one stalling client never holds them all. */
  maxPerClient: 64,
  /** @default 512 — clients waiting for a place before the next is refused at once. */
  maxWaiting: 512,
  /** @default 10_000 — as the handshake timeout: a client waits no longer for a place than for its target. */
  waitTimeoutMs: 10_000,
};
