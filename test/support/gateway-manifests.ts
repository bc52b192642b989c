/**
 * One set of ingress routes written twice, as Istio (Gateway + VirtualServices)
 * and as the Gateway API (Gateway + HTTPRoutes, TLSRoutes, TCPRoute), for the
 * tests that hold both configurations to one contract, the lab and the bench.
 * Raw manifests, as a user writes them, plus the Services and EndpointSlices
 * the routes send to.
 *
 * The routes (every backend is a Service of one port 80, "main"):
 * - HTTP port, host shop.example.com: `/exact` exactly → exact; `/api/…` → api;
 *   `/items/<digits>` (regex) → items; header `x-canary: yes` → canary; anything
 *   else → web-v1 (90) and web-v2 (10). Host `*.wild.example.com` → wild;
 *   retry.example.com → flaky, retried twice on 503; slow.example.com → slow,
 *   with a 300 ms timeout; grpc.example.com → grpc (HTTP/2: appProtocol
 *   kubernetes.io/h2c); live.example.com → live (WebSocket).
 * - HTTPS port: secure.example.com, terminated with Secret secure-cert → secure.
 * - TLS port: SNI pass.example.com passed through → tls-pass; SNI
 *   term.example.com terminated with Secret term-cert → echo (TCP).
 * - TCP port → echo.
 * With `bad`: a route to a Service that does not exist (bad-svc.example.com), a
 * regex that does not compile (bad-regex.example.com), and an HTTPS host whose
 * Secret does not exist (missing.example.com).
 *
 * ```ts
 * const objects = [...ingressManifests("istio", { ports }), ...backendManifests(endpoints), ...certificateSecrets()];
 * ```
 */
import { selfSignedCertificate, tlsSecretManifest } from "./certificates.ts";

export type IngressStyle = "istio" | "gateway-api";

export interface IngressPorts {
  http: number;
  https: number;
  tls: number;
  tcp: number;
}

export interface IngressOptions {
  ports: IngressPorts;
  /** @default "shop" */
  namespace?: string;
  /** Which gateway nodes serve it (Istio: spec.selector; Gateway API: the node-selector annotation); none: every one. */
  nodeSelector?: Record<string, string>;
  /** Add the three bad routes. */
  bad?: boolean;
}

export const backendServices = ["web-v1", "web-v2", "exact", "api", "items", "canary", "wild", "flaky", "slow", "secure", "echo", "tls-pass", "grpc", "live"] as const;
export type BackendService = (typeof backendServices)[number];

const istioVersion = "networking.istio.io/v1beta1";
const gatewayVersion = "gateway.networking.k8s.io/v1";

export function ingressManifests(style: IngressStyle, options: IngressOptions): object[] {
  return style === "istio" ? istioManifests(options) : gatewayApiManifests(options);
}

