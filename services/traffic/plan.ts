/**
 * What the agent proxies, as a pure function of the catalog: one `ServicePortPlan`
 * per (Service, port) with a cluster IP and protocol TCP or UDP, with its ready
 * endpoints and its load-balancing policy. Services labelled
 * `service.leafmesh.io/noproxy`, headless and ExternalName services are left out;
 * a service whose policy annotation is invalid is left out with a reason (the
 * others keep working).
 *
 * ```ts
 * const { plans, rejected } = planServicePorts(feed.reader);
 * plans.get("shop/web:http/TCP")?.endpoints;   // [{ key: "198.18.1.3:8080", ... }]
 * ```
 */
import type { CatalogReader, DestinationRule, EndpointSlice, Service, ServicePort } from "../../bus/catalog.ts";
import { lbPolicies, type EndpointTarget, type LbPolicy } from "./policy.ts";

export const noProxyLabel = "service.leafmesh.io/noproxy";
export const lbPolicyAnnotation = "service.leafmesh.io/lb-policy";

export type ProxiedProtocol = "TCP" | "UDP";

export interface PolicyChoice {
  policy: LbPolicy;
  /** Session affinity timeout in ms when sessionAffinity is ClientIP. */
  affinityTimeoutMs?: number;
  /** Where the policy came from: "default", "annotation", "destination-rule". */
  source: string;
}

export interface ServicePortPlan {
  /** "namespace/name:portName/PROTOCOL", stable across catalog updates. */
  key: string;
  namespace: string;
  service: string;
  portName: string;
  protocol: ProxiedProtocol;
  port: number;
  clusterIPs: string[];
  /** Ready endpoints, sorted by key, deduplicated across slices. */
  endpoints: EndpointTarget[];
  policy: PolicyChoice;
}

export interface RejectedService {
  service: string;
  reason: string;
  error: string;
}

export function servicePortKey(namespace: string, name: string, portName: string, protocol: string): string {
  return `${namespace}/${name}:${portName}/${protocol}`;
}

/** Whether the agent proxies this Service at all (before looking at its policy). */
export function isProxied(service: Service): boolean {
  return service.type !== "ExternalName" && !service.headless && service.clusterIPs.length > 0 && !Object.hasOwn(service.labels, noProxyLabel);
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
    // At L4 only the source IP is known; an httpHeaderName hash falls back to it.
    return { policy: "consistent-hash", affinityTimeoutMs, source: "destination-rule" };
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

export function planServicePorts(catalog: CatalogReader): { plans: Map<string, ServicePortPlan>; rejected: RejectedService[] } {
  const plans = new Map<string, ServicePortPlan>();
  const rejected: RejectedService[] = [];
  for (const service of catalog.services()) {
    if (!isProxied(service)) continue;
    let policy: PolicyChoice;
    try {
      policy = choosePolicy(service, catalog.destinationRule(service.namespace, service.name));
    } catch (error) {
      rejected.push({ service: `${service.namespace}/${service.name}`, reason: "invalid lb-policy annotation", error: (error as Error).message });
      continue;
    }
    const slices = catalog.slices(service.namespace, service.name);
    for (const port of service.ports) {
      if (port.protocol !== "TCP" && port.protocol !== "UDP") continue;
      const key = servicePortKey(service.namespace, service.name, port.name, port.protocol);
      plans.set(key, {
        key,
        namespace: service.namespace,
        service: service.name,
        portName: port.name,
        protocol: port.protocol,
        port: port.port,
        clusterIPs: service.clusterIPs.filter((ip) => !ip.includes(":")),
        endpoints: endpointsOf(port, slices),
        policy,
      });
    }
  }
  return { plans, rejected };
}
