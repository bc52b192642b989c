/**
 * The Kubernetes Gateway API (gateway.networking.k8s.io: Gateway and HTTPRoute
 * v1 and v1beta1, TCPRoute and TLSRoute v1alpha2, TLSRoute also v1alpha3) →
 * catalog objects, with the API's defaults filled in (a match without a path is
 * PathPrefix "/", a backend's weight is 1, a TLS listener terminates). What the
 * leafmesh gateway cannot honour is refused with its path: filters, query
 * parameter matches, session persistence, UDP, and references across
 * namespaces (they need a ReferenceGrant, which leafmesh does not read). Pure.
 *
 * ```ts
 * const problems: FieldProblem[] = [];
 * const route = normalizeHttpRoute(raw, problems); // problems: [{ field: "spec.rules[0].filters", message }]
 * ```
 */
import * as z from "../../lib/schema/index.ts";
import { gatewayProtocols, type BackendRef, type GatewayApiGateway, type HttpMatch, type HttpRoute, type HttpRule, type ParentRef, type TcpRoute, type TlsRoute } from "../../bus/catalog-gateway.ts";
import { checkMetadata, dns1123Label, dns1123Subdomain, metadata, schemaProblems, type FieldProblem } from "./normalize-fields.ts";
import { checkHostname, durationField, nodeSelectorAnnotation, parseNodeSelector, unsupported } from "./normalize-ingress.ts";

const portNumber = z.number({ error: "must be a number" }).int("must be an integer").min(1, "must be 1 to 65535").max(65535, "must be 1 to 65535");
const anything = z.unknown().optional();
const group = "gateway.networking.k8s.io";
const apiVersionFor = (versions: string[]) =>
  z.string().refine((text) => versions.some((version) => text === `${group}/${version}`), { message: `must be ${versions.map((version) => `${group}/${version}`).join(" or ")}` });

const rawGateway = z.object({
  apiVersion: apiVersionFor(["v1", "v1beta1"]),
  kind: z.literal("Gateway"),
  metadata,
  spec: z.object({
    gatewayClassName: z.string().min(1, "is required"),
    listeners: z
      .array(
        z.object({
          name: z.string().min(1, "is required"),
          hostname: z.string().optional(),
          port: portNumber,
          protocol: z.string().min(1, "is required"),
          tls: z
            .object({
              mode: z.enum(["Terminate", "Passthrough"], { error: "must be Terminate or Passthrough" }).optional(),
              certificateRefs: z.array(z.object({ group: z.string().optional(), kind: z.string().optional(), name: z.string().min(1, "is required"), namespace: z.string().optional() })).optional(),
              options: anything,
              frontendValidation: anything,
            })
            .optional(),
          allowedRoutes: z.object({ namespaces: z.object({ from: z.enum(["Same", "All", "Selector"], { error: "must be Same, All or Selector" }).optional(), selector: anything }).optional(), kinds: anything }).optional(),
        }),
      )
      .min(1, "needs at least one listener"),
    addresses: anything,
    infrastructure: anything,
  }),
});

const rawParentRef = z.object({ group: z.string().optional(), kind: z.string().optional(), namespace: z.string().optional(), name: z.string().min(1, "is required"), sectionName: z.string().optional(), port: portNumber.optional() });
const rawBackendRef = z.object({
  group: z.string().optional(),
  kind: z.string().optional(),
  name: z.string().min(1, "is required"),
  namespace: z.string().optional(),
  port: portNumber.optional(),
  weight: z.number().int().min(0, "must be 0 or more").max(1_000_000, "must be at most 1000000").optional(),
  filters: anything,
});
const methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] as const;
const rawHttpRoute = z.object({
  apiVersion: apiVersionFor(["v1", "v1beta1"]),
  kind: z.literal("HTTPRoute"),
  metadata,
  spec: z.object({
    parentRefs: z.array(rawParentRef).optional(),
    hostnames: z.array(z.string()).optional(),
    rules: z
      .array(
        z.object({
          name: z.string().optional(),
          matches: z
            .array(
              z.object({
                path: z.object({ type: z.enum(["Exact", "PathPrefix", "RegularExpression"], { error: "must be Exact, PathPrefix or RegularExpression" }).optional(), value: z.string().optional() }).optional(),
                headers: z.array(z.object({ type: z.enum(["Exact", "RegularExpression"], { error: "must be Exact or RegularExpression" }).optional(), name: z.string().min(1, "is required"), value: z.string() })).optional(),
                method: z.enum(methods, { error: `must be one of ${methods.join(", ")}` }).optional(),
                queryParams: anything,
              }),
            )
            .optional(),
          backendRefs: z.array(rawBackendRef).optional(),
          timeouts: z.object({ request: z.string().optional(), backendRequest: z.string().optional() }).optional(),
          retry: z.object({ codes: z.array(z.number().int().min(400, "must be 400 to 599").max(599, "must be 400 to 599")).optional(), attempts: z.number().int().min(0).max(10, "must be at most 10").optional(), backoff: z.string().optional() }).optional(),
          filters: anything,
          sessionPersistence: anything,
        }),
      )
      .optional(),
  }),
});
const l4Route = (kind: "TCPRoute" | "TLSRoute", versions: string[]) =>
  z.object({
    apiVersion: apiVersionFor(versions),
    kind: z.literal(kind),
    metadata,
    spec: z.object({
      parentRefs: z.array(rawParentRef).optional(),
      hostnames: z.array(z.string()).optional(),
      rules: z.array(z.object({ name: z.string().optional(), backendRefs: z.array(rawBackendRef).min(1, "needs at least one backend") })).min(1, "needs at least one rule"),
    }),
  });
