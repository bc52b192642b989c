/**
 * Where the two configurations differ, and only there: which Gateways are
 * this node's, what their listeners are, and which routes attach to which
 * listener with which host names. An Istio server and a Gateway API listener
 * both become a `ListenerSpec`; a VirtualService's http, tls and tcp routes and
 * an HTTPRoute, TLSRoute or TCPRoute all become `Attachment`s. compile.ts
 * validates and places them. Pure.
 *
 * ```ts
 * const { listeners, attachments, refused } = bindRoutes(catalog, node);
 * ```
 */
import { leafmeshGatewayClass, nodeSelectorAnnotation, type BackendRef, type GatewayApiGateway, type HttpRule, type IstioGateway } from "../../bus/catalog-gateway.ts";
import { catalogKey, type CatalogReader } from "../../bus/catalog.ts";
import { intersectHosts } from "./hosts.ts";
import { hostnameLabel, type GatewayNode, type Refusal, type RouteRef } from "./plan.ts";

/** How a listener treats what arrives: HTTP, raw TCP, TLS passed through, or TLS terminated then HTTP or TCP. */
export type ListenerMode = { front: "http" } | { front: "tcp" } | { front: "tls"; passthrough: true } | { front: "tls"; passthrough: false; inner: "http" | "tcp" };

export interface ListenerSpec {
  /** The Gateway that declares it. */
  gateway: RouteRef;
  /** "Gateway shop/edge listener https" or "Gateway shop/edge (Istio) server 2": for refusals. */
  name: string;
  /** Gateway API: the listener's name (sectionName); Istio: the server's port name. */
  section: string;
  port: number;
  mode: ListenerMode;
  /** Host (or SNI) patterns it serves; "*" for any. */
  hosts: string[];
  /** Istio: the namespace each host may be bound from ("*": any). */
  hostScopes?: Map<string, string>;
  /** Gateway API: "Same" (the Gateway's namespace only) or "All". */
  allowedNamespaces?: "Same" | "All";
  /** Terminated TLS: the Secret holding its certificate. */
  secret?: { namespace: string; name: string };
  httpsRedirect: boolean;
}

export type AttachmentBody = { kind: "http"; rules: HttpRule[] } | { kind: "l4"; backends: BackendRef[] };

export interface Attachment {
  route: RouteRef;
  listener: ListenerSpec;
  /** Host (HTTP) or server (TLS) names it serves there; empty for TCP. */
  hosts: string[];
  body: AttachmentBody;
}

export interface Bound {
  listeners: ListenerSpec[];
  attachments: Attachment[];
  refused: Refusal[];
  gateways: string[];
}

function selects(selector: Record<string, string>, node: GatewayNode): boolean {
  const labels: Record<string, string> = { ...node.labels, [hostnameLabel]: node.name };
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}

/** `key=value,…` of the annotation; a malformed one (normalisation refuses it) selects nothing. */
function annotationSelector(annotations: Record<string, string>): Record<string, string> | undefined {
  const text = annotations[nodeSelectorAnnotation];
  if (text === undefined) return {};
  const selector: Record<string, string> = {};
  for (const part of text.split(",").map((entry) => entry.trim()).filter(Boolean)) {
    const equals = part.indexOf("=");
    if (equals <= 0) return undefined;
    selector[part.slice(0, equals)] = part.slice(equals + 1);
  }
  return selector;
}

function istioListeners(gateway: IstioGateway): ListenerSpec[] {
  const ref = { key: catalogKey(gateway), name: `Gateway ${gateway.namespace}/${gateway.name} (Istio)` };
  return gateway.servers.map((server, index) => {
    const scopes = new Map<string, string>();
    for (const host of server.hosts) scopes.set(host.host, scopes.has(host.host) && scopes.get(host.host) !== host.namespace ? "*" : host.namespace);
    let mode: ListenerMode;
    if (server.protocol === "TCP") mode = { front: "tcp" };
    else if (server.protocol === "HTTPS" || server.protocol === "TLS") {
      mode = server.tls?.mode === "SIMPLE" ? { front: "tls", passthrough: false, inner: server.protocol === "HTTPS" ? "http" : "tcp" } : { front: "tls", passthrough: true };
    } else mode = { front: "http" };
    return {
      gateway: ref,
      name: `${ref.name} server ${index}${server.portName ? ` (${server.portName})` : ""}`,
      section: server.portName,
      port: server.port,
      mode,
      hosts: [...scopes.keys()],
      hostScopes: scopes,
      ...(mode.front === "tls" && !mode.passthrough && server.tls?.credentialName ? { secret: { namespace: gateway.namespace, name: server.tls.credentialName } } : {}),
      httpsRedirect: server.tls?.httpsRedirect ?? false,
    };
  });
}

