/**
 * Istio's ingress configuration (networking.istio.io v1beta1, also v1 and
 * v1alpha3) → catalog objects: a `Gateway` (servers: port, protocol, hosts,
 * TLS) becomes an `IstioGateway`, a `VirtualService` (http, tls and tcp routes
 * bound to gateways) a `VirtualService`. A field the leafmesh gateway cannot
 * honour (a rewrite, a fault, a mirror, a subset, mutual TLS) is refused with
 * its path rather than ignored: a route that silently behaves otherwise than
 * written is worse than one refused. Pure.
 *
 * ```ts
 * const problems: FieldProblem[] = [];
 * const object = normalizeVirtualService(raw, problems); // problems: [{ field: "spec.http[0].rewrite", message }]
 * ```
 */
import * as z from "../../lib/schema/index.ts";
import { istioProtocols, istioTlsModes, type BackendRef, type HttpMatch, type HttpRule, type IstioGateway, type VirtualService } from "../../bus/catalog-gateway.ts";
import { checkMetadata, dns1123Label, dns1123Subdomain, metadata, schemaProblems, type FieldProblem } from "./normalize-fields.ts";
import { checkHostname, durationField, unsupported } from "./normalize-ingress.ts";

const portNumber = z.number({ error: "must be a number" }).int("must be an integer").min(1, "must be 1 to 65535").max(65535, "must be 1 to 65535");
const apiVersion = z.string().regex(/^networking\.istio\.io\/v1(alpha3|beta1)?$/, "must be networking.istio.io/v1, v1beta1 or v1alpha3");
const anything = z.unknown().optional();
const stringMatch = z.object({ exact: z.string().optional(), prefix: z.string().optional(), regex: z.string().optional() });
const rawDestination = z.object({
  destination: z.object({ host: z.string().min(1, "is required"), subset: z.string().optional(), port: z.object({ number: portNumber }).optional() }),
  weight: z.number().int().min(0, "must be 0 or more").optional(),
  headers: anything,
});

const rawGateway = z.object({
  apiVersion,
  kind: z.literal("Gateway"),
  metadata,
  spec: z.object({
    selector: z.record(z.string(), z.string()).nullable().optional(),
    servers: z
      .array(
        z.object({
          port: z.object({ number: portNumber, name: z.string().optional(), protocol: z.string().min(1, "is required"), targetPort: anything }),
          hosts: z.array(z.string()).min(1, "needs at least one host"),
          tls: z
            .object({ mode: z.string().optional(), credentialName: z.string().optional(), httpsRedirect: z.boolean().optional(), serverCertificate: anything, privateKey: anything, caCertificates: anything })
            .optional(),
          bind: anything,
          defaultEndpoint: anything,
          name: z.string().optional(),
        }),
      )
      .min(1, "needs at least one server"),
  }),
});

const rawHttpMatch = z.object({
  uri: stringMatch.optional(),
  headers: z.record(z.string(), stringMatch).optional(),
  method: stringMatch.optional(),
  port: portNumber.optional(),
  authority: anything,
  scheme: anything,
  queryParams: anything,
  withoutHeaders: anything,
  sourceLabels: anything,
  sourceNamespace: anything,
  gateways: anything,
  ignoreUriCase: z.boolean().optional(),
  name: z.string().optional(),
});
/** Keys of an HTTP route the gateway refuses, and why. */
const unsupportedHttp: Record<string, string> = {
  redirect: "redirects",
  delegate: "delegation",
  rewrite: "rewrites",
  directResponse: "direct responses",
  fault: "fault injection",
  mirror: "mirroring",
  mirrors: "mirroring",
  mirrorPercentage: "mirroring",
  corsPolicy: "CORS policies",
  headers: "header manipulation",
};
const rawHttpRoute = z.object({
  name: z.string().optional(),
  match: z.array(rawHttpMatch).optional(),
  route: z.array(rawDestination).optional(),
  timeout: z.string().optional(),
  retries: z.object({ attempts: z.number().int().min(0, "must be 0 or more").max(10, "must be at most 10"), perTryTimeout: z.string().optional(), retryOn: z.string().optional(), retryRemoteLocalities: anything }).optional(),
  ...Object.fromEntries(Object.keys(unsupportedHttp).map((key) => [key, anything])),
});
const l4Unsupported = { destinationSubnets: anything, sourceLabels: anything, gateways: anything, sourceNamespace: anything };
const rawVirtualService = z.object({
  apiVersion,
  kind: z.literal("VirtualService"),
  metadata,
  spec: z.object({
    hosts: z.array(z.string()).min(1, "needs at least one host").optional(),
    gateways: z.array(z.string()).optional(),
    http: z.array(rawHttpRoute).optional(),
    tls: z.array(z.object({ match: z.array(z.object({ sniHosts: z.array(z.string()).min(1, "needs at least one SNI host"), port: portNumber.optional(), ...l4Unsupported })).min(1, "needs at least one match"), route: z.array(rawDestination).optional() })).optional(),
    tcp: z.array(z.object({ match: z.array(z.object({ port: portNumber.optional(), ...l4Unsupported })).optional(), route: z.array(rawDestination).optional() })).optional(),
    exportTo: anything,
  }),
});

