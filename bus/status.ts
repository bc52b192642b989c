/**
 * What `rpc.<node>.status` answers (bus/rpc.ts): the node's role, its fabric links
 * and its actors' states. A contract between processes, so it lives with the
 * other message types; roles/status.ts builds it.
 */
import type { ProtocolSkew } from "./protocol.ts";

export interface FabricLink {
  kind: "leaf" | "route" | "gateway";
  /** Which end: "upstream" (we dialled it: a hub or site), "downstream" (a leaf attached to us), "peer" (a route or gateway). */
  direction: "upstream" | "downstream" | "peer";
  remote: string;
  url?: string;
  /** A leaf link's address (ip:port): for an upstream, where its URL's host name resolved to; for a downstream, where the leaf came from. */
  address?: string;
  rttMs?: number;
  up: boolean;
}

export interface ActorStatus {
  name: string;
  state: string;
  since: string;
  detail?: Record<string, unknown>;
}

export interface NodeStatus {
  node: string;
  role: "hub" | "agent" | "site";
  at: string;
  links: FabricLink[];
  actors: ActorStatus[];
  catalogObjects: number;
  /** The URLs this node's (or site server's) leaf attaches to, in order (what `leafmesh drill` cuts); absent on a hub. */
  upstreams?: string[];
  /** Why no upstream link is up, when the node knows more than that (a leaf link that goes stale as soon as it is made: nats/leaf-stale.ts). */
  upstreamProblem?: string;
  /** Relay choice on an agent with several upstreams (roles/relay-choice.ts, docs/relay-choice.md). */
  relayChoice?: RelayChoiceStatus;
  /** Through --hub-proxy: the proxy, and per upstream the loopback forwarder the leaf dials and the last refusal (nats/hub-proxy-forwarder.ts). */
  hubProxy?: HubProxyStatus;
  /**
   * A hub's view of a mesh mid-upgrade: the hubs and nodes on another protocol level (roles/hub-versions.ts); on an
   * agent the tunnel's status says the same of its peers and hubs.
   */
  versions?: ProtocolSkew[];
  /** When the hub could not read every node record for it: how many it read, of how many, or why none. */
  versionsRead?: { read: number; of: number; problem?: string };
  /** Extra tables from actors (tunnel paths, DNS stats...). */
  extra?: Record<string, unknown>;
}

export interface HubProxyRoute {
  /** The hub's leafnode URL as given. */
  hub: string;
  /** The loopback URL the leaf remote dials instead (same scheme). */
  via: string;
  /** The last time a CONNECT to this hub failed, and why; cleared by the next tunnel that opens. */
  problem?: { at: string; text: string };
  /** Tunnels to this hub open now. */
  open: number;
}

export interface HubProxyStatus {
  /** The proxy URL, its password shown as ***. */
  proxy: string;
  routes: HubProxyRoute[];
}

/** One upstream as relay choice scored it (nats/relay-score.ts); score null: unreachable. */
export interface RelayUpstreamScore {
  url: string;
  server?: string;
  rttMs?: number;
  loss: number;
  probes: number;
  load?: { channels: number; bytesPerSecond: number };
  score: number | null;
}

export interface RelayMoveStatus {
  at: string;
  from: string | null;
  to: string;
  reason: string;
  scores: RelayUpstreamScore[];
  movedInMs?: number;
  error?: string;
}

/** What relay choice shows in `leafmesh status` and `netcheck`. */
export interface RelayChoiceStatus {
  /** The upstream the leaf is attached to now. */
  inUse: string | null;
  /** The order the leaf remote is rendered in now. */
  order: string[];
  scores: RelayUpstreamScore[];
  /** Bad rounds in a row so far (a move after `settings.badRounds`). */
  badRounds: number;
  /** The last round's verdict, in words. */
  verdict: string;
  lastMove?: RelayMoveStatus;
  settings: Record<string, number>;
}
