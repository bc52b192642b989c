/**
 * Real-looking catalog objects for the DNS tests and the benchmark: Services and
 * EndpointSlices as the controller normalises them from Kubernetes.
 */
import { catalogKey, type CatalogObject, type EndpointSlice, type Service } from "../../bus/catalog.ts";
import { IndexFeed } from "../../bus/catalog-feed.ts";

export function service(namespace: string, name: string, fields: Partial<Service> = {}): Service {
  return {
    kind: "Service",
    namespace,
    name,
    type: "ClusterIP",
    headless: false,
    clusterIPs: [],
    ipFamilies: ["IPv4"],
    ports: [{ name: "http", protocol: "TCP", port: 80, targetPort: 8080 }],
    sessionAffinity: "None",
    sessionAffinityTimeoutSeconds: 10_800,
    publishNotReadyAddresses: false,
    labels: {},
    annotations: {},
    ...fields,
  };
}

export interface EndpointFixture {
  ip: string;
  ready?: boolean;
  hostname?: string;
  nodeName?: string;
}

export function slice(namespace: string, serviceName: string, name: string, endpoints: EndpointFixture[], fields: Partial<EndpointSlice> = {}): EndpointSlice {
  return {
    kind: "EndpointSlice",
    namespace,
    name,
    serviceName,
    addressType: endpoints[0]?.ip.includes(":") ? "IPv6" : "IPv4",
    endpoints: endpoints.map((endpoint) => ({
      addresses: [endpoint.ip],
      conditions: { ready: endpoint.ready ?? true, serving: endpoint.ready ?? true, terminating: false },
      hostname: endpoint.hostname,
      nodeName: endpoint.nodeName ?? "edge-a",
    })),
    ports: [{ name: "http", protocol: "TCP", port: 8080 }],
    labels: { "kubernetes.io/service-name": serviceName },
    annotations: {},
    ...fields,
  };
}

/** A feed holding these objects, as the actor gets it from the controller. */
export function feedOf(objects: CatalogObject[]): IndexFeed {
  const feed = new IndexFeed();
  for (const object of objects) feed.reader.apply({ op: "put", key: catalogKey(object), object });
  return feed;
}

export function put(feed: IndexFeed, object: CatalogObject): void {
  const key = catalogKey(object);
  if (feed.reader.apply({ op: "put", key, object })) feed.notify([key]);
}

export function remove(feed: IndexFeed, object: CatalogObject): void {
  const key = catalogKey(object);
  if (feed.reader.apply({ op: "delete", key })) feed.notify([key]);
}

/** The catalog the integration tests ask about: every record kind and the spec's edge cases. */
export function sampleCatalog(): CatalogObject[] {
  const many = Array.from({ length: 60 }, (_, index) => ({ ip: `10.2.${Math.floor(index / 200)}.${(index % 200) + 1}` }));
  return [
    service("shop", "web", { clusterIPs: ["10.96.0.10"], ports: [{ name: "http", protocol: "TCP", port: 80, targetPort: 8080 }, { name: "metrics", protocol: "TCP", port: 9090, targetPort: 9090 }] }),
    slice("shop", "web", "web-abc", [{ ip: "10.1.0.5" }, { ip: "10.1.0.6", ready: false }]),
    service("shop", "dual", { clusterIPs: ["10.96.0.11", "fd00:96::11"], ipFamilies: ["IPv4", "IPv6"] }),
    service("shop", "v6only", { clusterIPs: ["fd00:96::12"], ipFamilies: ["IPv6"] }),
    service("shop", "lonely", { clusterIPs: ["10.96.0.13"] }),
    service("shop", "db", { headless: true, ports: [{ name: "pg", protocol: "TCP", port: 5432, targetPort: 5432 }] }),
    slice("shop", "db", "db-1", [{ ip: "10.1.1.1", hostname: "db-0" }, { ip: "10.1.1.2", hostname: "db-1" }, { ip: "10.1.1.3", hostname: "db-2", ready: false }], { ports: [{ name: "pg", protocol: "TCP", port: 5432 }] }),
    service("shop", "db6", { headless: true, ipFamilies: ["IPv6"], ports: [] }),
    slice("shop", "db6", "db6-1", [{ ip: "fd00:1::1" }]),
    service("shop", "peers", { headless: true, publishNotReadyAddresses: true, ports: [{ name: "gossip", protocol: "UDP", port: 7946, targetPort: 7946 }] }),
    slice("shop", "peers", "peers-1", [{ ip: "10.1.2.1", hostname: "peer-0" }, { ip: "10.1.2.2", hostname: "peer-1", ready: false }], { ports: [{ name: "gossip", protocol: "UDP", port: 7946 }] }),
    service("shop", "empty", { headless: true }),
    service("shop", "big", { headless: true, ports: [] }),
    slice("shop", "big", "big-1", many),
    service("shop", "ext", { type: "ExternalName", externalName: "db.example.org", ports: [] }),
    service("shop", "alias", { type: "ExternalName", externalName: "web.shop.svc.cluster.local", ports: [] }),
    service("shop", "legacy", { headless: true, ports: [], annotations: { "service.alpha.kubernetes.io/tolerate-unready-endpoints": "true" } }),
    slice("shop", "legacy", "legacy-1", [{ ip: "10.1.3.1", ready: false }]),
  ];
}