const retryConditions = new Set(["5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream", "retriable-status-codes", "unavailable", "cancelled", "deadline-exceeded", "internal", "resource-exhausted"]);
/** What Istio retries when `retries` names attempts but no `retryOn`. */
const defaultRetryOn = ["connect-failure", "refused-stream", "503"];

export function normalizeIstioGateway(raw: unknown, problems: FieldProblem[]): IstioGateway | undefined {
  const parsed = rawGateway.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    problems.push(...schemaProblems(parsed.error));
    return undefined;
  }
  const gateway = parsed.data;
  const namespace = checkMetadata(gateway.metadata, dns1123Subdomain, "a DNS subdomain (lowercase letters, digits, '-' and '.')", problems);
  const fronts = new Map<number, { front: string; index: number }>();
  const servers = gateway.spec.servers.map((server, index) => {
    const field = `spec.servers[${index}]`;
    const protocol = server.port.protocol.toUpperCase();
    if (!(istioProtocols as readonly string[]).includes(protocol)) {
      problems.push({ field: `${field}.port.protocol`, message: `'${server.port.protocol}' is not supported by the leafmesh gateway (use ${istioProtocols.join(", ")})` });
    }
    if (server.bind !== undefined) unsupported(`${field}.bind`, "it listens on the node's external addresses (--gateway)", problems);
    if (server.defaultEndpoint !== undefined) unsupported(`${field}.defaultEndpoint`, "sidecar ingress", problems);
    const hosts = server.hosts.map((text, hostIndex) => {
      const slash = text.indexOf("/");
      const scope = slash >= 0 ? text.slice(0, slash) : "*";
      const host = checkHostname(slash >= 0 ? text.slice(slash + 1) : text, `${field}.hosts[${hostIndex}]`, problems, { wildcard: true });
      if (scope !== "*" && scope !== "." && !dns1123Label.test(scope)) problems.push({ field: `${field}.hosts[${hostIndex}]`, message: `'${scope}' is not a namespace ('.', '*' or a namespace name before the '/')` });
      return { namespace: scope === "." ? namespace : scope, host };
    });
    let tls: IstioGateway["servers"][number]["tls"];
    const terminates = protocol === "HTTPS" || protocol === "TLS";
    if (server.tls) {
      // ServerTLSSettings.mode's zero value is PASSTHROUGH.
      const mode = (server.tls.mode ?? "PASSTHROUGH").toUpperCase();
      if (!(istioTlsModes as readonly string[]).includes(mode)) problems.push({ field: `${field}.tls.mode`, message: `'${server.tls.mode}' is not a TLS mode (${istioTlsModes.join(", ")})` });
      else if (mode !== "PASSTHROUGH" && mode !== "SIMPLE" && terminates) unsupported(`${field}.tls.mode`, `${mode}: the gateway terminates TLS (SIMPLE) or passes it through (PASSTHROUGH); client certificates are not checked`, problems);
      if (server.tls.serverCertificate !== undefined || server.tls.privateKey !== undefined || server.tls.caCertificates !== undefined) {
        unsupported(`${field}.tls.serverCertificate`, "certificates come from a kubernetes.io/tls Secret named by credentialName", problems);
      }
      if (terminates && mode === "SIMPLE" && !server.tls.credentialName) problems.push({ field: `${field}.tls.credentialName`, message: "is required with mode SIMPLE: the name of a kubernetes.io/tls Secret in the Gateway's namespace" });
      if (!terminates && server.tls.mode !== undefined) problems.push({ field: `${field}.tls.mode`, message: `applies to HTTPS and TLS servers, not ${protocol}` });
      tls = { mode: mode as (typeof istioTlsModes)[number], ...(server.tls.credentialName ? { credentialName: server.tls.credentialName } : {}), httpsRedirect: server.tls.httpsRedirect ?? false };
    } else if (terminates) {
      problems.push({ field: `${field}.tls`, message: `is required for ${protocol}: mode PASSTHROUGH, or SIMPLE with a credentialName` });
    }
    const front = protocol === "TCP" ? "TCP" : terminates ? "TLS" : "HTTP";
    const earlier = fronts.get(server.port.number);
    if (earlier && earlier.front !== front) problems.push({ field: `${field}.port.number`, message: `port ${server.port.number} is a ${earlier.front} port already (spec.servers[${earlier.index}])` });
    else fronts.set(server.port.number, { front, index });
    return { port: server.port.number, portName: server.port.name ?? "", protocol: protocol as IstioGateway["servers"][number]["protocol"], hosts, ...(tls ? { tls } : {}) };
  });
  return {
    kind: "IstioGateway",
    namespace,
    name: gateway.metadata.name,
    selector: gateway.spec.selector ?? {},
    servers,
    labels: gateway.metadata.labels ?? {},
    annotations: gateway.metadata.annotations ?? {},
  };
}

