/**
 * What the catalog says about balancing one Service port, as pure functions:
 * its ready endpoints (`endpointsOf`, Kubernetes' slice-port matching) and its
 * load-balancing policy (`choosePolicy`: the `service.leafmesh.io/lb-policy`
 * annotation, else an Istio DestinationRule, else round robin). The traffic
 * actor (cluster IPs) and the gateway actor (ingress) both balance Service
 * ports the same way, so both read them from here.
 *
 * ```ts
 * const endpoints = endpointsOf(service.ports[0], catalog.slices("shop", "web")); // [{ key: "198.18.1.3:8080", ... }]
 * const policy = choosePolicy(service, catalog.destinationRule("shop", "web"));  // { policy: "round-robin", source: "default" }
 * ```
 */
import type { DestinationRule, EndpointSlice, Service, ServicePort } from "../bus/catalog.ts";
import { lbPolicies, type EndpointTarget, type LbPolicy } from "./policy.ts";

export const lbPolicyAnnotation = "service.leafmesh.io/lb-policy";

export interface PolicyChoice {
  policy: LbPolicy;
  /** Session affinity timeout in ms when sessionAffinity is ClientIP. */
  affinityTimeoutMs?: number;
  /** Where the policy came from: "default", "annotation", "destination-rule". */
  source: string;
  /**
   * With consistent-hash from a DestinationRule's `consistentHash.httpHeaderName`: the request header whose value is
   * hashed where requests are seen (the gateway); at L4 (cluster IPs) only the source IP is known and is hashed.
   */
  hashHeader?: string;
}

/** The policy of a Service: its annotation, else its DestinationRule, else round robin. Throws on an invalid annotation. */
export function choosePolicy(service: Service, rule: DestinationRule | undefined): PolicyChoice {
  const affinityTimeoutMs = service.sessionAffinity === "ClientIP" ? service.sessionAffinityTimeoutSeconds * 1000 : undefined;
  const annotated = service.annotations[lbPolicyAnnotation];
  if (annotated !== undefined) {
    const value = annotated.trim();
    if (!(lbPolicies as readonly string[]).includes(value)) {
      throw new Error(
        `Service ${service.namespace}/${service.name}: annotation ${lbPolicyAnnotation}: '${annotated}' is not a policy (expected one of ${lbPolicies.join(", ")})`,
      );
    }
    return { policy: value as LbPolicy, affinityTimeoutMs, source: "annotation" };
  }
  const loadBalancer = rule?.loadBalancer;
  if (loadBalancer?.consistentHash) {
    const header = loadBalancer.consistentHash.httpHeaderName?.toLowerCase();
    return { policy: "consistent-hash", affinityTimeoutMs, source: "destination-rule", ...(header ? { hashHeader: header } : {}) };
  }
  switch (loadBalancer?.simple) {
    case "RANDOM":
      return { policy: "random", affinityTimeoutMs, source: "destination-rule" };
    case "LEAST_CONN":
    case "LEAST_REQUEST":
      return { policy: "least-connections", affinityTimeoutMs, source: "destination-rule" };
    case "ROUND_ROBIN":
      return { policy: "round-robin", affinityTimeoutMs, source: "destination-rule" };
    default:
      // UNSPECIFIED, PASSTHROUGH (no original destination behind a cluster IP) or no rule.
      return { policy: "round-robin", affinityTimeoutMs, source: "default" };
  }
}

/**
 * The ready endpoints of one Service port, as Kubernetes matches slice ports to
 * service ports (by name and protocol). When none is ready, the serving ones that
 * are terminating take the traffic instead of a refusal (kube-proxy's
 * ProxyTerminatingEndpoints, KEP-1669): a rolling update's last old pod keeps
 * serving until its replacement is ready.
 */
export function endpointsOf(port: ServicePort, slices: readonly EndpointSlice[]): EndpointTarget[] {
  const ready = collectEndpoints(port, slices, (conditions) => conditions.ready);
  return ready.length > 0 ? ready : collectEndpoints(port, slices, (conditions) => conditions.serving && conditions.terminating);
}

function collectEndpoints(port: ServicePort, slices: readonly EndpointSlice[], wanted: (conditions: EndpointSlice["endpoints"][number]["conditions"]) => boolean): EndpointTarget[] {
  const byKey = new Map<string, EndpointTarget>();
  for (const slice of slices) {
    if (slice.addressType !== "IPv4") continue; // the data path is IPv4 for now
    const slicePort = slice.ports.find((candidate) => candidate.name === port.name && candidate.protocol === port.protocol);
    const targetPort = slicePort?.port ?? (typeof port.targetPort === "number" && slice.ports.length === 0 ? port.targetPort : undefined);
    if (targetPort === undefined) continue;
    for (const endpoint of slice.endpoints) {
      if (!wanted(endpoint.conditions)) continue;
      for (const host of endpoint.addresses) {
        const key = `${host}:${targetPort}`;
        if (!byKey.has(key)) byKey.set(key, { key, host, port: targetPort, nodeName: endpoint.nodeName });
      }
    }
  }
  return [...byKey.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