function istioManifests(options: IngressOptions): object[] {
  const namespace = options.namespace ?? "shop";
  const { ports } = options;
  const to = (host: string, weight?: number) => ({ destination: { host, port: { number: 80 } }, ...(weight !== undefined ? { weight } : {}) });
  const virtualService = (name: string, spec: object) => ({ apiVersion: istioVersion, kind: "VirtualService", metadata: { name, namespace }, spec: { gateways: ["edge"], ...spec } });
  const httpHosts = ["shop.example.com", "*.wild.example.com", "retry.example.com", "slow.example.com", "grpc.example.com", "live.example.com", ...(options.bad ? ["bad-svc.example.com", "bad-regex.example.com"] : [])];
  const servers: object[] = [
    // Not "*": secure.example.com would then be served on the HTTP port too (the Gateway API's HTTP listener takes only the routes that name it).
    { port: { number: ports.http, name: "http", protocol: "HTTP" }, hosts: httpHosts },
    { port: { number: ports.https, name: "https", protocol: "HTTPS" }, hosts: ["secure.example.com"], tls: { mode: "SIMPLE", credentialName: "secure-cert" } },
    { port: { number: ports.tls, name: "tls-pass", protocol: "TLS" }, hosts: ["pass.example.com"], tls: { mode: "PASSTHROUGH" } },
    { port: { number: ports.tls, name: "tls-term", protocol: "TLS" }, hosts: ["term.example.com"], tls: { mode: "SIMPLE", credentialName: "term-cert" } },
    { port: { number: ports.tcp, name: "tcp", protocol: "TCP" }, hosts: ["*"] },
  ];
  if (options.bad) servers.push({ port: { number: ports.https, name: "https-missing", protocol: "HTTPS" }, hosts: ["missing.example.com"], tls: { mode: "SIMPLE", credentialName: "missing-cert" } });
  const objects: object[] = [
    { apiVersion: istioVersion, kind: "Gateway", metadata: { name: "edge", namespace }, spec: { selector: options.nodeSelector ?? {}, servers } },
    virtualService("shop", {
      hosts: ["shop.example.com"],
      // Istio takes the first rule that matches, in order.
      http: [
        { name: "exact", match: [{ uri: { exact: "/exact" } }], route: [to("exact")] },
        // The Gateway API's PathPrefix "/api/" is "/api" by segments: "/api" itself, or "/api/" and below.
        { name: "api", match: [{ uri: { exact: "/api" } }, { uri: { prefix: "/api/" } }], route: [to("api")] },
        { name: "items", match: [{ uri: { regex: "/items/[0-9]+" } }], route: [to("items")] },
        { name: "canary", match: [{ headers: { "x-canary": { exact: "yes" } } }], route: [to("canary")] },
        { name: "split", route: [to("web-v1", 90), to("web-v2", 10)] },
      ],
    }),
    virtualService("wild", { hosts: ["*.wild.example.com"], http: [{ route: [to("wild")] }] }),
    virtualService("retry", { hosts: ["retry.example.com"], http: [{ route: [to("flaky")], retries: { attempts: 2, retryOn: "503" } }] }),
    virtualService("slow", { hosts: ["slow.example.com"], http: [{ route: [to("slow")], timeout: "300ms" }] }),
    virtualService("grpc", { hosts: ["grpc.example.com"], http: [{ route: [to("grpc")] }] }),
    virtualService("live", { hosts: ["live.example.com"], http: [{ route: [to("live")] }] }),
    virtualService("secure", { hosts: ["secure.example.com"], http: [{ route: [to("secure")] }] }),
    virtualService("pass", { hosts: ["pass.example.com"], tls: [{ match: [{ sniHosts: ["pass.example.com"], port: ports.tls }], route: [to("tls-pass")] }] }),
    virtualService("term", { hosts: ["term.example.com"], tcp: [{ match: [{ port: ports.tls }], route: [to("echo")] }] }),
    virtualService("tcp", { hosts: ["*"], tcp: [{ match: [{ port: ports.tcp }], route: [to("echo")] }] }),
  ];
  if (options.bad) {
    objects.push(
      virtualService("bad-svc", { hosts: ["bad-svc.example.com"], http: [{ route: [to("nope")] }] }),
      virtualService("bad-regex", { hosts: ["bad-regex.example.com"], http: [{ match: [{ uri: { regex: "/items/(" } }], route: [to("items")] }] }),
      virtualService("missing", { hosts: ["missing.example.com"], http: [{ route: [to("secure")] }] }),
    );
  }
  return objects;
}