/**
 * An Istio destination host as a Service: `web` in the VirtualService's namespace, `web.shop`, or
 * `web.shop.svc.cluster.local` (any cluster domain). Hosts outside the cluster are not leafmesh's to route to.
 */
function serviceOfHost(host: string, namespace: string, field: string, problems: FieldProblem[]): { namespace: string; service: string } {
  const labels = host.toLowerCase().replace(/\.$/, "").split(".");
  const valid = labels.every((label) => dns1123Label.test(label));
  if (!valid || (labels.length > 2 && labels[2] !== "svc")) {
    problems.push({ field, message: `'${host}' is not a Service of the cluster (write name, name.namespace or name.namespace.svc.<cluster domain>)` });
  }
  return labels.length === 1 ? { namespace, service: labels[0] } : { namespace: labels[1], service: labels[0] };
}

function backendsOf(route: z.infer<typeof rawDestination>[] | undefined, namespace: string, field: string, problems: FieldProblem[]): BackendRef[] {
  const destinations = route ?? [];
  const backends = destinations.map((entry, index) => {
    const where = `${field}[${index}].destination`;
    if (entry.destination.subset !== undefined) unsupported(`${where}.subset`, "subsets: route to a Service of its own instead", problems);
    if (entry.headers !== undefined) unsupported(`${field}[${index}].headers`, "header manipulation", problems);
    // One destination takes all the traffic whatever its weight says; with several, a missing weight is 0.
    const weight = destinations.length === 1 ? 100 : (entry.weight ?? 0);
    return { ...serviceOfHost(entry.destination.host, namespace, `${where}.host`, problems), ...(entry.destination.port ? { port: entry.destination.port.number } : {}), weight };
  });
  if (backends.length > 1 && backends.every((backend) => backend.weight === 0)) problems.push({ field, message: "the weights add up to 0: no destination would receive traffic" });
  return backends;
}

function matchOf(text: z.infer<typeof stringMatch>, field: string, problems: FieldProblem[]): { type: "Exact" | "Prefix" | "RegularExpression"; value: string } {
  const given = (["exact", "prefix", "regex"] as const).filter((key) => text[key] !== undefined);
  if (given.length !== 1) problems.push({ field, message: "needs exactly one of exact, prefix or regex" });
  const key = given[0] ?? "exact";
  return { type: key === "exact" ? "Exact" : key === "prefix" ? "Prefix" : "RegularExpression", value: text[key] ?? "" };
}

