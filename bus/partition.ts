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
 * "Cannot reach its upstream" is the controller's view (hub link up/down: the catalog follows the
 * hub, or is served from the mirror), handed to the actors as an `UpstreamState` by the agent role.
 *
 * ```ts
 * partitionPolicyOf(service);                       // { policy: "fail-closed" }
 * refusalWhilePartitioned(service, upstream.online); // "fail-closed while the node cannot reach its upstream" | undefined
 * const view = partitionView(feed.reader, upstream); // a reader whose version moves when the upstream comes or goes
 * ```
 */
import { catalogKey, type CatalogReader, type Service } from "./catalog.ts";
import type { CatalogFeed } from "./catalog-feed.ts";

export const partitionAnnotation = "leafmesh.io/partition";
export const partitionPolicies = ["serve-last-known", "fail-closed"] as const;
export type PartitionPolicy = (typeof partitionPolicies)[number];
/** @default serve-last-known — an edge site keeps working through a cut; refusing is the exception a service asks for. */
export const defaultPartitionPolicy: PartitionPolicy = "serve-last-known";

/** Whether the node reaches its upstream (hub or site), and when that changes. */
export interface UpstreamState {
  readonly online: boolean;
  onChange(listener: (online: boolean) => void): () => void;
}

/** The service's policy; an unknown value falls back to the default and says why (`problem`). */
export function partitionPolicyOf(service: Pick<Service, "annotations">): { policy: PartitionPolicy; problem?: string } {
  const value = service.annotations?.[partitionAnnotation];
  if (value === undefined) return { policy: defaultPartitionPolicy };
  const trimmed = value.trim();
  if ((partitionPolicies as readonly string[]).includes(trimmed)) return { policy: trimmed as PartitionPolicy };
  return { policy: defaultPartitionPolicy, problem: `${partitionAnnotation}: '${value}' is not one of ${partitionPolicies.join(", ")}: ${defaultPartitionPolicy} applies` };
}

/** Why the service is refused now, or undefined when it is served. */
export function refusalWhilePartitioned(service: Pick<Service, "annotations"> | undefined, online: boolean): string | undefined {
  if (online || !service) return undefined;
  return partitionPolicyOf(service).policy === "fail-closed" ? "fail-closed while the node cannot reach its upstream" : undefined;
}

/**
 * The catalog as the actors see it under the policy: the same objects, and a version that moves
 * whenever the upstream comes or goes, so that what is derived per version (the DNS zone, its
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
 * The feed as the actors see it under the policy: the catalog's changes, and, when the upstream comes
 * or goes, the keys of every fail-closed Service, so that an index kept one Service at a time (the DNS
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
  #online: boolean;
  readonly #listeners = new Set<(online: boolean) => void>();

  constructor(online = true) {
    this.#online = online;
  }

  get online(): boolean {
    return this.#online;
  }

  set(online: boolean): void {
    if (online === this.#online) return;
    this.#online = online;
    for (const listener of this.#listeners) listener(online);
  }

  onChange(listener: (online: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
