/**
 * Raw Kubernetes objects (from manifest files or the API) → normalised catalog
 * objects, with every rule a user can break checked and reported by field path.
 * Pure: no I/O. The ingress kinds (Istio Gateway and VirtualService, the
 * Gateway API's Gateway and routes, TLS Secrets) are normalised in
 * normalize-istio.ts, normalize-gateway-api.ts and normalize-ingress.ts. Other
 * kinds are either known Kubernetes kinds leafmesh does not need (ignored, as
 * are Secrets of other types) or unknown (rejected, since a typo in `kind`
 * would otherwise drop a Service silently).
 *
 * ```ts
 * const result = normalizeObject(raw);
 * if (result.status === "ok") catalog.set(catalogKey(result.object), result.object);
 * else if (result.status === "invalid") report(result.problems); // [{ field: "spec.ports[0].port", message }]
 * ```
 */
import { isIP } from "node:net";
import * as z from "../../lib/schema/index.ts";
import type { CatalogObject, DestinationRule, EndpointSlice, Service } from "../../bus/catalog.ts";
import { normalizeGatewayApiGateway, normalizeHttpRoute, normalizeTcpRoute, normalizeTlsRoute } from "./normalize-gateway-api.ts";
import { mirrorEndpoints } from "./normalize-endpoints.ts";
import { normalizeTlsSecret } from "./normalize-ingress.ts";
import { normalizeIstioGateway, normalizeVirtualService } from "./normalize-istio.ts";
import { checkMetadata, dns1035Label, dns1123Label, dns1123Subdomain, ianaServiceName, labelMap, metadata, schemaProblems, type FieldProblem } from "./normalize-fields.ts";

export { fieldPath, type FieldProblem } from "./normalize-fields.ts";

export type NormalizeResult =
  | { status: "ok"; object: CatalogObject }
  | { status: "ignored"; kind: string }
  | { status: "invalid"; kind: string; name: string; problems: FieldProblem[] };

/** Kinds a manifest directory often holds next to Services; leafmesh has no use for them. */
const ignoredKinds = new Set([
  "Namespace", "Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "ConfigMap",
  "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
  "Ingress", "IngressClass", "NetworkPolicy", "PersistentVolume", "PersistentVolumeClaim", "StorageClass",
  "CustomResourceDefinition", "HorizontalPodAutoscaler", "PodDisruptionBudget", "LimitRange", "ResourceQuota",
  "ServiceEntry", "PeerAuthentication", "AuthorizationPolicy", "Sidecar", "EnvoyFilter", "WorkloadEntry", "Telemetry",
  // Gateway API kinds the leafmesh gateway does not serve (docs/gateway.md).
  "GatewayClass", "ReferenceGrant", "GRPCRoute", "UDPRoute", "BackendTLSPolicy",
]);

/** The ingress kinds (normalize-istio.ts, normalize-gateway-api.ts, normalize-ingress.ts), by kind and API group. */
function normalizeIngress(kind: string, raw: unknown, problems: FieldProblem[]): CatalogObject | undefined | "ignored" {
  const apiVersion = (raw as { apiVersion?: unknown }).apiVersion;
  const group = typeof apiVersion === "string" && apiVersion.includes("/") ? apiVersion.slice(0, apiVersion.indexOf("/")) : "";
  switch (kind) {
    case "Gateway":
      if (group === "networking.istio.io") return normalizeIstioGateway(raw, problems);
      if (group === "gateway.networking.k8s.io") return normalizeGatewayApiGateway(raw, problems);
      problems.push({ field: "apiVersion", message: `'${String(apiVersion)}' is neither Istio's (networking.istio.io/v1beta1) nor the Gateway API's (gateway.networking.k8s.io/v1) Gateway` });
      return undefined;
    case "VirtualService":
      return normalizeVirtualService(raw, problems);
    case "HTTPRoute":
      return normalizeHttpRoute(raw, problems);
    case "TCPRoute":
      return normalizeTcpRoute(raw, problems);
    case "TLSRoute":
      return normalizeTlsRoute(raw, problems);
    case "Secret": {
      const secret = normalizeTlsSecret(raw, problems);
      // Other Secret types: no use to leafmesh, and not to be held.
      return secret ?? (problems.length > 0 ? undefined : "ignored");
    }
  }
  return "ignored";
}