const rawTcpRoute = l4Route("TCPRoute", ["v1alpha2"]);
const rawTlsRoute = l4Route("TLSRoute", ["v1alpha2", "v1alpha3"]);

function namespaceOf(meta: z.infer<typeof metadata>, problems: FieldProblem[]): string {
  return checkMetadata(meta, dns1123Subdomain, "a DNS subdomain (lowercase letters, digits, '-' and '.')", problems);
}

/** Parent references to Gateways (a reference to anything else, a mesh Service for one, is not the gateway's). */
function parentRefsOf(refs: z.infer<typeof rawParentRef>[] | undefined, namespace: string, problems: FieldProblem[]): ParentRef[] {
  return (refs ?? []).flatMap((ref, index) => {
    if ((ref.group ?? group) !== group || (ref.kind ?? "Gateway") !== "Gateway") return [];
    const refNamespace = ref.namespace ?? namespace;
    if (!dns1123Label.test(refNamespace)) problems.push({ field: `spec.parentRefs[${index}].namespace`, message: `'${refNamespace}' is not a namespace` });
    return [{ namespace: refNamespace, name: ref.name, ...(ref.sectionName ? { sectionName: ref.sectionName } : {}), ...(ref.port ? { port: ref.port } : {}) }];
  });
}

function backendRefsOf(refs: z.infer<typeof rawBackendRef>[] | undefined, namespace: string, field: string, problems: FieldProblem[]): BackendRef[] {
  return (refs ?? []).map((ref, index) => {
    const where = `${field}[${index}]`;
    if ((ref.group ?? "") !== "" || (ref.kind ?? "Service") !== "Service") unsupported(`${where}.kind`, "backends are Services", problems);
    if (ref.filters !== undefined) unsupported(`${where}.filters`, "filters", problems);
    if (ref.port === undefined) problems.push({ field: `${where}.port`, message: "is required for a Service" });
    const refNamespace = ref.namespace ?? namespace;
    if (refNamespace !== namespace) unsupported(`${where}.namespace`, "a backend in another namespace needs a ReferenceGrant, which leafmesh does not read: keep the route in the Service's namespace", problems);
    if (!dns1123Label.test(ref.name)) problems.push({ field: `${where}.name`, message: `'${ref.name}' is not a Service name` });
    return { namespace: refNamespace, service: ref.name, ...(ref.port ? { port: ref.port } : {}), weight: ref.weight ?? 1 };
  });
}

function hostnamesOf(hostnames: string[] | undefined, problems: FieldProblem[]): string[] {
  return (hostnames ?? []).map((host, index) => checkHostname(host, `spec.hostnames[${index}]`, problems, { wildcard: true }));
}

