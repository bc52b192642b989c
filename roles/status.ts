/**
 * What `rpc.<node>.status` answers: the node's role, its fabric links and its
 * actors' states. The catalog itself is paged through `catalog.snapshot`.
 */
import type { FabricLink } from "../nats/fabric-monitor.ts";

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
  /** Extra tables from actors (tunnel paths, DNS stats...). */
  extra?: Record<string, unknown>;
}

export function buildStatus(parts: Omit<NodeStatus, "at">): NodeStatus {
  return { ...parts, at: new Date().toISOString() };
}