const ingressKinds = new Set(["Gateway", "VirtualService", "HTTPRoute", "TCPRoute", "TLSRoute", "Secret"]);

const portNumber = z.number({ error: "must be a number" }).int("must be an integer").min(1, "must be 1 to 65535").max(65535, "must be 1 to 65535");
const protocol = z.enum(["TCP", "UDP", "SCTP"], { error: "must be TCP, UDP or SCTP" });

const rawService = z.object({
  apiVersion: z.literal("v1", { error: "must be v1 for a Service" }),
  kind: z.literal("Service"),
  metadata,
  spec: z
    .object({
      type: z.enum(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"], { error: "must be ClusterIP, NodePort, LoadBalancer or ExternalName" }).optional(),
      clusterIP: z.string().optional(),
      clusterIPs: z.array(z.string()).optional(),
      ipFamilies: z.array(z.enum(["IPv4", "IPv6"])).optional(),
      externalName: z.string().optional(),
      selector: labelMap.nullable(),
      publishNotReadyAddresses: z.boolean().optional(),
      internalTrafficPolicy: z.enum(["Cluster", "Local"], { error: "must be Cluster or Local" }).optional(),
      sessionAffinity: z.enum(["None", "ClientIP"], { error: "must be None or ClientIP" }).optional(),
      sessionAffinityConfig: z
        .object({ clientIP: z.object({ timeoutSeconds: z.number().int().min(1, "must be 1 to 86400").max(86_400, "must be 1 to 86400").optional() }).optional() })
        .optional(),
      ports: z
        .array(
          z.object({
            name: z.string().optional(),
            protocol: protocol.optional(),
            port: portNumber,
            targetPort: z.union([portNumber, z.string()]).optional(),
            nodePort: portNumber.optional(),
            appProtocol: z.string().optional(),
          }),
        )
        .optional(),
    })
    .default({}),
});

const rawEndpointSlice = z.object({
  apiVersion: z.literal("discovery.k8s.io/v1", { error: "must be discovery.k8s.io/v1 for an EndpointSlice" }),
  kind: z.literal("EndpointSlice"),
  metadata,
  addressType: z.enum(["IPv4", "IPv6", "FQDN"], { error: "must be IPv4, IPv6 or FQDN" }),
  endpoints: z
    .array(
      z.object({
        addresses: z.array(z.string()).min(1, "needs at least one address"),
        conditions: z
          .object({ ready: z.boolean().nullable().optional(), serving: z.boolean().nullable().optional(), terminating: z.boolean().nullable().optional() })
          .optional(),
        hostname: z.string().optional(),
        nodeName: z.string().optional(),
        zone: z.string().optional(),
        targetRef: z.object({ kind: z.string(), namespace: z.string().optional(), name: z.string() }).partial().optional(),
      }),
    )
    .nullable()
    .optional(),
  ports: z
    .array(z.object({ name: z.string().nullable().optional(), protocol: protocol.nullable().optional(), port: portNumber.nullable().optional(), appProtocol: z.string().optional() }))
    .nullable()
    .optional(),
});

const rawDestinationRule = z.object({
  apiVersion: z.string().regex(/^networking\.istio\.io\/v1(alpha3|beta1)?$/, "must be networking.istio.io/v1, v1beta1 or v1alpha3"),
  kind: z.literal("DestinationRule"),
  metadata,
  spec: z.object({
    host: z.string().min(1, "is required"),
    trafficPolicy: z
      .object({
        loadBalancer: z
          .object({
            simple: z.enum(["ROUND_ROBIN", "LEAST_CONN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH", "UNSPECIFIED"]).optional(),
            consistentHash: z.object({ useSourceIp: z.boolean().optional(), httpHeaderName: z.string().optional() }).optional(),
          })
          .optional(),
      })
      .optional(),
  }),
});

function describeRaw(raw: unknown): { kind: string; name: string } {
  const object = (raw && typeof raw === "object" ? raw : {}) as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
  const kind = typeof object.kind === "string" ? object.kind : "";
  const name = typeof object.metadata?.name === "string" ? object.metadata.name : "";
  const namespace = typeof object.metadata?.namespace === "string" ? object.metadata.namespace : "default";
  return { kind, name: name ? `${namespace}/${name}` : "(unnamed)" };
}

export function normalizeObject(raw: unknown): NormalizeResult {
  const { kind, name } = describeRaw(raw);
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    return { status: "invalid", kind: "", name, problems: [{ field: "", message: "is not an object (expected a Kubernetes object with apiVersion, kind, metadata)" }] };
  }
  if (!kind) return { status: "invalid", kind, name, problems: [{ field: "kind", message: "is required" }] };
  if (ignoredKinds.has(kind)) return { status: "ignored", kind };
  const problems: FieldProblem[] = [];
  let object: CatalogObject | undefined;
  if (kind === "Service") {
    const parsed = rawService.safeParse(raw, { reportInput: true });
    if (!parsed.success) problems.push(...schemaProblems(parsed.error));
    else object = normalizeService(parsed.data, problems);
  } else if (kind === "Endpoints") {
    // Read as the EndpointSlice Kubernetes mirrors it into (normalize-endpoints.ts).
    const mirrored = mirrorEndpoints(raw);
    if (mirrored === "skipped") return { status: "ignored", kind };
    if ("problems" in mirrored) problems.push(...mirrored.problems);
    else {
      const parsed = rawEndpointSlice.safeParse(mirrored.slice, { reportInput: true });
      if (!parsed.success) problems.push(...schemaProblems(parsed.error));
      else object = normalizeEndpointSlice(parsed.data, problems);
    }
  } else if (kind === "EndpointSlice") {
    const parsed = rawEndpointSlice.safeParse(raw, { reportInput: true });
    if (!parsed.success) problems.push(...schemaProblems(parsed.error));
    else object = normalizeEndpointSlice(parsed.data, problems);
  } else if (kind === "DestinationRule") {
    const parsed = rawDestinationRule.safeParse(raw, { reportInput: true });
    if (!parsed.success) problems.push(...schemaProblems(parsed.error));
    else object = normalizeDestinationRule(parsed.data, problems);
  } else if (ingressKinds.has(kind)) {
    const result = normalizeIngress(kind, raw, problems);
    if (result === "ignored") return { status: "ignored", kind };
    object = result;
  } else {
    return {
      status: "invalid",
      kind,
      name,
      problems: [
        {
          field: "kind",
          message: `unknown kind '${kind}' (leafmesh reads Service, EndpointSlice, Endpoints (as mirrored into an EndpointSlice), DestinationRule, Istio Gateway and VirtualService, Gateway API Gateway, HTTPRoute, TCPRoute and TLSRoute, and TLS Secrets, and ignores common workload kinds)`,
        },
      ],
    };
  }
  if (problems.length > 0 || !object) return { status: "invalid", kind, name, problems };
  return { status: "ok", object };
}

