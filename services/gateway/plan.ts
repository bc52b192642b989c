/**
 * What the gateway serves, as data: per port, how connections are told apart
 * (nothing for TCP, the server name for TLS, host then path and headers for
 * HTTP) and which backends each route sends to. `compileGateway` (compile.ts)
 * makes it from the catalog; the router (router.ts) answers from it; the
 * sockets (listeners.ts) only follow it. Both configurations, Istio's and the
 * Gateway API's, end up here in one shape.
 *
 * ```ts
 * const plan = compileGateway(catalog, { name: "edge-a", labels: { site: "shop-7" } });
 * plan.ports.get(443);   // { kind: "tls", sni: HostTable<SniEntry> }
 * plan.refused;          // [{ object: "HTTPRoute shop/bad", reason: "unknown service", error: "…" }]
 * ```
 */
import type { BackendRef, pathMatchTypes, RetryPolicy } from "../../bus/catalog-gateway.ts";
import type { HostTable } from "./hosts.ts";

/** A route object (or a Gateway's listener) as operators name it, and where it lives in the catalog. */
export interface RouteRef {
  /** The catalog key: "httproute.shop.web", "vs.shop.web". */
  key: string;
  /** "HTTPRoute shop/web", "VirtualService shop/web": in logs, metrics, events and status. */
  name: string;
}

/** One backend of a rule: a Service port, and its share. */
export interface PlannedBackend extends BackendRef {
  /** "shop/web:80": the Service port, as the backend pools know it. */
  key: string;
  /** The Service port's number (resolved when the route left it out). */
  port: number;
}

/** A request match with its regular expressions compiled (whole-string matches, as Envoy's RE2 ones are). */
export interface CompiledMatch {
  path?: { type: (typeof pathMatchTypes)[number]; value: string; regex?: RegExp };
  headers: { name: string; type: "Exact" | "Prefix" | "RegularExpression"; value: string; regex?: RegExp }[];
  method?: string;
}

export interface PlannedHttpRule {
  route: RouteRef;
  /** Index of the rule in its route, for "HTTPRoute shop/web rule 2". */
  ruleIndex: number;
  backends: PlannedBackend[];
  timeoutMs?: number;
  retry?: RetryPolicy;
}

/** One match of one rule, in the order a host's entries are tried (the first that matches wins). */
export interface HttpEntry {
  match: CompiledMatch;
  rule: PlannedHttpRule;
}

/** What one host of an HTTP port answers. */
export interface HttpHost {
  entries: HttpEntry[];
  /** Istio's `httpsRedirect`: every request of this host is sent to https with a 301. */
  httpsRedirect: boolean;
}

export interface PlannedL4Route {
  route: RouteRef;
  backends: PlannedBackend[];
}

/** What one TLS server name of a TLS port does: pass the bytes through, or terminate with a certificate and go on. */
export type SniEntry =
  | { mode: "passthrough"; route: PlannedL4Route }
  | { mode: "terminate"; certificate: { key: string; cert: string; secret: string }; inner: { kind: "http"; hosts: HostTable<HttpHost> } | { kind: "tcp"; route: PlannedL4Route } };

export type PortPlan =
  | { kind: "tcp"; port: number; route: PlannedL4Route }
  | { kind: "http"; port: number; hosts: HostTable<HttpHost> }
  | { kind: "tls"; port: number; sni: HostTable<SniEntry> };

/** Why a route (or a listener) is not served. */
export const refusalReasons = ["unknown service", "unknown port", "bad regex", "missing secret", "port conflict", "host conflict", "no listener", "not allowed", "invalid lb-policy annotation"] as const;
export type RefusalReason = (typeof refusalReasons)[number];

export interface Refusal {
  /** "HTTPRoute shop/bad", or "Gateway shop/edge listener https". */
  object: string;
  key: string;
  reason: RefusalReason;
  error: string;
}

/** A served route as status and events show it. */
export interface RouteSummary {
  route: string;
  port: number;
  kind: "http" | "tls-passthrough" | "tls-terminate" | "tcp";
  hosts: string[];
}

export interface GatewayPlan {
  ports: Map<number, PortPlan>;
  routes: RouteSummary[];
  refused: Refusal[];
  /** Gateways selected for this node, by name. */
  gateways: string[];
}

/** The node a plan is made for: the Gateways whose selector its labels match are its. */
export interface GatewayNode {
  name: string;
  labels: Record<string, string>;
}

/** The label that holds the node's name, as Kubernetes nodes have it: a selector can name one node. */
export const hostnameLabel = "kubernetes.io/hostname";
