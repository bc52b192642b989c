/**
 * A catalog source reading the Kubernetes API (or KubeEdge's MetaServer, the
 * same API on plain http with no credentials): core/v1 Services,
 * discovery.k8s.io/v1 EndpointSlices and, when the cluster serves them,
 * networking.istio.io DestinationRules. Each resource is listed once and then
 * watched from the list's resourceVersion (with BOOKMARKs, so a quiet resource
 * still advances); a dropped watch resumes where it stopped, a 410 Gone relists
 * and emits only what differs from what was held. While the API is unreachable
 * the last catalog stays and the source retries with backoff. An object that
 * fails `normalizeObject` is reported through onReject (once per version) and
 * its previous good version, if any, stays. A server that replays instead of
 * resuming (MetaServer ignores a watch's resourceVersion) is noticed and
 * relisted after every watch, so no deletion is missed.
 *
 * This file assembles the source: one Reflector per resource
 * (kubernetes-reflector.ts: the list/watch loop) over one KubernetesClient
 * (kubernetes-client.ts: HTTP, kubeconfig), each holding its objects in a
 * ResourceStore (kubernetes-store.ts: the conversion to catalog objects); here
 * their objects become one catalog, announced once every resource is synced.
 *
 * ```ts
 * const source = new KubernetesSource({ kubeconfig: "/etc/kubeedge/metaserver.kubeconfig", log });
 * source.onChange((changes) => publisher.apply(changes));
 * source.onReject((rejection) => log.warn(rejection));
 * await source.start(); // resolves after the first attempt to list everything; synced says whether it worked
 * source.status();      // per resource: state (listing, watching, backoff, absent), resourceVersion, counters, error
 * ```
 */
import type { KubeConfig } from "@kubernetes/client-node";
import { catalogKey, type CatalogObject } from "../../bus/catalog.ts";
import { systemClock, type Clock } from "../../lib/clock.ts";
import type { Logger } from "../../lib/log.ts";
import { KubernetesClient, loadKubeconfig } from "./kubernetes-client.ts";
import { Reflector, type KubernetesResourceStatus, type ReflectorHost, type ReflectorSettings } from "./kubernetes-reflector.ts";
import type { ResourceSpec } from "./kubernetes-store.ts";
import type { Refusal } from "./kubernetes-store.ts";
import { diffCatalog, formatRejection, SourceListeners, type CatalogChange, type CatalogRejection, type CatalogSource } from "./source.ts";

export type { KubernetesResourceStatus, ReflectorState } from "./kubernetes-reflector.ts";

export interface KubernetesSourceOptions {
  /** A kubeconfig file path, or a loaded KubeConfig. @default the client's default lookup (KUBECONFIG, ~/.kube/config, in-cluster) */
  kubeconfig?: string | KubeConfig;
  /** Read only this namespace. @default all namespaces */
  namespace?: string;
  log: Logger;
  /** @default systemClock — tests hand in a ManualClock to step backoffs. */
  clock?: Clock;
  /** First retry delay after a failure. @default 500 — a restarting API server is back within seconds. */
  retryInitialMs?: number;
  /** Longest retry delay. @default 30_000 — an edge site cut off for hours must not hammer its API when the link returns, nor wait minutes. */
  retryMaxMs?: number;
  /**
   * Asked of the server per watch (`timeoutSeconds`); a watch still open a quarter longer is taken for a silently dead
   * connection (a NAT that forgot it, a cut link) and resumed. @default 300 — client-go's reflector asks 5–10 min.
   */
  watchTimeoutSeconds?: number;
  /**
   * How long a list request may stay silent, and how long a watch may take to be answered. @default 30_000 — a list
   * of tens of thousands of objects over a slow edge link.
   */
  requestTimeoutMs?: number;
  /** How often to look again for an optional API that was absent (DestinationRules without Istio). @default 300_000 — installing Istio is rare; five minutes is soon enough. */
  optionalRecheckMs?: number;
  /** Objects per list page (`limit`). @default 500 — client-go's default page size. */
  pageSize?: number;
  /**
   * How long `start()` waits for the first attempt to list everything before it returns and lets the lists go on in
   * the background. @default 10_000 — a black-holed API costs a request timeout per attempt; the hub has other work to start.
   */
  startWaitMs?: number;
}

/** The defaults of the options above, in one place. */
function reflectorSettings(options: KubernetesSourceOptions): ReflectorSettings {
  return {
    namespace: options.namespace,
    retryInitialMs: options.retryInitialMs ?? 500,
    retryMaxMs: options.retryMaxMs ?? 30_000,
    watchTimeoutSeconds: options.watchTimeoutSeconds ?? 300,
    optionalRecheckMs: options.optionalRecheckMs ?? 300_000,
    pageSize: options.pageSize ?? 500,
  };
}

/**
 * What the source reads. Istio's resources have been served at three versions, the Gateway API's at several, and
 * either may be absent (404: not installed, an empty list). Secrets are only those of type kubernetes.io/tls (a field
 * selector: no password or token of the cluster comes over) and optional too: an account not allowed to read them
 * (403) goes on without (docs/gateway.md says which Secrets leafmesh reads and publishes, and why).
 */
