/**
 * Subjects, KV bucket names and keys of the mesh, built by functions so no call
 * site concatenates them. Everything an operator watches lives under `mesh.>`
 * (`mesh.<node>.<actor>.<event>`); request/reply between processes lives under
 * `rpc.>`; bulk relayed bytes live under `relay.>`, never under `mesh.>`.
 *
 * ```ts
 * meshSubject("edge-a", "dns", "stats");   // "mesh.edge-a.dns.stats"
 * parseMeshSubject("mesh.edge-a.dns.stats"); // { node: "edge-a", actor: "dns", event: "stats" }
 * rpcSubject("edge-a", "status");           // "rpc.edge-a.status"
 * ```
 */
import { LeafmeshError } from "../lib/errors.ts";

export const actorNames = ["controller", "dns", "proxier", "traffic", "tunnel", "socks", "gateway", "fabric", "publisher"] as const;
export type ActorName = (typeof actorNames)[number];

/** Node and hub names are DNS labels: they become subject tokens, JetStream domains and server names. */
export const nodeNamePattern = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export function checkNodeName(name: string, what = "node name"): string {
  if (!nodeNamePattern.test(name)) {
    throw new LeafmeshError(
      "CONFIG_INVALID",
      `${what} '${name}' is not valid: use lowercase letters, digits and '-', 1 to 63 characters, starting and ending with a letter or digit (it becomes a NATS subject token and a JetStream domain)`,
    );
  }
  if (name === "hub") {
    throw new LeafmeshError("CONFIG_INVALID", `${what} 'hub' is reserved: it is the JetStream domain of the cloud hubs`);
  }
  return name;
}

export const meshRoot = "mesh";

export function meshSubject(node: string, actor: ActorName, event: string): string {
  return `${meshRoot}.${node}.${actor}.${event}`;
}

/** A subscription pattern under `mesh.>`; omitted parts match anything. */
export function meshPattern(parts: { node?: string; actor?: ActorName; event?: string } = {}): string {
  return `${meshRoot}.${parts.node ?? "*"}.${parts.actor ?? "*"}.${parts.event ?? "*"}`;
}

export function parseMeshSubject(subject: string): { node: string; actor: string; event: string } | undefined {
  const tokens = subject.split(".");
  if (tokens.length !== 4 || tokens[0] !== meshRoot) return undefined;
  return { node: tokens[1], actor: tokens[2], event: tokens[3] };
}

/** Request/reply to one process: `rpc.<node>.<method>`. */
export function rpcSubject(node: string, method: string): string {
  return `rpc.${node}.${method}`;
}

/** KV buckets of the mesh. */
export const buckets = {
  /** Services, EndpointSlices, DestinationRules; written by the hub's publisher. */
  catalog: "mesh-catalog",
  /** One record per node, refreshed by that node, expiring when it stops. */
  nodes: "mesh-nodes",
  /** Leases: who publishes the catalog. */
  leases: "mesh-leases",
  /** Which server of a cluster is starting again with new keys (roles/restart-turn.ts): its TTL bounds a turn whose holder never came back. */
  restartTurns: "mesh-restart-turns",
  /** The mesh CA's signed list of revoked node certificates (trust/revocation-list.ts): one key, written by hubs, mirrored by every node. */
  revocations: "mesh-revocations",
} as const;

/** The one key of the revocations bucket. */
export const revocationListKey = "list";

/**
 * Enrolment by token (trust/enrolment.ts): a joining node's one request, answered by the hub that
 * serves enrolment (`leafmesh hub --enrol`). Only the `enrol` account imports it, and its users may
 * publish nothing else (trust/claims.ts enrolUserJwt).
 */
export const enrolSubject = "enrol.join";
/**
 * A joined node asks the enrolling hub to renew its certificate here (trust/renewal-service.ts): under its own
 * `mesh.<node>.>`, which only its account can publish into the mesh account, so the subject names the asker; the
 * answer goes to its inbox (`_INBOX_<node>`), which only its account imports. No account changes for it.
 */
export function certificateRenewalSubject(node: string): string {
  return `${meshRoot}.${node}.trust.renew-certificate`;
}
export const certificateRenewalSubjects = `${meshRoot}.*.trust.renew-certificate`;

/** The JetStream domain of the cloud hubs. */
export const hubDomain = "hub";

export const leaseKeys = {
  catalogPublisher: "catalog-publisher",
  /** The hubs' restart turn (roles/restart-turn.ts): the prefix of each hub's claim in the bucket `restartTurns`. */
  hubRestart: "hub-restart",
  /** A site cluster's restart turn, for a new site bundle (the same, in the site's own domain). */
  siteRestart: "site-restart",
} as const;

/** One server's claim on its cluster's restart turn (roles/restart-turn.ts): `hub-restart.hub-2`, in the bucket `restartTurns`. */
export function restartTurnClaimKey(turnKey: string, server: string): string {
  return `${turnKey}.${server}`;
}

/**
 * Relayed bytes between two nodes, outside `mesh.>`: `relay.<toNode>.<fromNode>.<channel>`.
 * A node subscribes to `relay.<itself>.>` only; the sender's name is a subject token so
 * per-node accounts can stamp it (docs/nats-facts.md: "Plan the relay for per-node accounts").
 */
export const relayRoot = "relay";

export function relaySubject(toNode: string, fromNode: string, channel: string): string {
  return `${relayRoot}.${toNode}.${fromNode}.${channel}`;
}

/**
 * A hub's relay load for the nodes that choose their relay by it (roles/hub-load.ts,
 * roles/relay-choice.ts): `fabric-load.<hub>`, outside `mesh.>` so that only the mesh
 * account (hubs) publishes it; every node account imports it (trust/claims.ts), where
 * a `mesh.<hub>.fabric.load` event never reaches a node of a secured mesh.
 */
export const hubLoadRoot = "fabric-load";

export function hubLoadSubject(hub: string): string {
  return `${hubLoadRoot}.${hub}`;
}

/** Everything addressed to one node. */
export function relayInboxPattern(node: string): string {
  return `${relayRoot}.${node}.>`;
}

export function parseRelaySubject(subject: string): { toNode: string; fromNode: string; channel: string } | undefined {
  const tokens = subject.split(".");
  if (tokens.length !== 4 || tokens[0] !== relayRoot) return undefined;
  return { toNode: tokens[1], fromNode: tokens[2], channel: tokens[3] };
}

/** The inbox prefix of a node's clients: its replies and deliveries stay addressed to it. */
export function nodeInboxPrefix(node: string): string {
  return `_INBOX_${node}`;
}

/**
 * Where a node's catalog mirror has its deliveries sent (the mirror's `external.deliver`): under the
 * node's own inbox prefix, which only that node imports. With the shared `$JS.M.>` every node used
 * before, a stolen node received every other node's mirror deliveries, learnt their consumer names
 * from the ack subjects, and with a name could update another node's mirror consumer (measured on
 * 2.9.10: it changed edge-b's filter and edge-b's catalog stopped).
 */
export function mirrorDeliverPrefix(node: string): string {
  return `${nodeInboxPrefix(node)}.mirror`;
}
