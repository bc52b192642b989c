/**
 * internalTrafficPolicy: Local where the endpoint lives. The opening side plans a Local
 * Service with its own node's endpoints alone (plan.ts), but the node that runs an
 * endpoint served any tunnel stream that asked for it: an agent that ignores the policy
 * (leafmesh before 2026-12-06, bus/protocol.ts) or any peer with the mesh's credentials
 * reached a node-local agent or cache from another node, which Kubernetes' Local rules
 * out. This index answers, for a stream's target, whether only Local Services lead to it.
 *
 * A target is an (address, port, protocol) of an endpoint, not a Service: the same pod may
 * back a Local Service on one port and a Cluster one on another, or both on one port. It
 * is refused only when every Service that lists it is a proxied Service with
 * internalTrafficPolicy Local; a Cluster Service, a headless one (SOCKS dials its
 * endpoints at their node) or any other Service listing it keeps it served. A target that
 * no Service lists (a node's loopback through SOCKS) is none of its business. Each node
 * holds this for the endpoints its catalog places on it (`nodeName`), where streams for them
 * arrive: the index stays the size of one node's pods, not of the catalog.
 *
 * ```ts
 * const localOnly = new LocalOnlyEndpoints(feed, "edge-b");
 * localOnly.refusal({ host: "10.0.0.5", port: 8125, protocol: "UDP" }); // "... only to clients on its own node: lab/node-agent ..."
 * localOnly.stop();
 * ```
 */
import { isIP, SocketAddress } from "node:net";
import { catalogKey, isProxied, type CatalogReader, type EndpointSlice, type Service } from "../../bus/catalog.ts";
import type { CatalogFeed } from "../../bus/catalog-feed.ts";
import type { StreamTarget } from "../../bus/streams.ts";
import { affectedServices, serviceRef } from "./plan.ts";

/** One address as the kernel would name it: IPv6 compressed and lower case, an IPv4-mapped IPv6 address as its IPv4. Undefined for a name. */
export function canonicalAddress(host: string): string | undefined {
  const bare = host.replace(/%.*$/, ""); // a zone (fe80::1%eth0) names the link, not another address
  const family = isIP(bare);
  if (family === 4) return bare;
  if (family !== 6) return undefined;
  const address = new SocketAddress({ address: bare, family: "ipv6" }).address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  return mapped ? mapped[1] : address;
}

function targetKey(address: string, port: number, protocol: string): string {
  return `${address}|${port}|${protocol}`;
}

/** The (address, port, protocol) keys of the endpoints on `node` that a Service's slices list, in any condition (one not ready now may be soon). */
export function endpointKeysOf(service: Service, slices: readonly EndpointSlice[], node: string): string[] {
  const keys = new Set<string>();
  for (const slice of slices) {
    if (slice.addressType === "FQDN") continue;
    // A slice port without a number serves every port of the Service; a slice without ports, its numeric target ports.
    const ports = slice.ports.some((port) => port.port === undefined) || slice.ports.length === 0 ? service.ports.flatMap((port) => (typeof port.targetPort === "number" ? [{ port: port.targetPort, protocol: port.protocol }] : [])) : [];
    for (const port of slice.ports) if (port.port !== undefined) ports.push({ port: port.port, protocol: port.protocol });
    for (const endpoint of slice.endpoints) {
      if (endpoint.nodeName !== node) continue;
      for (const host of endpoint.addresses) {
        const address = canonicalAddress(host);
        if (address) for (const port of ports) keys.add(targetKey(address, port.port, port.protocol));
      }
    }
  }
  return [...keys];
}

/** Whether a Service restricts its endpoints to clients on their own node. */
function isLocalOnly(service: Service): boolean {
  return isProxied(service) && service.internalTrafficPolicy === "Local";
}

export class LocalOnlyEndpoints {
  readonly #feed: CatalogFeed;
  readonly #node: string;
  /** Per Service ("namespace/name"): the endpoint keys it lists, whether it is Local, and its slices' catalog keys. */
  readonly #byService = new Map<string, { keys: string[]; local: boolean; slices: string[] }>();
  /** Per endpoint key: the Local Services that list it, and how many other Services do. */
  readonly #local = new Map<string, Set<string>>();
  readonly #open = new Map<string, number>();
  /** Which Service an EndpointSlice key belonged to (a deleted slice is no longer in the catalog to ask). */
  readonly #sliceOwners = new Map<string, string>();
  readonly #unsubscribe: () => void;

  constructor(feed: CatalogFeed, node: string) {
    this.#feed = feed;
    this.#node = node;
    this.#unsubscribe = feed.onChange((keys) => this.#changed(keys));
    this.#rebuild();
  }

  /**
   * Why this node serves `target` to no other node: only Services with internalTrafficPolicy Local lead to it.
   * Undefined when it may be served (another Service leads to it, none does, or its host is a name: see the caller).
   */
  refusal(target: StreamTarget): string | undefined {
    const address = canonicalAddress(target.host);
    if (address === undefined) return undefined;
    const key = targetKey(address, target.port, target.protocol);
    const services = this.#local.get(key);
    if (!services || (this.#open.get(key) ?? 0) > 0) return undefined;
    const names = [...services].sort();
    const shown = names.length > 3 ? `${names.slice(0, 3).join(", ")} and ${names.length - 3} more` : names.join(", ");
    return `${address}:${target.port}/${target.protocol} is an endpoint only of Services whose internalTrafficPolicy is Local (${shown}): it is served to clients on its own node only`;
  }

  stop(): void {
    this.#unsubscribe();
  }

  #changed(keys: string[]): void {
    const reader = this.#feed.reader;
    const affected = affectedServices(keys, reader, (key) => this.#sliceOwners.get(key));
    if (affected === "all") return this.#rebuild();
    for (const ref of affected) this.#replan(reader, ref);
  }

  #rebuild(): void {
    for (const ref of [...this.#byService.keys()]) this.#forget(ref);
    this.#sliceOwners.clear();
    const reader = this.#feed.reader;
    for (const service of reader.services()) this.#replan(reader, serviceRef(service.namespace, service.name));
  }

  #replan(reader: CatalogReader, ref: string): void {
    this.#forget(ref);
    const slash = ref.indexOf("/");
    const service = reader.service(ref.slice(0, slash), ref.slice(slash + 1));
    if (!service) return;
    const slices = reader.slices(service.namespace, service.name);
    const entry = { keys: endpointKeysOf(service, slices, this.#node), local: isLocalOnly(service), slices: slices.map((slice) => catalogKey(slice)) };
    for (const slice of entry.slices) this.#sliceOwners.set(slice, ref);
    this.#byService.set(ref, entry);
    for (const key of entry.keys) {
      if (entry.local) this.#local.set(key, (this.#local.get(key) ?? new Set()).add(ref));
      else this.#open.set(key, (this.#open.get(key) ?? 0) + 1);
    }
  }

  #forget(ref: string): void {
    const entry = this.#byService.get(ref);
    if (!entry) return;
    this.#byService.delete(ref);
    for (const slice of entry.slices) if (this.#sliceOwners.get(slice) === ref) this.#sliceOwners.delete(slice);
    for (const key of entry.keys) {
      if (entry.local) {
        const services = this.#local.get(key);
        services?.delete(ref);
        if (services?.size === 0) this.#local.delete(key);
      } else {
        const left = (this.#open.get(key) ?? 1) - 1;
        if (left > 0) this.#open.set(key, left);
        else this.#open.delete(key);
      }
    }
  }
}
