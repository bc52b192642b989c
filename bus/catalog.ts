/**
 * The service catalog's vocabulary: normalised Services, EndpointSlices and Istio
 * DestinationRules, and the ingress kinds of `catalog-gateway.ts` (Gateways,
 * routes, TLS Secrets), as the hub's publisher writes them into KV `mesh-catalog` and
 * as every actor receives them in catalog events. Raw Kubernetes objects are
 * turned into these by `services/controller` (which validates them); everything
 * downstream (DNS, proxier, traffic) reads only these types.
 *
 * ```ts
 * const key = catalogKey(service);            // "svc.shop.web"
 * const object = decodeCatalogObject(bytes);  // throws on a malformed value
 * if (isReadyEndpoint(endpoint)) ...
 * ```
 */
import * as z from "../lib/schema/index.ts";
import { gatewayCatalogSchemas, gatewayKindPrefixes, type GatewayCatalogKind, type GatewayCatalogObject } from "./catalog-gateway.ts";

export const protocols = ["TCP", "UDP", "SCTP"] as const;
export type Protocol = (typeof protocols)[number];

export const serviceTypes = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] as const;
export type ServiceType = (typeof serviceTypes)[number];

export const servicePortSchema = z.object({
  /** "" when the Service has a single unnamed port. */
  name: z.string(),
  protocol: z.enum(protocols),
  port: z.number().int().min(1).max(65535),
  /** A number, or the name of a container port. */
  targetPort: z.union([z.number().int().min(1).max(65535), z.string().min(1)]),
  nodePort: z.number().int().min(1).max(65535).optional(),
  appProtocol: z.string().optional(),
});
export type ServicePort = z.infer<typeof servicePortSchema>;

const stringMap = z.record(z.string(), z.string());

export const serviceSchema = z.object({
  kind: z.literal("Service"),
  namespace: z.string(),
  name: z.string(),
  type: z.enum(serviceTypes),
  /** clusterIP "None": DNS answers with the ready endpoints' addresses. */
  headless: z.boolean(),
  /** Empty for headless and ExternalName services. */
  clusterIPs: z.array(z.string()),
  ipFamilies: z.array(z.enum(["IPv4", "IPv6"])),
  externalName: z.string().optional(),
  ports: z.array(servicePortSchema),
  sessionAffinity: z.enum(["None", "ClientIP"]),
  /** Seconds; only meaningful with sessionAffinity ClientIP. */
  sessionAffinityTimeoutSeconds: z.number().int().min(1).max(86_400),
  publishNotReadyAddresses: z.boolean(),
  /**
   * "Local": a node's clients reach only the endpoints on that node, as with kube-proxy (a node-local agent or cache),
   * and are refused when it runs none. Absent: "Cluster", every endpoint.
   */
  internalTrafficPolicy: z.enum(["Cluster", "Local"]).optional(),
  selector: stringMap.optional(),
  labels: stringMap,
  annotations: stringMap,
});
export type Service = z.infer<typeof serviceSchema>;

export const endpointSchema = z.object({
  addresses: z.array(z.string()).min(1),
  conditions: z.object({ ready: z.boolean(), serving: z.boolean(), terminating: z.boolean() }),
  hostname: z.string().optional(),
  nodeName: z.string().optional(),
  zone: z.string().optional(),
  targetRef: z.object({ kind: z.string(), namespace: z.string().optional(), name: z.string() }).optional(),
});
export type Endpoint = z.infer<typeof endpointSchema>;

export const endpointPortSchema = z.object({
  name: z.string(),
  protocol: z.enum(protocols),
  /** Absent: the slice's endpoints serve every port of the Service. */
  port: z.number().int().min(1).max(65535).optional(),
  appProtocol: z.string().optional(),
});
export type EndpointPort = z.infer<typeof endpointPortSchema>;

export const endpointSliceSchema = z.object({
  kind: z.literal("EndpointSlice"),
  namespace: z.string(),
  name: z.string(),
  /** From the label kubernetes.io/service-name. */
  serviceName: z.string(),
  addressType: z.enum(["IPv4", "IPv6", "FQDN"]),
  endpoints: z.array(endpointSchema),
  ports: z.array(endpointPortSchema),
  labels: stringMap,
  annotations: stringMap,
});
export type EndpointSlice = z.infer<typeof endpointSliceSchema>;

export const loadBalancerSimple = ["ROUND_ROBIN", "LEAST_CONN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH", "UNSPECIFIED"] as const;

export const destinationRuleSchema = z.object({
  kind: z.literal("DestinationRule"),
  namespace: z.string(),
  name: z.string(),
  /** The Service the rule applies to, as written (short name or FQDN). */
  host: z.string(),
  loadBalancer: z
    .object({
      simple: z.enum(loadBalancerSimple).optional(),
      consistentHash: z
        .object({
          useSourceIp: z.boolean().optional(),
          httpHeaderName: z.string().optional(),
        })
        .optional(),
    })
    .optional(),
  labels: stringMap,
  annotations: stringMap,
});
export type DestinationRule = z.infer<typeof destinationRuleSchema>;

export const catalogObjectSchema = z.discriminatedUnion("kind", [serviceSchema, endpointSliceSchema, destinationRuleSchema, ...gatewayCatalogSchemas]);
export type CatalogObject = z.infer<typeof catalogObjectSchema>;
export type CatalogKind = CatalogObject["kind"];