function httpRuleOf(route: z.infer<typeof rawHttpRoute>, namespace: string, field: string, problems: FieldProblem[]): HttpRule {
  for (const [key, what] of Object.entries(unsupportedHttp)) if ((route as Record<string, unknown>)[key] !== undefined) unsupported(`${field}.${key}`, what, problems);
  const matches = (route.match ?? []).map((match, index): HttpMatch => {
    const where = `${field}.match[${index}]`;
    for (const key of ["authority", "scheme", "queryParams", "withoutHeaders", "sourceLabels", "sourceNamespace", "gateways"] as const) {
      if (match[key] !== undefined) unsupported(`${where}.${key}`, key === "authority" ? "match on hosts with the VirtualService's hosts" : `matching on ${key}`, problems);
    }
    if (match.ignoreUriCase) unsupported(`${where}.ignoreUriCase`, "case-insensitive paths", problems);
    let path: HttpMatch["path"];
    if (match.uri) {
      const uri = matchOf(match.uri, `${where}.uri`, problems);
      // Istio's prefix is a plain string prefix ("/api" matches "/apis"), unlike the Gateway API's PathPrefix.
      path = { type: uri.type, value: uri.value };
    }
    const headers = Object.entries(match.headers ?? {}).map(([name, value]) => ({ name: name.toLowerCase(), ...matchOf(value, `${where}.headers.${name}`, problems) }));
    let method: string | undefined;
    if (match.method) {
      const matched = matchOf(match.method, `${where}.method`, problems);
      if (matched.type !== "Exact") unsupported(`${where}.method`, "methods match exactly", problems);
      method = matched.value.toUpperCase();
    }
    return { ...(path ? { path } : {}), headers, ...(method ? { method } : {}), ...(match.port ? { port: match.port } : {}) };
  });
  const timeoutMs = durationField(route.timeout, `${field}.timeout`, problems);
  let retry: HttpRule["retry"];
  if (route.retries) {
    const on = route.retries.retryOn ? route.retries.retryOn.split(",").map((entry) => entry.trim()).filter(Boolean) : defaultRetryOn;
    for (const condition of on) if (!retryConditions.has(condition) && !/^[1-5]\d\d$/.test(condition)) problems.push({ field: `${field}.retries.retryOn`, message: `'${condition}' is not a retry condition (${[...retryConditions].join(", ")}, or a status code)` });
    const perTryTimeoutMs = durationField(route.retries.perTryTimeout, `${field}.retries.perTryTimeout`, problems);
    retry = { attempts: route.retries.attempts, ...(perTryTimeoutMs ? { perTryTimeoutMs } : {}), on };
  }
  return { name: route.name ?? "", matches, backends: backendsOf(route.route, namespace, `${field}.route`, problems), ...(timeoutMs ? { timeoutMs } : {}), ...(retry ? { retry } : {}) };
}

export function normalizeVirtualService(raw: unknown, problems: FieldProblem[]): VirtualService | undefined {
  const parsed = rawVirtualService.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    problems.push(...schemaProblems(parsed.error));
    return undefined;
  }
  const service = parsed.data;
  const namespace = checkMetadata(service.metadata, dns1123Subdomain, "a DNS subdomain (lowercase letters, digits, '-' and '.')", problems);
  const spec = service.spec;
  if (!spec.hosts) problems.push({ field: "spec.hosts", message: "is required" });
  const hosts = (spec.hosts ?? []).map((host, index) => checkHostname(host, `spec.hosts[${index}]`, problems, { wildcard: true }));
  const gateways = (spec.gateways ?? []).flatMap((reference, index) => {
    if (reference === "mesh") return [];
    const parts = reference.split("/");
    const [gatewayNamespace, name] = parts.length === 1 ? [namespace, parts[0]] : [parts[0], parts[1]];
    if (parts.length > 2 || !dns1123Label.test(gatewayNamespace) || !dns1123Subdomain.test(name)) {
      problems.push({ field: `spec.gateways[${index}]`, message: `'${reference}' is not a gateway (name, namespace/name or mesh)` });
      return [];
    }
    return [`${gatewayNamespace}/${name}`];
  });
  const l4Checks = (match: Record<string, unknown>, where: string) => {
    for (const key of ["destinationSubnets", "sourceLabels", "gateways", "sourceNamespace"]) if (match[key] !== undefined) unsupported(`${where}.${key}`, `matching on ${key}`, problems);
  };
  const tls = (spec.tls ?? []).map((route, index) => {
    const field = `spec.tls[${index}]`;
    const matches = route.match.map((match, matchIndex) => {
      l4Checks(match, `${field}.match[${matchIndex}]`);
      const sniHosts = match.sniHosts.map((host, hostIndex) => checkHostname(host, `${field}.match[${matchIndex}].sniHosts[${hostIndex}]`, problems, { wildcard: true }));
      return { sniHosts, ...(match.port ? { port: match.port } : {}) };
    });
    return { matches, backends: backendsOf(route.route, namespace, `${field}.route`, problems) };
  });
  const tcp = (spec.tcp ?? []).map((route, index) => {
    const field = `spec.tcp[${index}]`;
    const matches = (route.match ?? []).map((match, matchIndex) => {
      l4Checks(match, `${field}.match[${matchIndex}]`);
      return match.port ? { port: match.port } : {};
    });
    return { matches, backends: backendsOf(route.route, namespace, `${field}.route`, problems) };
  });
  return {
    kind: "VirtualService",
    namespace,
    name: service.metadata.name,
    hosts,
    gateways,
    http: (spec.http ?? []).map((route, index) => httpRuleOf(route, namespace, `spec.http[${index}]`, problems)),
    tls,
    tcp,
    labels: service.metadata.labels ?? {},
    annotations: service.metadata.annotations ?? {},
  };
}
