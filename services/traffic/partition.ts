/**
 * Traffic under the per-service partition policy (bus/partition.ts): while the node is partitioned,
 * a new connection (or UDP flow) to a `fail-closed` service is refused at once, a TCP client with an
 * RST, and counted with the reason; `serve-last-known` services go on from the node's catalog
 * mirror. Under an edge site cut off from the cloud, a fail-closed service whose backends all run in
 * the site is still served (the site vouches for its members). Connections already open are left
 * alone: they were made while the node could verify its backends.
 *
 * ```ts
 * shared.admit = partitionAdmission({ reader: feed.reader, upstream, log });
 * shared.admit(plan); // "fail-closed while the node cannot reach its upstream" | undefined
 * ```
 */
import type { CatalogReader } from "../../bus/catalog.ts";
import { backendsOutsideSite, partitionPolicyOf, partitionRefusals, refusalWhilePartitioned, type UpstreamState } from "../../bus/partition.ts";
import type { Logger } from "../../lib/log.ts";
import type { ServicePortPlan } from "./plan.ts";

export function partitionAdmission(options: { reader: CatalogReader; upstream: UpstreamState; log: Logger }): (plan: Pick<ServicePortPlan, "key" | "namespace" | "service">) => string | undefined {
  const { reader, upstream, log } = options;
  // Said once per service and reach (a log line, not one per connection); the counters have every refusal.
  const said = new Set<string>();
  const badAnnotations = new Set<string>();
  upstream.onChange(() => said.clear());
  return (plan) => {
    const service = reader.service(plan.namespace, plan.service);
    if (service && !badAnnotations.has(`${plan.namespace}/${plan.service}`)) {
      const { problem } = partitionPolicyOf(service);
      if (problem) {
        badAnnotations.add(`${plan.namespace}/${plan.service}`);
        log.warn({ service: `${plan.namespace}/${plan.service}` }, problem);
      }
    }
    const slices = service ? reader.slices(plan.namespace, plan.service) : [];
    const refusal = refusalWhilePartitioned(service, slices, upstream);
    if (refusal && !said.has(plan.key)) {
      said.add(plan.key);
      // The backends the site cannot vouch for, named once in the log (the counter's label stays fixed).
      const outside = refusal === partitionRefusals.outsideSite ? { outside: backendsOutsideSite(slices, upstream) } : {};
      log.info({ service: plan.key, ...outside }, `refusing new connections to ${plan.key}: ${refusal}`);
    }
    return refusal;
  };
}
