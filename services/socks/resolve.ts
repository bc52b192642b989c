/**
 * Where a SOCKS5 CONNECT goes, as a pure function of (catalog, request): a
 * Service by name or cluster IP becomes one of its ready endpoints (this node's
 * first; this node's only, for internalTrafficPolicy Local, as its cluster IP); a node name becomes that node's own address, reached through the
 * tunnel (`ssh -o ProxyCommand='nc -X 5 -x 127.0.0.1:1080 %h %p' edge-b`);
 * anything else is dialled as given.
 */
import { isIP } from "node:net";
import type { CatalogReader, EndpointSlice, Service } from "../../bus/catalog.ts";
import { nodeNamePattern } from "../../bus/subjects.ts";

export type SocksTarget =
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
  /** Picks among candidates (round robin in the actor; first in tests). */
  pick?: <T>(candidates: T[]) => T;
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

function endpointTarget(catalog: CatalogReader, service: Service, port: number, options: ResolveOptions): SocksTarget {
  const servicePort = service.ports.find((candidate) => candidate.port === port && candidate.protocol === "TCP");
  const label = `${service.namespace}/${service.name}`;
  if (!servicePort && !service.headless) return { kind: "refused", reason: `Service ${label} has no TCP port ${port}` };
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
  if (candidates.length === 0) return { kind: "refused", reason: `Service ${label} has no ready endpoint` };
  const local = candidates.filter((candidate) => candidate.node === options.node);
  // internalTrafficPolicy Local: this node's endpoints only, as its cluster IP serves it (services/traffic/plan.ts). Before,
  // a SOCKS client reached another node's endpoint that the same node's cluster IP refused.
  if (service.internalTrafficPolicy === "Local" && local.length === 0) {
    return { kind: "refused", reason: `Service ${label} has internalTrafficPolicy Local and no ready endpoint on this node (${options.node})` };
  }
  const pool = local.length > 0 ? local : candidates;
  const chosen = (options.pick ?? ((list) => list[0]))(pool);
  return { kind: "endpoint", service: label, ...chosen };
}

export function resolveSocksTarget(catalog: CatalogReader, host: string, port: number, options: ResolveOptions): SocksTarget {
  if (port < 1 || port > 65535) return { kind: "refused", reason: `port ${port} out of range` };
  if (isIP(host)) {
    const service = serviceByClusterIP(catalog, host);
    return service ? endpointTarget(catalog, service, port, options) : { kind: "direct", host, port };
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
    if (service) return endpointTarget(catalog, service, port, options);
    if (name.endsWith(`.svc.${options.clusterDomain}`) || name.endsWith(".svc")) return { kind: "refused", reason: `no Service ${serviceName[0]}/${serviceName[1]}` };
  }
  return { kind: "direct", host: name, port };
}
