/**
 * What a reflector (kubernetes-reflector.ts) says about its resource: its status
 * for status pages and /readyz, and the one log line that says a resource is not
 * served. A cluster without the Gateway API answers 404 for each of its four
 * kinds; the group's discovery document (`/apis/<group>`) tells a group that is
 * not installed (said once for all its kinds) from a group served without one
 * kind (the standard channel has no TCPRoute or TLSRoute: said for that kind).
 *
 * ```ts
 * await sayAbsent(spec, { log, client, settings, absentGroups, kindsOf }, signal);
 * // info: "the API serves no gateway.networking.k8s.io (not installed): going on without Gateways, HTTPRoutes, …"
 * ```
 */
import type { Logger } from "../../lib/log.ts";
import { apiStatus, type KubernetesClient } from "./kubernetes-client.ts";
import { resourcePath, type ResourceSpec } from "./kubernetes-store.ts";

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

/** What sayAbsent needs of the reflector's host. */
export interface AbsenceHost {
  log: Logger;
  client: KubernetesClient;
  settings: { namespace: string | undefined; optionalRecheckMs: number };
  /** Groups found not installed and said so, shared by the source's reflectors; a group found again leaves it. */
  absentGroups: Set<string>;
  /** The kinds the source reads from a group, for that one line. */
  kindsOf(group: string): string[];
}

/** Says that `spec` is not served (every version answered 404): once per group when the group is not installed. */
export async function sayAbsent(spec: ResourceSpec, host: AbsenceHost, signal: AbortSignal): Promise<void> {
  const { group, kind, resource, versions } = spec;
  const fields = { resource, group };
  const later = `looking again every ${Math.round(host.settings.optionalRecheckMs / 1_000)} s`;
  if (!group) {
    host.log.info(fields, `the API serves no ${kind}s (404 on ${resourcePath(spec, versions[0], host.settings.namespace)}); going on without them, ${later}`);
    return;
  }
  let groupServed: boolean | undefined;
  try {
    await host.client.get(`/apis/${group}`, signal);
    groupServed = true;
  } catch (error) {
    // Anything but a 404 (a 403 on discovery, a timeout) does not say the group is missing: this resource alone is said.
    groupServed = apiStatus(error) === 404 ? false : undefined;
  }
  if (groupServed === false) {
    if (host.absentGroups.has(group)) {
      host.log.debug(fields, `the API serves no ${kind}s (${group} not installed)`);
      return;
    }
    host.absentGroups.add(group);
    host.log.info({ group }, `the API serves no ${group} (not installed): going on without ${host.kindsOf(group).map((name) => `${name}s`).join(", ")}; ${later}`);
    return;
  }
  host.log.info(fields, `the API serves no ${kind}s (${versions.map((version) => `${group}/${version}`).join(", ")}: its CRD is not installed); going on without them, ${later}`);
}
