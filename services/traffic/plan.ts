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
import { kindOfKey, noProxyLabel, type CatalogReader, type DestinationRule, type EndpointSlice, type Service, type ServicePort } from "../../bus/catalog.ts";
import { lbPolicies, type EndpointTarget, type LbPolicy } from "./policy.ts";

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

/** "namespace/name" of a Service: the unit the traffic actor re-plans. */
export function serviceRef(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** The plans of one Service's ports, or why it is left out; empty when it is not proxied. */
export function planService(service: Service, catalog: CatalogReader): { plans: ServicePortPlan[]; rejected?: RejectedService } {
  if (!isProxied(service)) return { plans: [] };
  let policy: PolicyChoice;
  try {
    policy = choosePolicy(service, catalog.destinationRule(service.namespace, service.name));
  } catch (error) {
    return { plans: [], rejected: { service: serviceRef(service.namespace, service.name), reason: "invalid lb-policy annotation", error: (error as Error).message } };
  }
  const slices = catalog.slices(service.namespace, service.name);
  const plans: ServicePortPlan[] = [];
  for (const port of service.ports) {
    if (port.protocol !== "TCP" && port.protocol !== "UDP") continue;
    plans.push({
      key: servicePortKey(service.namespace, service.name, port.name, port.protocol),
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
  return { plans };
}

export function planServicePorts(catalog: CatalogReader): { plans: Map<string, ServicePortPlan>; rejected: RejectedService[] } {
  const plans = new Map<string, ServicePortPlan>();
  const rejected: RejectedService[] = [];
  for (const service of catalog.services()) {
    const planned = planService(service, catalog);
    if (planned.rejected) rejected.push(planned.rejected);
    for (const plan of planned.plans) plans.set(plan.key, plan);
  }
  return { plans, rejected };
}

/**
 * Which Services a batch of changed catalog keys can affect, so that a change to
 * one Service re-plans one Service and not the 10,000 others; `"all"` when a key
 * cannot be narrowed down. A changed EndpointSlice names its Service only in its
 * body: `sliceOwner` answers for one that is gone (the caller remembers the owners
 * of the slices it planned), the catalog for one that is there.
 */
export function affectedServices(keys: Iterable<string>, catalog: CatalogReader, sliceOwner: (key: string) => string | undefined): Set<string> | "all" {
  const affected = new Set<string>();
  for (const key of keys) {
    const kind = kindOfKey(key);
    const [, namespace, ...rest] = key.split(".");
    const name = rest.join(".");
    if (kind === "Service") affected.add(serviceRef(namespace, name));
    else if (kind === "EndpointSlice") {
      const previous = sliceOwner(key);
      if (previous) affected.add(previous);
      const current = catalog.get(key);
      if (current?.kind === "EndpointSlice") affected.add(serviceRef(current.namespace, current.serviceName));
    } else return "all"; // a DestinationRule (its host may name any Service) or an unknown key: rare, re-plan everything
  }
  return affected;
}