export function normalizeGatewayApiGateway(raw: unknown, problems: FieldProblem[]): GatewayApiGateway | undefined {
  const parsed = rawGateway.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    problems.push(...schemaProblems(parsed.error));
    return undefined;
  }
  const gateway = parsed.data;
  const namespace = namespaceOf(gateway.metadata, problems);
  if (gateway.spec.addresses !== undefined) unsupported("spec.addresses", "it listens on the node's external addresses (--gateway)", problems);
  const selector = gateway.metadata.annotations?.[nodeSelectorAnnotation];
  if (selector !== undefined) parseNodeSelector(selector, `metadata.annotations["${nodeSelectorAnnotation}"]`, problems);
  const names = new Set<string>();
  const fronts = new Map<number, { front: string; index: number }>();
  const listeners = gateway.spec.listeners.map((listener, index) => {
    const field = `spec.listeners[${index}]`;
    if (!dns1123Subdomain.test(listener.name)) problems.push({ field: `${field}.name`, message: `'${listener.name}' is not a valid listener name` });
    if (names.has(listener.name)) problems.push({ field: `${field}.name`, message: `'${listener.name}' names two listeners` });
    names.add(listener.name);
    const protocol = listener.protocol.toUpperCase();
    if (!(gatewayProtocols as readonly string[]).includes(protocol) || protocol === "UDP") {
      problems.push({ field: `${field}.protocol`, message: `'${listener.protocol}' is not supported by the leafmesh gateway (use HTTP, HTTPS, TLS or TCP)` });
    }
    let tls: GatewayApiGateway["listeners"][number]["tls"];
    if (protocol === "HTTPS" || protocol === "TLS") {
      const mode = listener.tls?.mode ?? "Terminate";
      if (!listener.tls) problems.push({ field: `${field}.tls`, message: `is required for ${protocol}` });
      if (protocol === "HTTPS" && mode !== "Terminate") problems.push({ field: `${field}.tls.mode`, message: "must be Terminate for HTTPS (use a TLS listener to pass TLS through)" });
      const certificateRefs = (listener.tls?.certificateRefs ?? []).map((ref, refIndex) => {
        const where = `${field}.tls.certificateRefs[${refIndex}]`;
        if ((ref.group ?? "") !== "" || (ref.kind ?? "Secret") !== "Secret") unsupported(`${where}.kind`, "certificates come from kubernetes.io/tls Secrets", problems);
        const refNamespace = ref.namespace ?? namespace;
        if (refNamespace !== namespace) unsupported(`${where}.namespace`, "a Secret in another namespace needs a ReferenceGrant, which leafmesh does not read: keep the Secret in the Gateway's namespace", problems);
        return { namespace: refNamespace, name: ref.name };
      });
      if (mode === "Terminate" && certificateRefs.length === 0) problems.push({ field: `${field}.tls.certificateRefs`, message: "needs at least one Secret to terminate TLS with" });
      if (listener.tls?.frontendValidation !== undefined) unsupported(`${field}.tls.frontendValidation`, "client certificates are not checked", problems);
      tls = { mode, certificateRefs };
    } else if (listener.tls) {
      problems.push({ field: `${field}.tls`, message: `applies to HTTPS and TLS listeners, not ${protocol}` });
    }
    const from = listener.allowedRoutes?.namespaces?.from ?? "Same";
    if (from === "Selector") unsupported(`${field}.allowedRoutes.namespaces.from`, "Selector: leafmesh does not read Namespaces; use Same or All", problems);
    // A hostname means nothing on a TCP listener (the API says to ignore it there).
    const hostname = listener.hostname !== undefined && protocol !== "TCP" ? checkHostname(listener.hostname, `${field}.hostname`, problems, { wildcard: true }) : undefined;
    const front = protocol === "TCP" ? "TCP" : protocol === "HTTP" ? "HTTP" : "TLS";
    const earlier = fronts.get(listener.port);
    if (earlier && (earlier.front !== front || front === "TCP")) problems.push({ field: `${field}.port`, message: `port ${listener.port} is taken by spec.listeners[${earlier.index}] (${earlier.front})` });
    else fronts.set(listener.port, { front, index });
    return {
      name: listener.name,
      ...(hostname ? { hostname } : {}),
      port: listener.port,
      protocol: protocol as GatewayApiGateway["listeners"][number]["protocol"],
      ...(tls ? { tls } : {}),
      allowedNamespaces: from === "All" ? ("All" as const) : ("Same" as const),
    };
  });
  return {
    kind: "Gateway",
    namespace,
    name: gateway.metadata.name,
    gatewayClassName: gateway.spec.gatewayClassName,
    listeners,
    labels: gateway.metadata.labels ?? {},
    annotations: gateway.metadata.annotations ?? {},
  };
}

