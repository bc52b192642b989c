/**
 * What `rpc.<node>.status` answers (bus/rpc.ts): the node's role, its fabric links
 * and its actors' states. A contract between processes, so it lives with the
 * other message types; roles/status.ts builds it.
 */

export interface FabricLink {
  kind: "leaf" | "route" | "gateway";
  /** Which end: "upstream" (we dialled it: a hub or site), "downstream" (a leaf attached to us), "peer" (a route or gateway). */
  direction: "upstream" | "downstream" | "peer";
  remote: string;
  url?: string;
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
  /** Extra tables from actors (tunnel paths, DNS stats...). */
  extra?: Record<string, unknown>;
}
