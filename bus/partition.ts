/**
 * Per-service policy while the node is partitioned from its upstream (issue 18 item 5): the
 * Service annotation `leafmesh.io/partition`, read by the DNS and traffic actors.
 *
 * - `serve-last-known` (the default): while the node cannot reach its upstream, the service is
 *   answered and proxied from the node's mirror of the catalog, as when online: telemetry keeps going.
 * - `fail-closed`: while the node cannot reach its upstream, the service is refused: its names
 *   answer SERVFAIL (a client retries; nothing is cached as "no such name") and new connections to
 *   it are reset at once. A payment service refuses rather than reach a backend the node can no
 *   longer verify. Connections already open stay (they were made while the node could verify).
 *
 * How far the node reaches (`UpstreamReach`, handed to the actors by the agent role) decides:
 *
 * - "cloud": its leaf link is up and, under an edge site, the site reaches the cloud: all served.
 * - "site": the node reaches its site's servers, and the site is cut off from the cloud. The site is
 *   the local master then: its servers authenticate every member and carry the member-to-member
 *   streams, its mirrors hold the catalog and the revocations. A fail-closed service whose ready
 *   backends all run on nodes of this site (or on this node) is served; one with a backend outside
 *   the site (another site's node, the cloud, an address outside the mesh) is refused: nothing the
 *   node still reaches can vouch for that backend.
 * - "none": the node does not reach its upstream (the hubs, or its site's servers): every fail-closed
 *   service is refused, also one whose backend runs on this node: the catalog that names it can no
 *   longer be checked against anyone.
 *
 * ```ts
 * partitionPolicyOf(service);                                  // { policy: "fail-closed" }
 * refusalWhilePartitioned(service, slices, upstream);           // "fail-closed while the node cannot reach its upstream" | undefined
 * const view = partitionView(feed.reader, upstream);            // a reader whose version moves when the reach changes
 * ```
 */
import { catalogKey, isReadyEndpoint, type CatalogReader, type EndpointSlice, type Service } from "./catalog.ts";
import type { CatalogFeed } from "./catalog-feed.ts";

export const partitionAnnotation = "leafmesh.io/partition";
export const partitionPolicies = ["serve-last-known", "fail-closed"] as const;
export type PartitionPolicy = (typeof partitionPolicies)[number];
/** @default serve-last-known — an edge site keeps working through a cut; refusing is the exception a service asks for. */
export const defaultPartitionPolicy: PartitionPolicy = "serve-last-known";

/**
 * How far the node reaches: "cloud" (its upstream, and under an edge site the site's uplink too),
 * "site" (its site's servers, while the site is cut off from the cloud), "none" (not its upstream).
 */
export type UpstreamReach = "cloud" | "site" | "none";

/** How far the node reaches, when that changes, and (under a site) which nodes are of its site. */
export interface UpstreamState {
  readonly reach: UpstreamReach;
  onChange(listener: (reach: UpstreamReach) => void): () => void;
  /**
   * Whether a node runs in this node's edge site (this node itself included). Absent: only this node
   * is known to be inside (no tunnel, so no node records): a fail-closed service with a backend on
   * another node is refused while the site is cut off.
   */
  insideSite?(node: string): boolean;
}

/** The reasons a fail-closed service is refused: counter labels and log lines (few and fixed). */
export const partitionRefusals = {
  cut: "fail-closed while the node cannot reach its upstream",
  outsideSite: "fail-closed while the site is cut off from the cloud: a backend outside the site",
} as const;

/** The service's policy; an unknown value falls back to the default and says why (`problem`). */
export function partitionPolicyOf(service: Pick<Service, "annotations">): { policy: PartitionPolicy; problem?: string } {
  const value = service.annotations?.[partitionAnnotation];
  if (value === undefined) return { policy: defaultPartitionPolicy };
  const trimmed = value.trim();
  if ((partitionPolicies as readonly string[]).includes(trimmed)) return { policy: trimmed as PartitionPolicy };
  return { policy: defaultPartitionPolicy, problem: `${partitionAnnotation}: '${value}' is not one of ${partitionPolicies.join(", ")}: ${defaultPartitionPolicy} applies` };
}