function gatewayApiListeners(gateway: GatewayApiGateway): ListenerSpec[] {
  const ref = { key: catalogKey(gateway), name: `Gateway ${gateway.namespace}/${gateway.name}` };
  return gateway.listeners.map((listener) => {
    let mode: ListenerMode;
    if (listener.protocol === "TCP") mode = { front: "tcp" };
    else if (listener.protocol === "HTTP") mode = { front: "http" };
    else if (listener.tls?.mode === "Passthrough") mode = { front: "tls", passthrough: true };
    else mode = { front: "tls", passthrough: false, inner: listener.protocol === "HTTPS" ? "http" : "tcp" };
    const certificate = listener.tls?.certificateRefs[0];
    return {
      gateway: ref,
      name: `${ref.name} listener ${listener.name}`,
      section: listener.name,
      port: listener.port,
      mode,
      hosts: listener.hostname ? [listener.hostname] : ["*"],
      allowedNamespaces: listener.allowedNamespaces,
      ...(mode.front === "tls" && !mode.passthrough && certificate ? { secret: certificate } : {}),
      httpsRedirect: false,
    };
  });
}

/** Which listeners take a route body of this kind: HTTP rules, TLS routes (by server name), TCP routes. */
function takes(mode: ListenerMode, body: "http" | "tls" | "tcp"): boolean {
  if (body === "http") return mode.front === "http" || (mode.front === "tls" && !mode.passthrough && mode.inner === "http");
  if (body === "tls") return mode.front === "tls" && (mode.passthrough || mode.inner === "tcp");
  return mode.front === "tcp" || (mode.front === "tls" && !mode.passthrough && mode.inner === "tcp");
}

/** The rules of an HTTP route that apply on a port: matches bound to another port (Istio's match.port) dropped. */
function rulesForPort(rules: HttpRule[], port: number): HttpRule[] {
  return rules.flatMap((rule) => {
    if (rule.matches.length === 0) return [rule];
    const matches = rule.matches.filter((match) => match.port === undefined || match.port === port);
    return matches.length > 0 ? [{ ...rule, matches }] : [];
  });
}