const keyPrefix: Record<CatalogKind, string> = {
  Service: "svc",
  EndpointSlice: "eps",
  DestinationRule: "dr",
  ...gatewayKindPrefixes,
};

/**
 * The KV key of an object: `<svc|eps|dr|gw|httproute|…>.<namespace>.<name>`. Namespaces are DNS
 * labels (no dots), so the key is unique even where a name holds dots.
 */
export function catalogKey(object: Pick<CatalogObject, "kind" | "namespace" | "name">): string {
  return `${keyPrefix[object.kind]}.${object.namespace}.${object.name}`;
}

const kindOfPrefix = new Map(Object.entries(keyPrefix).map(([kind, prefix]) => [prefix, kind as CatalogKind]));

/** Which kind a key holds, or undefined for a key that is not a catalog object. */
export function kindOfKey(key: string): CatalogKind | undefined {
  return kindOfPrefix.get(key.slice(0, key.indexOf(".")));
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeCatalogObject(object: CatalogObject): Uint8Array {
  return encoder.encode(JSON.stringify(object));
}

/**
 * Decodes and checks a KV value; throws a SchemaError naming the bad field. An object that is already exactly
 * what the schema gives back is kept as parsed, not copied (lib/schema checks in place). Its parts that are
 * the same everywhere are shared (`shareParts`).
 */
export function decodeCatalogObject(bytes: Uint8Array): CatalogObject {
  return parseCatalogObject(decoder.decode(bytes));
}

/** decodeCatalogObject of a value already read as text (the controller keeps the text for the object's event). */
export function parseCatalogObject(text: string): CatalogObject {
  const parsed: unknown = JSON.parse(text);
  return shareParts(catalogObjectSchema.parse(parsed));
}

const noEntries: Record<string, string> = Object.freeze({});
const endpointConditions = new Map<number, Endpoint["conditions"]>();

/**
 * An agent holds every object of the catalog: at 10,000 services, 20,000 objects decoded one by one, most
 * with empty labels or annotations, and 30,000 endpoints with one of a few condition triples. Those become
 * shared, frozen objects (a write to them throws): 1,693 → 1,272 bytes a service (Service and a slice of
 * three endpoints; heap difference with --expose-gc). Nothing writes to a decoded object.
 */
function shareParts<T extends CatalogObject>(object: T): T {
  const parts = object as { labels?: Record<string, string>; annotations?: Record<string, string> };
  if (parts.labels && isEmpty(parts.labels)) parts.labels = noEntries;
  if (parts.annotations && isEmpty(parts.annotations)) parts.annotations = noEntries;
  if (object.kind === "EndpointSlice") {
    for (const endpoint of object.endpoints) {
      const { ready, serving, terminating } = endpoint.conditions;
      const key = (ready ? 1 : 0) | (serving ? 2 : 0) | (terminating ? 4 : 0);
      let shared = endpointConditions.get(key);
      if (!shared) endpointConditions.set(key, (shared = Object.freeze({ ready, serving, terminating })));
      endpoint.conditions = shared;
    }
  }
  return object;
}

function isEmpty(record: Record<string, string>): boolean {
  for (const _ in record) return false;
  return true;
}

/**
 * The object as a catalog event carries it: a TLS Secret without its private key, which must not travel under
 * `mesh.>` (every operator's `leafmesh sub` shows those subjects). A reader that needs the key asks the node's
 * controller for the object (rpc `catalog.object`, local callers only); `bus/catalog-feed.ts` does.
 */
export function redactForEvent(object: CatalogObject): { object?: CatalogObject; redacted?: true } {
  return object.kind === "TLSSecret" ? { redacted: true } : { object };
}

/** Kubernetes: an endpoint is ready when conditions.ready is true. */
export function isReadyEndpoint(endpoint: Endpoint): boolean {
  return endpoint.conditions.ready;
}

/** The cluster's own records of one Service: itself and its slices. */
export interface ServiceEntry {
  service: Service;
  slices: EndpointSlice[];
}

/**
 * A read-only index of the catalog that actors answer from: services by
 * namespace/name, their slices, destination rules by host. `CatalogIndex` in
 * `bus/catalog-index.ts` builds one from catalog events.
 */
export interface CatalogReader {
  service(namespace: string, name: string): Service | undefined;
  slices(namespace: string, serviceName: string): readonly EndpointSlice[];
  services(): Iterable<Service>;
  destinationRule(namespace: string, serviceName: string): DestinationRule | undefined;
  /** Every object of one ingress kind (Gateways, routes, TLS Secrets), in key order. */
  ofKind<K extends GatewayCatalogKind>(kind: K): readonly Extract<GatewayCatalogObject, { kind: K }>[];
  /** The object stored under a catalog key (`catalogKey`). */
  get(key: string): CatalogObject | undefined;
  /** Increases on every change, so a reader can cache derived data. */
  readonly version: number;
}

/** A Service with this label is not proxied by leafmesh (no cluster-IP interception, no listener): its clients reach its endpoints some other way. */
export const noProxyLabel = "service.leafmesh.io/noproxy";

/**
 * Whether the agent proxies this Service's cluster IP (a listener per port, the balancer): not headless, not
 * ExternalName, with a cluster IP, without the noproxy label. The traffic actor plans these; the SOCKS proxy
 * hands these to it, and dials the others as the node's own clients would reach them.
 */
export function isProxied(service: Service): boolean {
  return service.type !== "ExternalName" && !service.headless && service.clusterIPs.length > 0 && !Object.hasOwn(service.labels, noProxyLabel);
}
