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
 * The slices a client on `node` may be balanced over: all of them, or for a Service with internalTrafficPolicy Local only
 * the endpoints on `node` (kube-proxy's rule). The cluster IP (traffic's plans) and the gateway read it here: a node
 * serves a Local-only endpoint to clients on its own node alone (services/traffic/local-only.ts), so an endpoint on
 * another node would only be refused.
 */
export function slicesServedTo(service: Service, slices: readonly EndpointSlice[], node: string | undefined): readonly EndpointSlice[] {
  if (service.internalTrafficPolicy !== "Local") return slices;
  return slices.map((slice) => ({ ...slice, endpoints: slice.endpoints.filter((endpoint) => endpoint.nodeName === node) }));
}

/**
 * The ready endpoints of one Service port, as Kubernetes matches slice ports to
 * service ports (by name and protocol). When none is ready, the serving ones that
 * are terminating take the traffic instead of a refusal (kube-proxy's
 * ProxyTerminatingEndpoints, KEP-1669): a rolling update's last old pod keeps
 * serving until its replacement is ready.
 */
export function endpointsOf(port: ServicePort, slices: readonly EndpointSlice[]): EndpointTarget[] {
  for (const [wanted, family] of endpointPreference) {
    const found = collectEndpoints(port, slices, wanted, family);
    if (found.length > 0) return found;
  }
  return [];
}

type Conditions = EndpointSlice["endpoints"][number]["conditions"];

const ready = (conditions: Conditions) => conditions.ready;
const terminating = (conditions: Conditions) => conditions.serving && conditions.terminating;
// IPv4 slices first; IPv6 ones (an IPv6-only Service's) when no IPv4 endpoint is there. A dual-stack Service has a
// slice of each family for the same pods: both at once would count every pod twice. Made once: endpointsOf runs for
// every Service port a reconcile plans (20,000 times while a fresh agent loads 10,000 services).
const endpointPreference = [[ready, "IPv4"], [ready, "IPv6"], [terminating, "IPv4"], [terminating, "IPv6"]] as const;

/**
 * The endpoints of one family and condition, deduplicated by key and sorted by it. A Service port has one or a few
 * endpoints: they are looked up in the array itself and sorted in place by insertion, and only a port with many
 * gets a set of the keys seen and Array#sort. A Map per port, its values spread into an array and sorted were most
 * of what planning a Service allocated (bench/profile/heap-sampling-preload.ts).
 */
function collectEndpoints(port: ServicePort, slices: readonly EndpointSlice[], wanted: (conditions: Conditions) => boolean, family: "IPv4" | "IPv6"): EndpointTarget[] {
  const found: EndpointTarget[] = [];
  let seen: Set<string> | undefined;
  for (const slice of slices) {
    if (slice.addressType !== family) continue; // FQDN slices name no address to connect to
    let targetPort: number | undefined;
    for (const candidate of slice.ports) {
      if (candidate.name === port.name && candidate.protocol === port.protocol) {
        targetPort = candidate.port;
        break;
      }
    }
    targetPort ??= typeof port.targetPort === "number" && slice.ports.length === 0 ? port.targetPort : undefined;
    if (targetPort === undefined) continue;
    for (const endpoint of slice.endpoints) {
      if (!wanted(endpoint.conditions)) continue;
      for (const host of endpoint.addresses) {
        const key = host.includes(":") ? `[${host}]:${targetPort}` : `${host}:${targetPort}`;
        if (seen === undefined && found.length >= fewEndpoints) seen = new Set(found.map((target) => target.key));
        if (seen ? seen.has(key) : holdsKey(found, key)) continue;
        seen?.add(key);
        found.push({ key, host, port: targetPort, nodeName: endpoint.nodeName });
      }
    }
  }
  if (found.length > fewEndpoints) return found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (let i = 1; i < found.length; i++) {
    const target = found[i];
    let j = i - 1;
    for (; j >= 0 && found[j].key > target.key; j--) found[j + 1] = found[j];
    found[j + 1] = target;
  }
  return found;
}

function holdsKey(targets: readonly EndpointTarget[], key: string): boolean {
  for (let i = 0; i < targets.length; i++) if (targets[i].key === key) return true;
  return false;
}

/** Up to this many endpoints a port's are deduplicated by a scan of the array and sorted by insertion. */
const fewEndpoints = 16;