/** Node's isIP takes "fe80::1%eth0"; Kubernetes does not, and an interface name means nothing on another node. */
function zoneMessage(address: string): string {
  return `'${address}' carries a zone ('%${address.split("%")[1]}'): an address of the cluster cannot name one node's interface (leave the zone out)`;
}

function familyOf(ip: string): "IPv4" | "IPv6" {
  return isIP(ip) === 6 ? "IPv6" : "IPv4";
}

function normalizeService(raw: z.infer<typeof rawService>, problems: FieldProblem[]): Service {
  const namespace = checkMetadata(raw.metadata, dns1035Label, "a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)", problems);
  const spec = raw.spec;
  const type = spec.type ?? "ClusterIP";
  const ports = (spec.ports ?? []).map((port, index) => {
    const name = port.name ?? "";
    if (name && !ianaServiceName.test(name)) problems.push({ field: `spec.ports[${index}].name`, message: `'${name}' is not a valid port name (IANA service name: lowercase letters, digits and '-', at most 15 characters)` });
    if (!name && (spec.ports?.length ?? 0) > 1) problems.push({ field: `spec.ports[${index}].name`, message: "is required when a Service has more than one port" });
    const targetPort = port.targetPort ?? port.port;
    if (typeof targetPort === "string" && !ianaServiceName.test(targetPort)) {
      problems.push({ field: `spec.ports[${index}].targetPort`, message: `'${targetPort}' is neither a port number nor a valid port name` });
    }
    return { name, protocol: port.protocol ?? "TCP", port: port.port, targetPort, nodePort: port.nodePort, appProtocol: port.appProtocol };
  });
  const seen = new Set<string>();
  ports.forEach((port, index) => {
    const identity = `${port.port}/${port.protocol}`;
    if (seen.has(identity)) problems.push({ field: `spec.ports[${index}]`, message: `duplicate port ${identity}` });
    seen.add(identity);
    if (port.name && ports.findIndex((other) => other.name === port.name) !== index) problems.push({ field: `spec.ports[${index}].name`, message: `duplicate port name '${port.name}'` });
  });

  const clusterIPs = spec.clusterIPs ?? (spec.clusterIP !== undefined ? [spec.clusterIP] : []);
  if (spec.clusterIP !== undefined && spec.clusterIPs !== undefined && spec.clusterIPs[0] !== spec.clusterIP) {
    problems.push({ field: "spec.clusterIPs[0]", message: `must equal spec.clusterIP ('${spec.clusterIP}')` });
  }
  const headless = clusterIPs[0] === "None";
  const addresses = headless ? [] : clusterIPs.filter((ip) => ip !== "");
  addresses.forEach((ip, index) => {
    const field = spec.clusterIPs ? `spec.clusterIPs[${index}]` : "spec.clusterIP";
    if (isIP(ip) === 0) problems.push({ field, message: `'${ip}' is not an IP address (use an IPv4 or IPv6 address, or "None" for a headless Service)` });
    else if (ip.includes("%")) problems.push({ field, message: zoneMessage(ip) });
  });
  if (addresses.length === 2 && familyOf(addresses[0]) === familyOf(addresses[1])) {
    problems.push({ field: "spec.clusterIPs[1]", message: "a dual-stack Service needs one IPv4 and one IPv6 address" });
  }
  if (addresses.length > 2) problems.push({ field: "spec.clusterIPs", message: "holds at most two addresses (one per IP family)" });

  let externalName: string | undefined;
  if (type === "ExternalName") {
    externalName = spec.externalName?.replace(/\.$/, "").toLowerCase();
    if (!externalName) problems.push({ field: "spec.externalName", message: "is required for type ExternalName" });
    else if (!dns1123Subdomain.test(externalName)) problems.push({ field: "spec.externalName", message: `'${spec.externalName}' is not a valid DNS name` });
  } else if (ports.length === 0 && !headless) {
    problems.push({ field: "spec.ports", message: `a ${type} Service needs at least one port` });
  }
  for (const [index, port] of ports.entries()) {
    if (port.nodePort !== undefined && type !== "NodePort" && type !== "LoadBalancer") {
      problems.push({ field: `spec.ports[${index}].nodePort`, message: `is only allowed for type NodePort or LoadBalancer, not ${type}` });
    }
  }

  return {
    kind: "Service",
    namespace,
    name: raw.metadata.name,
    type,
    headless,
    clusterIPs: type === "ExternalName" ? [] : addresses,
    ipFamilies: spec.ipFamilies ?? addresses.map(familyOf),
    externalName,
    ports: ports.map(({ nodePort, appProtocol, ...rest }) => ({
      ...rest,
      ...(nodePort !== undefined ? { nodePort } : {}),
      ...(appProtocol !== undefined ? { appProtocol } : {}),
    })),
    sessionAffinity: spec.sessionAffinity ?? "None",
    sessionAffinityTimeoutSeconds: spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10_800,
    publishNotReadyAddresses: spec.publishNotReadyAddresses ?? false,
    ...(spec.internalTrafficPolicy === "Local" ? { internalTrafficPolicy: "Local" as const } : {}),
    ...(spec.selector ? { selector: spec.selector } : {}),
    labels: raw.metadata.labels ?? {},
    annotations: raw.metadata.annotations ?? {},
  };
}

