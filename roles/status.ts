/**
 * What `rpc.<node>.status` answers: the node's role, its fabric links and its
 * actors' states. The catalog itself is paged through `catalog.snapshot`.
 */
import type { NodeStatus } from "../bus/status.ts";

export type { ActorStatus, NodeStatus } from "../bus/status.ts";

export function buildStatus(parts: Omit<NodeStatus, "at">): NodeStatus {
  return { ...parts, at: new Date().toISOString() };
}
