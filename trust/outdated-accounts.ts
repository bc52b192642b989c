/**
 * Which account JWTs of a mesh an older leafmesh signed, and why each must be signed again
 * (`leafmesh keys resign`): hubs warn at start (trust/security.ts `outdatedAccounts`). Pure.
 */
import type { Export, Import, OperatorLimits } from "@nats-io/jwt";
import { buckets } from "../bus/subjects.ts";
import { jetStreamInfoApi, meshAccountName, nodeConnectionLimits } from "./claims.ts";

const revocationsStream = `KV_${buckets.revocations}`;

/**
 * Why an account JWT of this mesh was signed by an older leafmesh and must be signed again
 * (`leafmesh keys resign`), or undefined. Node accounts without the `$JS.API.INFO` import let a
 * stolen node purge the mesh's JetStream (see jetStreamInfoApi); without nodeConnectionLimits,
 * exhaust a hub's memory with subscriptions and connections.
 */
export function outdatedAccountReason(claims: { name: string; nats: { imports?: Import[]; exports?: Export[]; limits?: OperatorLimits } }): string | undefined {
  if (claims.name === meshAccountName && claims.nats.exports?.some((entry) => entry.subject === "$JS.M.>")) {
    return `account ${claims.name} exports every mirror's deliveries ($JS.M.>): any node could read other nodes' mirror consumers and change them`;
  }
  if (!claims.name.startsWith("node-")) return undefined;
  if (claims.nats.imports?.some((entry) => entry.subject === "$JS.M.>")) return `account ${claims.name} imports every mirror's deliveries ($JS.M.>): its node could change other nodes' mirror consumers`;
  if (!claims.nats.imports?.some((entry) => entry.subject === `$JS.API.CONSUMER.CREATE.${revocationsStream}`)) {
    return `account ${claims.name} cannot mirror the revocation list (${buckets.revocations}): its node would not learn which peers are revoked`;
  }
  if (!claims.nats.imports?.some((entry) => entry.subject === jetStreamInfoApi && entry.type === "service")) {
    return `account ${claims.name} has no ${jetStreamInfoApi} import: on nats-server 2.9.10 its node could purge the mesh's JetStream`;
  }
  const { subs, leaf } = claims.nats.limits ?? {};
  if (subs === undefined || subs < 0 || subs > nodeConnectionLimits.subs || leaf === undefined || leaf < 0 || leaf > nodeConnectionLimits.leaf) {
    return `account ${claims.name} does not bound its node's subscriptions and leaf connections (subs ${subs ?? "unset"}, leaf ${leaf ?? "unset"}; now ${nodeConnectionLimits.subs} and ${nodeConnectionLimits.leaf}): its node's credentials could exhaust a hub's memory`;
  }
  return undefined;
}