export const serviceNameLabel = "kubernetes.io/service-name";

function normalizeEndpointSlice(raw: z.infer<typeof rawEndpointSlice>, problems: FieldProblem[]): EndpointSlice {
  const namespace = checkMetadata(raw.metadata, dns1123Subdomain, "a DNS subdomain (lowercase letters, digits, '-' and '.')", problems);
  const labels = raw.metadata.labels ?? {};
  const serviceName = labels[serviceNameLabel] ?? "";
  if (!serviceName) problems.push({ field: `metadata.labels["${serviceNameLabel}"]`, message: "is required: it names the Service this slice belongs to" });
  const endpoints = (raw.endpoints ?? []).map((endpoint, index) => {
    endpoint.addresses.forEach((address, addressIndex) => {
      const field = `endpoints[${index}].addresses[${addressIndex}]`;
      if (raw.addressType === "FQDN") {
        if (!dns1123Subdomain.test(address)) problems.push({ field, message: `'${address}' is not a valid DNS name` });
      } else if (isIP(address) !== (raw.addressType === "IPv4" ? 4 : 6)) {
        problems.push({ field, message: `'${address}' is not an ${raw.addressType} address` });
      } else if (address.includes("%")) {
        problems.push({ field, message: zoneMessage(address) });
      }
    });
    if (endpoint.hostname !== undefined && !dns1123Label.test(endpoint.hostname)) {
      problems.push({ field: `endpoints[${index}].hostname`, message: `'${endpoint.hostname}' is not a valid DNS label` });
    }
    // discovery.k8s.io/v1: a nil ready means ready, a nil serving means the same as ready, nil terminating means false.
    const ready = endpoint.conditions?.ready ?? true;
    return {
      addresses: endpoint.addresses,
      conditions: { ready, serving: endpoint.conditions?.serving ?? ready, terminating: endpoint.conditions?.terminating ?? false },
      ...(endpoint.hostname !== undefined ? { hostname: endpoint.hostname } : {}),
      ...(endpoint.nodeName !== undefined ? { nodeName: endpoint.nodeName } : {}),
      ...(endpoint.zone !== undefined ? { zone: endpoint.zone } : {}),
      ...(endpoint.targetRef?.kind && endpoint.targetRef.name
        ? { targetRef: { kind: endpoint.targetRef.kind, name: endpoint.targetRef.name, ...(endpoint.targetRef.namespace ? { namespace: endpoint.targetRef.namespace } : {}) } }
        : {}),
    };
  });
  const ports = (raw.ports ?? []).map((port) => ({
    name: port.name ?? "",
    protocol: port.protocol ?? "TCP",
    ...(port.port != null ? { port: port.port } : {}),
    ...(port.appProtocol !== undefined ? { appProtocol: port.appProtocol } : {}),
  }));
  return {
    kind: "EndpointSlice",
    namespace,
    name: raw.metadata.name,
    serviceName,
    addressType: raw.addressType,
    endpoints,
    ports,
    labels,
    annotations: raw.metadata.annotations ?? {},
  };
}

function normalizeDestinationRule(raw: z.infer<typeof rawDestinationRule>, problems: FieldProblem[]): DestinationRule {
  const namespace = checkMetadata(raw.metadata, dns1123Subdomain, "a DNS subdomain (lowercase letters, digits, '-' and '.')", problems);
  const loadBalancer = raw.spec.trafficPolicy?.loadBalancer;
  return {
    kind: "DestinationRule",
    namespace,
    name: raw.metadata.name,
    host: raw.spec.host,
    ...(loadBalancer ? { loadBalancer } : {}),
    labels: raw.metadata.labels ?? {},
    annotations: raw.metadata.annotations ?? {},
  };
}

/** "spec.ports[0].port must be 1 to 65535": how a rejection words a problem, in both sources. */
export function problemMessage(problem: FieldProblem): string {
  return problem.field ? `${problem.field} ${problem.message}` : problem.message;
}

/** "Service shop/web" — how errors name an object. */
export function describeObject(kind: string, name: string): string {
  return `${kind || "object"} ${name}`;
}