/** The sample catalog, a headless service too large for UDP (200 endpoints), and a fail-closed service (vault/secret) for the resolvers-in-front tests. */
export function frontCatalog(): IndexFeed {
  return feedOf([
    ...sampleCatalog(),
    service("shop", "wide", { headless: true, ports: [] }),
    slice("shop", "wide", "wide-1", Array.from({ length: 200 }, (_, index) => ({ ip: `10.7.0.${index + 1}` }))),
    service("vault", "secret", { clusterIPs: ["10.96.9.9"], annotations: { "leafmesh.io/partition": "fail-closed" } }),
  ]);
}

/** A small deterministic PRNG (mulberry32) so a failing case can be replayed. */
export function prng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A few services of every kind (ClusterIP, dual-stack, IPv6-only, headless, ExternalName) with their slices: the same seed, the same catalog. */
export function generateCatalog(seed: number) {
  const random = prng(seed);
  const pick = <T,>(items: T[]) => items[Math.floor(random() * items.length)];
  const objects: CatalogObject[] = [];
  const services: Service[] = [];
  const slicesOf = new Map<string, EndpointSlice[]>();
  let ipCounter = 1;
  const ipv4 = () => `10.${seed % 200}.${Math.floor(ipCounter / 250)}.${(ipCounter++ % 250) + 1}`;
  const ipv6 = () => `fd00:${(seed % 0xffff).toString(16)}::${(ipCounter++).toString(16)}`;
  const count = 3 + Math.floor(random() * 10);
  for (let index = 0; index < count; index++) {
    const namespace = pick(["default", "shop", "kube-system", "edge"]);
    const name = `svc-${index}-${Math.floor(random() * 1000)}`;
    const kind = pick(["clusterip", "clusterip", "dual", "v6", "headless", "headless", "external"]);
    const ports = Array.from({ length: Math.floor(random() * 3) }, (_, portIndex) => ({
      name: portIndex === 0 && random() < 0.3 ? "" : `p${portIndex}`,
      protocol: pick(["TCP", "UDP"] as const),
      port: 1000 + portIndex,
      targetPort: 2000 + portIndex,
    }));
    let svc: Service;
    if (kind === "external") svc = service(namespace, name, { type: "ExternalName", externalName: `${name}.example.org`, ports: [] });
    else if (kind === "headless") svc = service(namespace, name, { headless: true, ports, publishNotReadyAddresses: random() < 0.3 });
    else if (kind === "dual") svc = service(namespace, name, { clusterIPs: [ipv4(), ipv6()], ipFamilies: ["IPv4", "IPv6"], ports });
    else if (kind === "v6") svc = service(namespace, name, { clusterIPs: [ipv6()], ipFamilies: ["IPv6"], ports });
    else svc = service(namespace, name, { clusterIPs: [ipv4()], ports });
    services.push(svc);
    objects.push(svc);
    const sliceCount = kind === "external" ? 0 : Math.floor(random() * 3);
    const list: EndpointSlice[] = [];
    for (let sliceIndex = 0; sliceIndex < sliceCount; sliceIndex++) {
      const v6 = random() < 0.3;
      const endpoints = Array.from({ length: Math.floor(random() * 5) + 1 }, (_, endpointIndex) => ({
        ip: v6 ? ipv6() : ipv4(),
        ready: random() < 0.7,
        hostname: random() < 0.5 ? `host-${sliceIndex}-${endpointIndex}` : undefined,
      }));
      const item = slice(namespace, name, `${name}-${sliceIndex}`, endpoints, { ports: ports.map((port) => ({ name: port.name, protocol: port.protocol, port: port.targetPort })) });
      list.push(item);
      objects.push(item);
    }
    slicesOf.set(`${namespace}/${name}`, list);
  }
  return { objects, services, slicesOf, random };
}
