/**
 * The ingress part of the catalog's vocabulary: Istio `Gateway` and
 * `VirtualService` (networking.istio.io), Gateway API `Gateway`, `HTTPRoute`,
 * `TCPRoute` and `TLSRoute` (gateway.networking.k8s.io), and the TLS Secrets
 * their listeners name, normalised by `services/controller` (which validates
 * them) and read by the gateway actor (`services/gateway`), which compiles them
 * into one route table. Each kind stays close to what it was written as, so a
 * refusal can name the object the user wrote; the two configurations meet in
 * the gateway's compiler, not here.
 *
 * What is settled here: names are resolved (an Istio destination `web` in
 * namespace `shop` is Service shop/web; a `parentRef` without a namespace is the
 * route's own), durations are milliseconds, header names are lower case, and
 * every default the APIs define is filled in. What is left to the gateway: what
 * depends on other objects or on the engine that runs it (a backend Service that
 * exists, a Secret that exists and holds a matching key, a regular expression
 * that compiles), as Gateway API implementations report them on a route's
 * status rather than the API server refusing them.
 *
 * ```ts
 * import { gatewayKindPrefixes, type HttpRoute } from "./catalog-gateway.ts";
 * route.rules[0].matches[0].path; // { type: "PathPrefix", value: "/api" }
 * ```
 */
import * as z from "../lib/schema/index.ts";

const stringMap = z.record(z.string(), z.string());
const portNumber = z.number().int().min(1).max(65535);

/** A Service port a route sends to, with its share of the rule's traffic. */
export const backendRefSchema = z.object({
  namespace: z.string(),
  service: z.string(),
  /** The Service's port (its `port`, not the target port); absent: the Service's only port. */
  port: portNumber.optional(),
  /** Relative share; 0 receives nothing. */
  weight: z.number().int().min(0).max(1_000_000),
});
export type BackendRef = z.infer<typeof backendRefSchema>;

export const stringMatchTypes = ["Exact", "Prefix", "RegularExpression"] as const;
/** "Prefix" is Istio's plain string prefix ("/api" matches "/apis"); "PathPrefix" the Gateway API's, by path segments. */
export const pathMatchTypes = ["Exact", "PathPrefix", "Prefix", "RegularExpression"] as const;

export const httpMatchSchema = z.object({
  path: z.object({ type: z.enum(pathMatchTypes), value: z.string() }).optional(),
  /** Names in lower case; every one must match. */
  headers: z.array(z.object({ name: z.string(), type: z.enum(stringMatchTypes), value: z.string() })),
  /** Upper case, e.g. "GET". */
  method: z.string().optional(),
  /** Istio: this match only applies on this gateway port. */
  port: portNumber.optional(),
});
export type HttpMatch = z.infer<typeof httpMatchSchema>;

/**
 * When a request is sent again to another endpoint. `on` holds Envoy's retry conditions as Istio writes them
 * (`5xx`, `gateway-error`, `connect-failure`, `reset`, `retriable-4xx`) and status codes as text ("503").
 */
export const retrySchema = z.object({
  attempts: z.number().int().min(0).max(10),
  perTryTimeoutMs: z.number().int().positive().optional(),
  backoffMs: z.number().int().min(0).optional(),
  on: z.array(z.string()),
});
export type RetryPolicy = z.infer<typeof retrySchema>;

export const httpRuleSchema = z.object({
  /** Istio's route name, or "" (Gateway API rules have an optional name too). */
  name: z.string(),
  /** Any one matching selects the rule; none: every request. */
  matches: z.array(httpMatchSchema),
  backends: z.array(backendRefSchema),
  /** The whole request, retries included; absent: no limit but the gateway's own. */
  timeoutMs: z.number().int().positive().optional(),
  retry: retrySchema.optional(),
});
export type HttpRule = z.infer<typeof httpRuleSchema>;

/** Route kinds a Gateway API listener takes, by its protocol. */
export const gatewayProtocols = ["HTTP", "HTTPS", "TLS", "TCP", "UDP"] as const;
export const istioProtocols = ["HTTP", "HTTPS", "HTTP2", "GRPC", "TCP", "TLS"] as const;
export const istioTlsModes = ["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"] as const;

export const istioGatewaySchema = z.object({
  kind: z.literal("IstioGateway"),
  namespace: z.string(),
  name: z.string(),
  /** Matched against the labels of gateway nodes (with `kubernetes.io/hostname` = node name); empty: every gateway node. */
  selector: stringMap,
  servers: z.array(
    z.object({
      port: portNumber,
      portName: z.string(),
      protocol: z.enum(istioProtocols),
      /** `namespace` "*": a VirtualService of any namespace may bind the host; else only one of that namespace. Lower case. */
      hosts: z.array(z.object({ namespace: z.string(), host: z.string() })).min(1),
      tls: z.object({ mode: z.enum(istioTlsModes), credentialName: z.string().optional(), httpsRedirect: z.boolean() }).optional(),
    }),
  ),
  labels: stringMap,
  annotations: stringMap,
});
export type IstioGateway = z.infer<typeof istioGatewaySchema>;

