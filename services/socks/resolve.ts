/**
 * Where a SOCKS5 CONNECT goes, as a pure function of (catalog, request): a
 * Service by name or cluster IP that the node proxies becomes a `service` target,
 * whose endpoint the node's cluster-IP path chooses (the traffic actor's plan and
 * balancer, bus/streams.ts `ServicePortDialer`: SOCKS keeps no second copy of
 * those rules); a Service it does not proxy goes where the node's own clients
 * reach it (a headless one's endpoint, as DNS answers it; an ExternalName's name;
 * a noproxy one's cluster IP as given); a node name becomes that node's own
 * address, reached through the tunnel
 * (`ssh -o ProxyCommand='nc -X 5 -x 127.0.0.1:1080 %h %p' edge-b`); anything
 * else is dialled as given.
 */
import { isIP } from "node:net";
import { isProxied, type CatalogReader, type EndpointSlice, type Service } from "../../bus/catalog.ts";
import { nodeNamePattern } from "../../bus/subjects.ts";

export type SocksTarget =
  | { kind: "service"; namespace: string; service: string; port: number }
  | { kind: "endpoint"; service: string; node: string | undefined; host: string; port: number }
  | { kind: "node"; node: string; host: string; port: number }
  | { kind: "direct"; host: string; port: number }
  | { kind: "refused"; reason: string };

export interface ResolveOptions {
  clusterDomain: string;
  /** This node's name: its endpoints are preferred and dialled directly. */
  node: string;
  /** Nodes known to the tunnel; a single-label name among them is a node. */
  knownNodes: ReadonlySet<string>;
  /** Picks among a headless Service's addresses (round robin in the actor; first in tests). */
  pick?: <T>(candidates: T[]) => T;
  /** Why a Service is refused now (the partition policy, bus/partition.ts: its name is withheld by DNS too), or undefined. */
  withheld?: (service: Service) => string | undefined;
}

/** `web.shop.svc.cluster.local`, `web.shop.svc`, `web.shop` → ["shop", "web"]. */
export function serviceOfName(host: string, clusterDomain: string): [string, string] | undefined {
  const name = host.toLowerCase().replace(/\.$/, "");
  const domain = clusterDomain.toLowerCase().replace(/\.$/, "");
  const labels = name.endsWith(`.svc.${domain}`) ? name.slice(0, -`.svc.${domain}`.length).split(".") : name.endsWith(".svc") ? name.slice(0, -4).split(".") : name.split(".");
  if (labels.length !== 2 || labels.some((label) => !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(label))) return undefined;
  return [labels[1], labels[0]];
}

function serviceByClusterIP(catalog: CatalogReader, ip: string): Service | undefined {
  for (const service of catalog.services()) if (service.clusterIPs.includes(ip)) return service;
  return undefined;
}

/** A Service: the cluster-IP path's for one the node proxies; else where the node's own clients would reach it. */
function serviceTarget(catalog: CatalogReader, service: Service, port: number, options: ResolveOptions, byIp?: string): SocksTarget {
  const label = `${service.namespace}/${service.name}`;
  if (isProxied(service)) return { kind: "service", namespace: service.namespace, service: service.name, port };
  const withheld = options.withheld?.(service);
  if (withheld) return { kind: "refused", reason: `Service ${label}: ${withheld}` };
  if (service.type === "ExternalName") {
    return service.externalName ? { kind: "direct", host: service.externalName, port } : { kind: "refused", reason: `Service ${label} is an ExternalName without a name` };
  }
  if (!service.headless) {
    // The noproxy label: its cluster IP as given, which the node does not intercept (something else serves it, or nothing).
    const clusterIP = byIp ?? service.clusterIPs[0];
    return clusterIP ? { kind: "direct", host: clusterIP, port } : { kind: "refused", reason: `Service ${label} has no cluster IP` };
  }
  return headlessTarget(catalog, service, port, options);
}

/** A headless Service's endpoint, as its DNS name answers (ready endpoints), this node's first; dialled at its node. */
function headlessTarget(catalog: CatalogReader, service: Service, port: number, options: ResolveOptions): SocksTarget {
  const servicePort = service.ports.find((candidate) => candidate.port === port && candidate.protocol === "TCP");
  const label = `${service.namespace}/${service.name}`;
  const candidates: { node: string | undefined; host: string; port: number }[] = [];
  for (const slice of catalog.slices(service.namespace, service.name) as EndpointSlice[]) {
    if (slice.addressType === "FQDN") continue;
    // The slice port named like the Service port (or its only port) carries the target port.
    const slicePort = slice.ports.find((candidate) => candidate.name === (servicePort?.name ?? "")) ?? (slice.ports.length === 1 ? slice.ports[0] : undefined);
    const targetPort = slicePort?.port ?? (typeof servicePort?.targetPort === "number" ? servicePort.targetPort : port);
    for (const endpoint of slice.endpoints) {
      if (!endpoint.conditions.ready) continue;
      for (const address of endpoint.addresses) candidates.push({ node: endpoint.nodeName, host: address, port: targetPort });
    }
  }
  if (candidates.length === 0) return { kind: "refused", reason: `headless Service ${label} has no ready endpoint` };
  const local = candidates.filter((candidate) => candidate.node === options.node);
  const chosen = (options.pick ?? ((list) => list[0]))(local.length > 0 ? local : candidates);
  return { kind: "endpoint", service: label, ...chosen };
}

export function resolveSocksTarget(catalog: CatalogReader, host: string, port: number, options: ResolveOptions): SocksTarget {
  if (port < 1 || port > 65535) return { kind: "refused", reason: `port ${port} out of range` };
  if (isIP(host)) {
    const service = serviceByClusterIP(catalog, host);
    return service ? serviceTarget(catalog, service, port, options, host) : { kind: "direct", host, port };
  }
  const name = host.toLowerCase().replace(/\.$/, "");
  const nodeName = name.endsWith(".node") ? name.slice(0, -5) : name;
  // This node by its name too: the tunnel's known nodes are the others (without this, `ssh edge-a` through
  // edge-a's own proxy was looked up in DNS and failed with ENOTFOUND while every other node's name worked).
  if (nodeNamePattern.test(nodeName) && (options.knownNodes.has(nodeName) || nodeName === options.node || name.endsWith(".node"))) {
    if (nodeName === options.node) return { kind: "direct", host: "127.0.0.1", port };
    return { kind: "node", node: nodeName, host: "127.0.0.1", port };
  }
  const serviceName = serviceOfName(name, options.clusterDomain);
  if (serviceName) {
    const service = catalog.service(serviceName[0], serviceName[1]);
    if (service) return serviceTarget(catalog, service, port, options);
    if (name.endsWith(`.svc.${options.clusterDomain}`) || name.endsWith(".svc")) return { kind: "refused", reason: `no Service ${serviceName[0]}/${serviceName[1]}` };
  }
  return { kind: "direct", host: name, port };
}