/** Why the service is refused now (one of `partitionRefusals`), or undefined when it is served. */
export function refusalWhilePartitioned(service: Pick<Service, "annotations"> | undefined, slices: readonly EndpointSlice[], upstream: Pick<UpstreamState, "reach" | "insideSite">): string | undefined {
  if (upstream.reach === "cloud" || !service || partitionPolicyOf(service).policy !== "fail-closed") return undefined;
  if (upstream.reach === "none") return partitionRefusals.cut;
  return backendsOutsideSite(slices, upstream).length > 0 ? partitionRefusals.outsideSite : undefined;
}

/**
 * The ready backends of a service that are not in this node's site: their node's name, or their
 * address when they name no node (outside the mesh: nothing in the site vouches for them). Ready
 * ones only: the balancer sends to nothing else, and during a cut the catalog cannot change.
 */
export function backendsOutsideSite(slices: readonly EndpointSlice[], upstream: Pick<UpstreamState, "insideSite">): string[] {
  const outside = new Set<string>();
  for (const slice of slices)
    for (const endpoint of slice.endpoints) {
      if (!isReadyEndpoint(endpoint)) continue;
      if (endpoint.nodeName === undefined) outside.add(endpoint.addresses[0] ?? "(no address)");
      else if (upstream.insideSite?.(endpoint.nodeName) !== true) outside.add(endpoint.nodeName);
    }
  return [...outside].sort();
}

/** The upstream state with the site's members known (the tunnel's node records): the agent hands this to DNS and traffic. */
export function withSiteMembers(upstream: UpstreamState, insideSite: (node: string) => boolean): UpstreamState {
  return {
    get reach() {
      return upstream.reach;
    },
    onChange: (listener) => upstream.onChange(listener),
    insideSite,
  };
}

/**
 * The catalog as the actors see it under the policy: the same objects, and a version that moves
 * whenever the node's reach changes, so that what is derived per version (the DNS zone, its
 * encoded answers) is derived again with the new state.
 */
export function partitionView(reader: CatalogReader, upstream: UpstreamState): CatalogReader {
  let flips = 0;
  upstream.onChange(() => flips++);
  return {
    service: (namespace, name) => reader.service(namespace, name),
    slices: (namespace, name) => reader.slices(namespace, name),
    services: () => reader.services(),
    destinationRule: (namespace, name) => reader.destinationRule(namespace, name),
    get: (key) => reader.get(key),
    ofKind: (kind) => reader.ofKind(kind),
    get version() {
      return reader.version + flips * 2 ** 32;
    },
  };
}

/**
 * The feed as the actors see it under the policy: the catalog's changes, and, when the node's reach
 * changes, the keys of every fail-closed Service, so that an index kept one Service at a time (the DNS
 * zone) derives those Services again with the new state.
 */
export function partitionFeed(feed: CatalogFeed, upstream: UpstreamState): CatalogFeed {
  const reader = partitionView(feed.reader, upstream);
  return {
    reader,
    onChange(listener) {
      const stopCatalog = feed.onChange(listener);
      const stopUpstream = upstream.onChange(() => {
        const keys = [...feed.reader.services()].filter((service) => partitionPolicyOf(service).policy === "fail-closed").map((service) => catalogKey(service));
        if (keys.length > 0) listener(keys);
      });
      return () => {
        stopCatalog();
        stopUpstream();
      };
    },
    // The feed belongs to whoever made it (the controller): closing this view leaves it open.
    close: () => undefined,
  };
}

/** An UpstreamState fed by hand: the agent role sets it from the controller, tests set it directly. */
export class UpstreamSwitch implements UpstreamState {
  #reach: UpstreamReach;
  readonly #listeners = new Set<(reach: UpstreamReach) => void>();

  constructor(reach: UpstreamReach = "cloud") {
    this.#reach = reach;
  }

  get reach(): UpstreamReach {
    return this.#reach;
  }

  set(reach: UpstreamReach): void {
    if (reach === this.#reach) return;
    this.#reach = reach;
    for (const listener of this.#listeners) listener(reach);
  }

  onChange(listener: (reach: UpstreamReach) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