export const resourceSpecs: ResourceSpec[] = [
  { resource: "services", kind: "Service", group: "", versions: ["v1"], optional: false },
  { resource: "endpointslices", kind: "EndpointSlice", group: "discovery.k8s.io", versions: ["v1"], optional: false },
  { resource: "destinationrules", kind: "DestinationRule", group: "networking.istio.io", versions: ["v1", "v1beta1", "v1alpha3"], optional: true },
  { resource: "gateways", kind: "Gateway", group: "networking.istio.io", versions: ["v1", "v1beta1", "v1alpha3"], optional: true },
  { resource: "virtualservices", kind: "VirtualService", group: "networking.istio.io", versions: ["v1", "v1beta1", "v1alpha3"], optional: true },
  { resource: "gateways", kind: "Gateway", group: "gateway.networking.k8s.io", versions: ["v1", "v1beta1"], optional: true },
  { resource: "httproutes", kind: "HTTPRoute", group: "gateway.networking.k8s.io", versions: ["v1", "v1beta1"], optional: true },
  { resource: "tcproutes", kind: "TCPRoute", group: "gateway.networking.k8s.io", versions: ["v1alpha2"], optional: true },
  { resource: "tlsroutes", kind: "TLSRoute", group: "gateway.networking.k8s.io", versions: ["v1alpha3", "v1alpha2"], optional: true },
  { resource: "secrets", kind: "Secret", group: "", versions: ["v1"], optional: true, fieldSelector: "type=kubernetes.io/tls" },
];

export class KubernetesSource implements CatalogSource {
  readonly name: string;
  readonly #options: KubernetesSourceOptions;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #listeners = new SourceListeners();
  readonly #client: KubernetesClient;
  #catalog = new Map<string, CatalogObject>();
  #reflectors: Reflector[] = [];
  #started = false;
  /** Whether the first full sync went out to listeners (see #emit). */
  #announced = false;

  constructor(options: KubernetesSourceOptions) {
    this.#options = options;
    this.#log = options.log;
    this.#clock = options.clock ?? systemClock;
    this.#client = new KubernetesClient(loadKubeconfig(options.kubeconfig), { requestTimeoutMs: options.requestTimeoutMs ?? 30_000, clock: this.#clock });
    this.name = `kubernetes:${this.#client.server}${options.namespace ? `/namespaces/${options.namespace}` : ""}`;
  }

  get synced(): boolean {
    return this.#reflectors.length > 0 && this.#reflectors.every((reflector) => reflector.synced);
  }

  snapshot(): ReadonlyMap<string, CatalogObject> {
    return this.#catalog;
  }

  onChange(listener: (changes: CatalogChange[]) => void): () => void {
    return this.#listeners.onChange(listener);
  }

  onReject(listener: (rejection: CatalogRejection) => void): () => void {
    return this.#listeners.onReject(listener);
  }

  /** Starts listing and watching; resolves once every resource was tried once (listed, or failed and now retrying). */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    const host: ReflectorHost = {
      log: this.#log,
      clock: this.#clock,
      settings: reflectorSettings(this.#options),
      client: this.#client,
      replaceAll: (before, after) => this.#replaceAll(before, after),
      replaceOne: (before, after) => this.#replaceOne(before, after),
      reject: (rejection) => this.#reject(rejection),
      synced: () => this.#emit([]),
      absentGroups: new Set(),
      kindsOf: (group) => resourceSpecs.filter((spec) => spec.group === group).map((spec) => spec.kind),
    };
    this.#reflectors = resourceSpecs.map((spec) => new Reflector(spec, host));
    let timer: unknown;
    await Promise.race([
      Promise.all(this.#reflectors.map((reflector) => reflector.start())),
      new Promise<void>((resolve) => (timer = this.#clock.setTimeout(resolve, this.#options.startWaitMs ?? 10_000))),
    ]);
    this.#clock.clearTimeout(timer);
    if (!this.synced) this.#log.warn({ server: this.#client.server }, "the Kubernetes API is not reachable yet; retrying in the background, the catalog stays as it was");
  }

  async stop(): Promise<void> {
    await Promise.all(this.#reflectors.map((reflector) => reflector.stop()));
  }

  /** Per resource: state, resourceVersion, counters (lists, watches, 410s, failures, refusals) and the current error. */
  status(): KubernetesResourceStatus[] {
    return this.#reflectors.map((reflector) => reflector.status());
  }

  /** Replaces everything a resource held (after a list) and emits the difference. */
  #replaceAll(before: CatalogObject[], after: CatalogObject[]): void {
    const next = new Map(this.#catalog);
    for (const object of before) next.delete(catalogKey(object));
    for (const object of after) next.set(catalogKey(object), object);
    const changes = diffCatalog(this.#catalog, next);
    this.#catalog = next;
    if (changes.length > 0) this.#log.info({ changes: changes.length, objects: next.size }, "Kubernetes catalog changed (list)");
    this.#emit(changes);
  }

  /** One object added, changed or gone (after a watch event). */
  #replaceOne(before: CatalogObject | undefined, after: CatalogObject | undefined): void {
    const key = catalogKey((after ?? before)!);
    const previous = this.#catalog.get(key);
    const changes = diffCatalog(previous ? new Map([[key, previous]]) : new Map(), after ? new Map([[key, after]]) : new Map());
    if (after) this.#catalog.set(key, after);
    else this.#catalog.delete(key);
    if (changes.length > 0) this.#log.debug({ key, op: changes[0].op }, "Kubernetes catalog changed (watch)");
    this.#emit(changes);
  }

  /**
   * Until every resource has been listed once, nothing is emitted: a listener (the publisher) acts only on a synced
   * source, and the last resource to sync may change nothing (no DestinationRules), which would leave it waiting for
   * a change that never comes. On the first full sync the whole catalog goes out as one batch of puts.
   */
  #emit(changes: CatalogChange[]): void {
    if (!this.#announced) {
      if (!this.synced) return;
      this.#announced = true;
      changes = diffCatalog(new Map(), this.#catalog);
    }
    this.#listeners.emitChanges(changes);
  }

  #reject(refusal: Refusal): void {
    const full: CatalogRejection = { source: this.name, ...refusal };
    this.#log.warn(full, `rejected: ${formatRejection(full)}`);
    this.#listeners.emitRejection(full);
  }
}
