/**
 * services/gateway: the ingress gateway, EdgeMesh's edgemesh-gateway. A node
 * started with `--gateway` listens on its address for the Gateways selected for
 * it (Istio `Gateway` + `VirtualService`, or Gateway API `Gateway` + `HTTPRoute`,
 * `TCPRoute`, `TLSRoute`, all from the catalog, so a site cut from the cloud keeps
 * routing from its mirror) and sends clients from outside the mesh to Services
 * anywhere in it: HTTP/1.1 and HTTP/2 by host, path, method and headers with
 * weights, retries and timeouts; TLS by server name, passed through or
 * terminated with a kubernetes.io/tls Secret; TCP by port. Backends on other
 * nodes are reached through the tunnel. The routing is pure (bind.ts,
 * compile.ts, router.ts); the sockets are thin (listeners.ts, http-proxy.ts).
 *
 * ```ts
 * import { createGatewayActor } from "./services/gateway/index.ts";
 * const gateway = createGatewayActor({ bus, feed, log, node: "edge-a", labels: { site: "shop-7" }, listenHost: "0.0.0.0", dialer: tunnel });
 * await gateway.start();
 * gateway.status(); // { listeners: [{ port: 8080, kind: "http", state: "listening" }], routes, refused: [{ object, reason, error }] }
 * // curl -H 'Host: shop.example.com' http://edge-a:8080/api/orders
 * await gateway.stop();
 * ```
 */
export { createGatewayActor, type GatewayActor, type GatewayOptions } from "./actor.ts";
export { registerGatewayMetrics } from "./metrics.ts";
export { compileGateway } from "./compile.ts";
export type { GatewayPlan, Refusal, RouteSummary } from "./plan.ts";
export { checkAccessLogFile, parseAccessLogTarget, type AccessLogTarget } from "./access-file.ts";
