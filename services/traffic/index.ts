/**
 * services/traffic: L4 proxying and load balancing of cluster IPs on the agent.
 * A listener per proxied service port: UDP a socket each on `listenHost`; TCP, with
 * a loopback `listenHost` (the default), a loopback address each on one shared
 * listener (shared-listener.ts), else a socket each on `listenHost`. Each new
 * connection or UDP flow goes to a ready endpoint chosen by the service's policy
 * (annotation `service.leafmesh.io/lb-policy`, else an Istio DestinationRule's
 * `trafficPolicy.loadBalancer`, else round robin; `sessionAffinity: ClientIP` on
 * top). Endpoints on this node first; on other nodes through the tunnel's
 * `StreamDialer` when one is given, else directly by IP. `servicePorts` opens a
 * Service port for the SOCKS proxy with the same plan and balancer
 * (service-ports.ts), so that SOCKS and the cluster IP cannot route apart.
 * `LocalOnlyEndpoints` is its serving side (local-only.ts): the endpoints that only
 * internalTrafficPolicy Local Services lead to, which the tunnel serves to no other node.
 *
 * ```ts
 * import { createTrafficActor } from "./services/traffic/index.ts";
 * const traffic = createTrafficActor({ bus, feed, log, node: "edge-a", listenHost: "127.0.0.1", dialer: tunnel, clock });
 * await traffic.start();
 * traffic.listeners();   // [{ key: "shop/web:http/TCP", clusterIPs: ["198.19.0.10"], port: 80, listenerHost: "127.128.0.1", listenerPort: 41234, protocol: "TCP" }]
 * await traffic.stop();
 * ```
 */
export { createTrafficActor, type TrafficActor, type TrafficOptions } from "./actor.ts";
export { registerTrafficMetrics } from "./metrics.ts";
export { defaultTrafficLimits, type TrafficLimits } from "./capacity.ts";
export { lbPolicies, type LbPolicy, type NodeTopology } from "../../balance/policy.ts";
export { lbPolicyAnnotation } from "./plan.ts";
export { LocalOnlyEndpoints } from "./local-only.ts";