function gatewayApiManifests(options: IngressOptions): object[] {
  const namespace = options.namespace ?? "shop";
  const { ports } = options;
  const to = (name: string, weight?: number) => ({ name, port: 80, ...(weight !== undefined ? { weight } : {}) });
  const route = (kind: "HTTPRoute" | "TLSRoute" | "TCPRoute", name: string, section: string, spec: object) => ({
    apiVersion: kind === "HTTPRoute" ? gatewayVersion : "gateway.networking.k8s.io/v1alpha2",
    kind,
    metadata: { name, namespace },
    spec: { parentRefs: [{ name: "edge", sectionName: section }], ...spec },
  });
  const listeners: object[] = [
    { name: "http", port: ports.http, protocol: "HTTP" },
    { name: "https", port: ports.https, protocol: "HTTPS", hostname: "secure.example.com", tls: { mode: "Terminate", certificateRefs: [{ name: "secure-cert" }] } },
    { name: "tls-pass", port: ports.tls, protocol: "TLS", hostname: "pass.example.com", tls: { mode: "Passthrough" } },
    { name: "tls-term", port: ports.tls, protocol: "TLS", hostname: "term.example.com", tls: { mode: "Terminate", certificateRefs: [{ name: "term-cert" }] } },
    { name: "tcp", port: ports.tcp, protocol: "TCP" },
  ];
  if (options.bad) listeners.push({ name: "https-missing", port: ports.https, protocol: "HTTPS", hostname: "missing.example.com", tls: { certificateRefs: [{ name: "missing-cert" }] } });
  const selector = options.nodeSelector ? Object.entries(options.nodeSelector).map(([key, value]) => `${key}=${value}`).join(",") : undefined;
  const objects: object[] = [
    {
      apiVersion: gatewayVersion,
      kind: "Gateway",
      metadata: { name: "edge", namespace, ...(selector ? { annotations: { "gateway.leafmesh.io/node-selector": selector } } : {}) },
      spec: { gatewayClassName: "leafmesh", listeners },
    },
    route("HTTPRoute", "shop", "http", {
      hostnames: ["shop.example.com"],
      // The API orders by precedence (exact, regex, longest prefix, most headers), not by position.
      rules: [
        { matches: [{ path: { type: "PathPrefix", value: "/" } }], backendRefs: [to("web-v1", 90), to("web-v2", 10)] },
        { matches: [{ path: { type: "PathPrefix", value: "/" }, headers: [{ name: "x-canary", value: "yes" }] }], backendRefs: [to("canary")] },
        { matches: [{ path: { type: "RegularExpression", value: "/items/[0-9]+" } }], backendRefs: [to("items")] },
        { matches: [{ path: { type: "PathPrefix", value: "/api/" } }], backendRefs: [to("api")] },
        { matches: [{ path: { type: "Exact", value: "/exact" } }], backendRefs: [to("exact")] },
      ],
    }),
    route("HTTPRoute", "wild", "http", { hostnames: ["*.wild.example.com"], rules: [{ backendRefs: [to("wild")] }] }),
    route("HTTPRoute", "retry", "http", { hostnames: ["retry.example.com"], rules: [{ backendRefs: [to("flaky")], retry: { attempts: 2, codes: [503] } }] }),
    route("HTTPRoute", "slow", "http", { hostnames: ["slow.example.com"], rules: [{ backendRefs: [to("slow")], timeouts: { request: "300ms" } }] }),
    route("HTTPRoute", "grpc", "http", { hostnames: ["grpc.example.com"], rules: [{ backendRefs: [to("grpc")] }] }),
    route("HTTPRoute", "live", "http", { hostnames: ["live.example.com"], rules: [{ backendRefs: [to("live")] }] }),
    route("HTTPRoute", "secure", "https", { hostnames: ["secure.example.com"], rules: [{ backendRefs: [to("secure")] }] }),
    route("TLSRoute", "pass", "tls-pass", { hostnames: ["pass.example.com"], rules: [{ backendRefs: [to("tls-pass")] }] }),
    route("TLSRoute", "term", "tls-term", { hostnames: ["term.example.com"], rules: [{ backendRefs: [to("echo")] }] }),
    route("TCPRoute", "tcp", "tcp", { rules: [{ backendRefs: [to("echo")] }] }),
  ];
  if (options.bad) {
    objects.push(
      route("HTTPRoute", "bad-svc", "http", { hostnames: ["bad-svc.example.com"], rules: [{ backendRefs: [to("nope")] }] }),
      route("HTTPRoute", "bad-regex", "http", { hostnames: ["bad-regex.example.com"], rules: [{ matches: [{ path: { type: "RegularExpression", value: "/items/(" } }], backendRefs: [to("items")] }] }),
      route("HTTPRoute", "missing", "https-missing", { hostnames: ["missing.example.com"], rules: [{ backendRefs: [to("secure")] }] }),
    );
  }
  return objects;
}

/** The Secrets the routes terminate TLS with (self-signed, for their host names). */
export function certificateSecrets(namespace = "shop"): object[] {
  return [
    tlsSecretManifest({ name: "secure-cert", namespace }, selfSignedCertificate(["secure.example.com"])),
    tlsSecretManifest({ name: "term-cert", namespace }, selfSignedCertificate(["term.example.com"])),
  ];
}

export interface BackendEndpoint {
  ip: string;
  port: number;
  node?: string;
}

/** Each backend Service (port 80, "main", cluster IP from 198.19.77.0/24) and an EndpointSlice of its endpoints. */
export function backendManifests(endpoints: Partial<Record<BackendService, BackendEndpoint[]>>, namespace = "shop"): object[] {
  return backendServices.flatMap((name, index) => {
    const list = endpoints[name] ?? [];
    return [
      // grpc speaks HTTP/2 (h2c): its port says so, as a gRPC Service's does.
      { apiVersion: "v1", kind: "Service", metadata: { name, namespace }, spec: { clusterIP: `198.19.77.${index + 1}`, ports: [{ name: "main", port: 80, protocol: "TCP", ...(name === "grpc" ? { appProtocol: "kubernetes.io/h2c" } : {}) }] } },
      ...list.map((endpoint, slice) => ({
        apiVersion: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        metadata: { name: `${name}-${slice}`, namespace, labels: { "kubernetes.io/service-name": name } },
        addressType: "IPv4",
        endpoints: [{ addresses: [endpoint.ip], conditions: { ready: true }, ...(endpoint.node ? { nodeName: endpoint.node } : {}) }],
        ports: [{ name: "main", port: endpoint.port, protocol: "TCP" }],
      })),
    ];
  });
}
