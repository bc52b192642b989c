/**
 * What a reflector (kubernetes-reflector.ts) reports about its resource: its
 * state and counters, for status pages and /readyz.
 */

/** Where one resource's list/watch loop is; `backoff` waits after a failure, `absent` rechecks an API that is not installed. */
export type ReflectorState = "listing" | "watching" | "backoff" | "absent" | "stopped";

/** One resource as the source sees it, for status pages and /readyz. */
export interface KubernetesResourceStatus {
  /** "services", "endpointslices", "destinationrules", "gateways" (of group networking.istio.io or gateway.networking.k8s.io)… */
  resource: string;
  /** The API group ("" for the core group): two resources are called gateways. */
  group: string;
  state: ReflectorState;
  synced: boolean;
  /** Where a resumed watch starts ("" before the first list and after a 410). */
  resourceVersion: string;
  /** The group/version read ("networking.istio.io/v1"); absent while not found. */
  apiVersion?: string;
  /** Objects held in the catalog. */
  objects: number;
  /** Lists made (the first one, and one per 410 Gone or recheck). */
  lists: number;
  /** Watch streams opened (a resume opens one, without a list). */
  watches: number;
  /** Watches answered 410 Gone (history compacted): each costs a relist. */
  expired: number;
  /** Failed requests, all told. */
  failures: number;
  /** Object versions refused by normalisation (each reported through onReject once). */
  rejected: number;
  /** Why the API is failing now; absent when it is not. */
  lastError?: string;
}
