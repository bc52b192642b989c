/**
 * balance/: load balancing as pure functions of (endpoints, policy, client),
 * shared by the two actors that balance Service ports: traffic (cluster IPs,
 * per connection) and gateway (ingress, per connection or per request). It holds
 * the policies (round robin, random, least connections, consistent hash with
 * bounded loads, session affinity), topology tiers, outlier ejection, one Service
 * port's endpoint choice, and what the catalog says a Service port's endpoints
 * and policy are. No sockets, no actor: time comes from an injected clock.
 *
 * ```ts
 * import { choosePolicy, endpointsOf, OutlierDetector, ServicePortBalancer } from "../balance/index.ts";
 * const shared = { node: "edge-a", clock, outliers: new OutlierDetector({ clock }), active: new Map() };
 * const balancer = new ServicePortBalancer({ endpoints: endpointsOf(port, slices), policy: choosePolicy(service, rule) }, shared);
 * const target = balancer.choose(clientIp, new Set());
 * ```
 */
export { ServicePortBalancer, type BalancedPort, type BalancerShared } from "./balancer.ts";
export { choosePolicy, endpointsOf, lbPolicyAnnotation, type PolicyChoice } from "./endpoints.ts";
export { OutlierDetector, type OutlierOptions } from "./outlier.ts";
export { createPicker, fnv1a, lbPolicies, topologyTiers, withSessionAffinity, type EndpointTarget, type LbPolicy, type NodeTopology, type PickContext, type Picker } from "./policy.ts";
