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
import { isProxied, kindOfKey, type CatalogReader, type Service } from "../../bus/catalog.ts";
import { isGatewayKind } from "../../bus/catalog-gateway.ts";
import { choosePolicy, endpointsOf, slicesServedTo, type PolicyChoice } from "../../balance/endpoints.ts";
import type { EndpointTarget } from "../../balance/policy.ts";

export { choosePolicy, endpointsOf, lbPolicyAnnotation, type PolicyChoice } from "../../balance/endpoints.ts";
export { isProxied } from "../../bus/catalog.ts";

export type ProxiedProtocol = "TCP" | "UDP";

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

/** "namespace/name" of a Service: the unit the traffic actor re-plans. */
export function serviceRef(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/**
 * The plans of one Service's ports, or why it is left out; empty when it is not proxied. `node`: the node planned for,
 * whose endpoints alone a Service with internalTrafficPolicy Local uses (kube-proxy's rule; with none there it is refused at once,
 * where kube-proxy drops and leaves the client to its timeout).
 */
export function planService(service: Service, catalog: CatalogReader, node?: string): { plans: ServicePortPlan[]; rejected?: RejectedService } {
  if (!isProxied(service)) return { plans: [] };
  let policy: PolicyChoice;
  try {
    policy = choosePolicy(service, catalog.destinationRule(service.namespace, service.name));
  } catch (error) {
    return { plans: [], rejected: { service: serviceRef(service.namespace, service.name), reason: "invalid lb-policy annotation", error: (error as Error).message } };
  }
  const slices = slicesServedTo(service, catalog.slices(service.namespace, service.name), node);
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
      // Both families: the proxier intercepts an IPv6 cluster IP too, where the host has IPv6 (bus/ipv6-listeners.ts).
      clusterIPs: service.clusterIPs,
      endpoints: endpointsOf(port, slices),
      policy,
    });
  }
  return { plans };
}

export function planServicePorts(catalog: CatalogReader, node?: string): { plans: Map<string, ServicePortPlan>; rejected: RejectedService[] } {
  const plans = new Map<string, ServicePortPlan>();
  const rejected: RejectedService[] = [];
  for (const service of catalog.services()) {
    const planned = planService(service, catalog, node);
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
    if (kind === "Service") {
      // "<prefix>.<namespace>.<name>" (catalogKey; a name may hold dots): sliced, not split and joined again.
      const first = key.indexOf(".");
      const second = key.indexOf(".", first + 1);
      affected.add(serviceRef(key.slice(first + 1, second), key.slice(second + 1)));
    } else if (kind === "EndpointSlice") {
      const previous = sliceOwner(key);
      if (previous) affected.add(previous);
      const current = catalog.get(key);
      if (current?.kind === "EndpointSlice") affected.add(serviceRef(current.namespace, current.serviceName));
    } else if (kind !== undefined && isGatewayKind(kind)) continue; // ingress objects: the gateway's, nothing traffic plans
    else return "all"; // a DestinationRule (its host may name any Service) or an unknown key: rare, re-plan everything
  }
  return affected;
}