export function normalizeHttpRoute(raw: unknown, problems: FieldProblem[]): HttpRoute | undefined {
  const parsed = rawHttpRoute.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    problems.push(...schemaProblems(parsed.error));
    return undefined;
  }
  const route = parsed.data;
  const namespace = namespaceOf(route.metadata, problems);
  // The API's default: one rule that matches every path.
  const rawRules = route.spec.rules ?? [{}];
  const rules = rawRules.map((rule, index): HttpRule => {
    const field = `spec.rules[${index}]`;
    if (rule.filters !== undefined) unsupported(`${field}.filters`, "filters", problems);
    if (rule.sessionPersistence !== undefined) unsupported(`${field}.sessionPersistence`, "session persistence: use a DestinationRule's consistent hash", problems);
    const matches = (rule.matches ?? [{}]).map((match, matchIndex): HttpMatch => {
      const where = `${field}.matches[${matchIndex}]`;
      if (match.queryParams !== undefined) unsupported(`${where}.queryParams`, "matching on query parameters", problems);
      const type = match.path?.type ?? "PathPrefix";
      const value = match.path?.value ?? "/";
      if (type !== "RegularExpression" && !value.startsWith("/")) problems.push({ field: `${where}.path.value`, message: `'${value}' must start with '/'` });
      const headers = (match.headers ?? []).map((header) => ({ name: header.name.toLowerCase(), type: header.type ?? ("Exact" as const), value: header.value }));
      return { path: { type, value }, headers, ...(match.method ? { method: match.method } : {}) };
    });
    const timeoutMs = durationField(rule.timeouts?.request, `${field}.timeouts.request`, problems);
    const perTryTimeoutMs = durationField(rule.timeouts?.backendRequest, `${field}.timeouts.backendRequest`, problems);
    let retry: HttpRule["retry"];
    if (rule.retry || perTryTimeoutMs) {
      const backoffMs = durationField(rule.retry?.backoff, `${field}.retry.backoff`, problems);
      retry = {
        // Left to implementations by the API; two, as Istio's default.
        attempts: rule.retry ? (rule.retry.attempts ?? 2) : 0,
        ...(perTryTimeoutMs ? { perTryTimeoutMs } : {}),
        ...(backoffMs ? { backoffMs } : {}),
        on: (rule.retry?.codes ?? []).map(String),
      };
    }
    return {
      name: rule.name ?? "",
      matches,
      backends: backendRefsOf(rule.backendRefs, namespace, `${field}.backendRefs`, problems),
      ...(timeoutMs ? { timeoutMs } : {}),
      ...(retry ? { retry } : {}),
    };
  });
  return {
    kind: "HTTPRoute",
    namespace,
    name: route.metadata.name,
    parentRefs: parentRefsOf(route.spec.parentRefs, namespace, problems),
    hostnames: hostnamesOf(route.spec.hostnames, problems),
    rules,
    labels: route.metadata.labels ?? {},
    annotations: route.metadata.annotations ?? {},
  };
}

function normalizeL4Route(schema: typeof rawTcpRoute | typeof rawTlsRoute, raw: unknown, problems: FieldProblem[]) {
  const parsed = schema.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    problems.push(...schemaProblems(parsed.error));
    return undefined;
  }
  const route = parsed.data;
  const namespace = namespaceOf(route.metadata, problems);
  return {
    namespace,
    name: route.metadata.name,
    parentRefs: parentRefsOf(route.spec.parentRefs, namespace, problems),
    hostnames: route.spec.hostnames,
    rules: route.spec.rules.map((rule, index) => ({ backends: backendRefsOf(rule.backendRefs, namespace, `spec.rules[${index}].backendRefs`, problems) })),
    labels: route.metadata.labels ?? {},
    annotations: route.metadata.annotations ?? {},
  };
}

export function normalizeTcpRoute(raw: unknown, problems: FieldProblem[]): TcpRoute | undefined {
  const route = normalizeL4Route(rawTcpRoute, raw, problems);
  if (!route) return undefined;
  const { hostnames: _hostnames, ...rest } = route;
  return { kind: "TCPRoute", ...rest };
}

export function normalizeTlsRoute(raw: unknown, problems: FieldProblem[]): TlsRoute | undefined {
  const route = normalizeL4Route(rawTlsRoute, raw, problems);
  if (!route) return undefined;
  return { kind: "TLSRoute", ...route, hostnames: hostnamesOf(route.hostnames, problems) };
}