export function bindRoutes(catalog: CatalogReader, node: GatewayNode): Bound {
  const listeners: ListenerSpec[] = [];
  const attachments: Attachment[] = [];
  const refused: Refusal[] = [];
  const gateways: string[] = [];
  const istio = new Map<string, ListenerSpec[]>();
  for (const gateway of catalog.ofKind("IstioGateway")) {
    if (!selects(gateway.selector, node)) continue;
    const specs = istioListeners(gateway);
    istio.set(`${gateway.namespace}/${gateway.name}`, specs);
    listeners.push(...specs);
    gateways.push(specs[0]?.gateway.name ?? `Gateway ${gateway.namespace}/${gateway.name} (Istio)`);
  }
  const api = new Map<string, ListenerSpec[]>();
  for (const gateway of catalog.ofKind("Gateway")) {
    const selector = annotationSelector(gateway.annotations);
    if (gateway.gatewayClassName !== leafmeshGatewayClass || !selector || !selects(selector, node)) continue;
    const specs = gatewayApiListeners(gateway);
    api.set(`${gateway.namespace}/${gateway.name}`, specs);
    listeners.push(...specs);
    gateways.push(`Gateway ${gateway.namespace}/${gateway.name}`);
  }

  for (const service of catalog.ofKind("VirtualService")) {
    const route = { key: catalogKey(service), name: `VirtualService ${service.namespace}/${service.name}` };
    for (const gatewayName of service.gateways) {
      for (const listener of istio.get(gatewayName) ?? []) {
        // A server host bound to a namespace takes VirtualServices of that namespace only.
        const allowed = listener.hosts.filter((host) => {
          const scope = listener.hostScopes?.get(host) ?? "*";
          return scope === "*" || scope === service.namespace;
        });
        const hosts = intersectHosts(allowed, service.hosts);
        if (hosts.length === 0) continue;
        if (takes(listener.mode, "http") && service.http.length > 0) {
          const rules = rulesForPort(service.http, listener.port);
          if (rules.length > 0) attachments.push({ route, listener, hosts, body: { kind: "http", rules } });
        }
        if (listener.mode.front === "tls" && listener.mode.passthrough) {
          for (const tls of service.tls) {
            const matches = tls.matches.filter((match) => match.port === undefined || match.port === listener.port);
            const sni = intersectHosts(hosts, matches.flatMap((match) => match.sniHosts));
            if (matches.length > 0 && sni.length > 0) attachments.push({ route, listener, hosts: sni, body: { kind: "l4", backends: tls.backends } });
          }
        }
        if (takes(listener.mode, "tcp")) {
          for (const tcp of service.tcp) {
            if (tcp.matches.length > 0 && !tcp.matches.some((match) => match.port === undefined || match.port === listener.port)) continue;
            attachments.push({ route, listener, hosts: listener.mode.front === "tcp" ? [] : hosts, body: { kind: "l4", backends: tcp.backends } });
          }
        }
      }
    }
  }

  const gatewayApiRoutes = [
    ...catalog.ofKind("HTTPRoute").map((route) => ({ route, body: "http" as const })),
    ...catalog.ofKind("TLSRoute").map((route) => ({ route, body: "tls" as const })),
    ...catalog.ofKind("TCPRoute").map((route) => ({ route, body: "tcp" as const })),
  ];
  for (const { route, body } of gatewayApiRoutes) {
    const ref = { key: catalogKey(route), name: `${route.kind} ${route.namespace}/${route.name}` };
    const hostnames = route.kind === "TCPRoute" ? [] : route.hostnames;
    for (const parent of route.parentRefs) {
      const specs = api.get(`${parent.namespace}/${parent.name}`);
      if (!specs) continue; // another node's Gateway, or another controller's
      const named = specs.filter((listener) => (parent.sectionName === undefined || listener.section === parent.sectionName) && (parent.port === undefined || listener.port === parent.port));
      if (named.length === 0) {
        refused.push({ object: ref.name, key: ref.key, reason: "no listener", error: `Gateway ${parent.namespace}/${parent.name} has no listener${parent.sectionName ? ` named ${parent.sectionName}` : ""}${parent.port ? ` on port ${parent.port}` : ""}` });
        continue;
      }
      for (const listener of named) {
        if (!takes(listener.mode, body)) {
          if (parent.sectionName !== undefined) refused.push({ object: ref.name, key: ref.key, reason: "no listener", error: `${listener.name} takes no ${route.kind}s` });
          continue;
        }
        if (listener.allowedNamespaces === "Same" && route.namespace !== parent.namespace) {
          refused.push({ object: ref.name, key: ref.key, reason: "not allowed", error: `${listener.name} takes routes of namespace ${parent.namespace} only (allowedRoutes)` });
          continue;
        }
        const hosts = listener.mode.front === "tcp" ? [] : intersectHosts(listener.hosts.filter((host) => host !== "*"), hostnames);
        if (listener.mode.front !== "tcp" && hosts.length === 0) continue;
        const attachmentBody: AttachmentBody = route.kind === "HTTPRoute" ? { kind: "http", rules: route.rules } : { kind: "l4", backends: route.rules.flatMap((rule) => rule.backends) };
        attachments.push({ route: ref, listener, hosts, body: attachmentBody });
      }
    }
  }
  return { listeners, attachments, refused, gateways };
}