export const virtualServiceSchema = z.object({
  kind: z.literal("VirtualService"),
  namespace: z.string(),
  name: z.string(),
  /** Lower case; "*" and "*.example.com" allowed. */
  hosts: z.array(z.string()),
  /** "namespace/name" of Istio Gateways; "mesh" (sidecars) is dropped: leafmesh routes in the mesh at L4. */
  gateways: z.array(z.string()),
  http: z.array(httpRuleSchema),
  tls: z.array(z.object({ matches: z.array(z.object({ sniHosts: z.array(z.string()), port: portNumber.optional() })), backends: z.array(backendRefSchema) })),
  tcp: z.array(z.object({ matches: z.array(z.object({ port: portNumber.optional() })), backends: z.array(backendRefSchema) })),
  labels: stringMap,
  annotations: stringMap,
});
export type VirtualService = z.infer<typeof virtualServiceSchema>;

/**
 * Which gateway nodes a Gateway API Gateway is for: `key=value` pairs (comma-separated) that must all match the
 * node's labels (`kubernetes.io/hostname` is the node's name); none: every gateway node. Istio Gateways say the same
 * with `spec.selector`.
 */
export const nodeSelectorAnnotation = "gateway.leafmesh.io/node-selector";

/** The Gateway API class the leafmesh gateway serves; Gateways of other classes belong to other controllers. */
export const leafmeshGatewayClass = "leafmesh";

export const gatewayApiGatewaySchema = z.object({
  kind: z.literal("Gateway"),
  namespace: z.string(),
  name: z.string(),
  gatewayClassName: z.string(),
  listeners: z.array(
    z.object({
      name: z.string(),
      /** Lower case; absent: any host. */
      hostname: z.string().optional(),
      port: portNumber,
      protocol: z.enum(gatewayProtocols),
      tls: z.object({ mode: z.enum(["Terminate", "Passthrough"]), certificateRefs: z.array(z.object({ namespace: z.string(), name: z.string() })) }).optional(),
      /** Which namespaces' routes may attach: the Gateway's own ("Same") or any ("All"). */
      allowedNamespaces: z.enum(["Same", "All"]),
    }),
  ),
  labels: stringMap,
  annotations: stringMap,
});
export type GatewayApiGateway = z.infer<typeof gatewayApiGatewaySchema>;

export const parentRefSchema = z.object({
  namespace: z.string(),
  name: z.string(),
  /** A listener's name. */
  sectionName: z.string().optional(),
  port: portNumber.optional(),
});
export type ParentRef = z.infer<typeof parentRefSchema>;

export const httpRouteSchema = z.object({
  kind: z.literal("HTTPRoute"),
  namespace: z.string(),
  name: z.string(),
  parentRefs: z.array(parentRefSchema),
  /** Lower case; empty: the listener's. */
  hostnames: z.array(z.string()),
  rules: z.array(httpRuleSchema),
  labels: stringMap,
  annotations: stringMap,
});
export type HttpRoute = z.infer<typeof httpRouteSchema>;

export const tcpRouteSchema = z.object({
  kind: z.literal("TCPRoute"),
  namespace: z.string(),
  name: z.string(),
  parentRefs: z.array(parentRefSchema),
  rules: z.array(z.object({ backends: z.array(backendRefSchema) })),
  labels: stringMap,
  annotations: stringMap,
});
export type TcpRoute = z.infer<typeof tcpRouteSchema>;

export const tlsRouteSchema = z.object({
  kind: z.literal("TLSRoute"),
  namespace: z.string(),
  name: z.string(),
  parentRefs: z.array(parentRefSchema),
  /** SNI names, lower case; empty: the listener's. */
  hostnames: z.array(z.string()),
  rules: z.array(z.object({ backends: z.array(backendRefSchema) })),
  labels: stringMap,
  annotations: stringMap,
});
export type TlsRoute = z.infer<typeof tlsRouteSchema>;

/**
 * A Secret of type kubernetes.io/tls that a gateway listener names (Istio `credentialName`, Gateway API
 * `certificateRefs`): PEM certificate chain and private key. Only Secrets a Gateway of their own namespace names are
 * published (services/controller/gateway-secrets.ts), and catalog events never carry the key (`redactForEvent`).
 */
export const tlsSecretSchema = z.object({
  kind: z.literal("TLSSecret"),
  namespace: z.string(),
  name: z.string(),
  certificate: z.string(),
  privateKey: z.string(),
  labels: stringMap,
  annotations: stringMap,
});
export type TlsSecret = z.infer<typeof tlsSecretSchema>;

export const gatewayCatalogSchemas = [istioGatewaySchema, virtualServiceSchema, gatewayApiGatewaySchema, httpRouteSchema, tcpRouteSchema, tlsRouteSchema, tlsSecretSchema] as const;

export type GatewayCatalogObject = IstioGateway | VirtualService | GatewayApiGateway | HttpRoute | TcpRoute | TlsRoute | TlsSecret;
export type GatewayCatalogKind = GatewayCatalogObject["kind"];

/** KV key prefixes of the ingress kinds (`catalogKey`). */
export const gatewayKindPrefixes: Record<GatewayCatalogKind, string> = {
  IstioGateway: "igw",
  VirtualService: "vs",
  Gateway: "gw",
  HTTPRoute: "httproute",
  TCPRoute: "tcproute",
  TLSRoute: "tlsroute",
  TLSSecret: "tls",
};

export const gatewayCatalogKinds = Object.keys(gatewayKindPrefixes) as GatewayCatalogKind[];

export function isGatewayKind(kind: string): kind is GatewayCatalogKind {
  return Object.hasOwn(gatewayKindPrefixes, kind);
}
