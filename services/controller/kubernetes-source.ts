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
 * ```ts
 * const source = new KubernetesSource({ kubeconfig: "/etc/kubeedge/metaserver.kubeconfig", log });
 * source.onChange((changes) => publisher.apply(changes));
 * source.onReject((rejection) => log.warn(rejection));
 * await source.start(); // resolves after the first attempt to list everything; synced says whether it worked
 * source.status();      // per resource: state (listing, watching, backoff, absent), resourceVersion, counters, error
 * ```
 */
import http from "node:http";
import https from "node:https";
import { KubeConfig, Watch } from "@kubernetes/client-node";
import { createActor, setup } from "xstate";
import { catalogKey, type CatalogObject } from "../../bus/catalog.ts";
import { systemClock, type Clock } from "../../lib/clock.ts";
import { describeError, LeafmeshError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { describeObject, normalizeObject } from "./normalize.ts";
import { diffCatalog, SourceListeners, type CatalogChange, type CatalogRejection, type CatalogSource } from "./source.ts";

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
  /** Per list request. @default 30_000 — a list of tens of thousands of objects over a slow edge link. */
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

type RawObject = { apiVersion?: string; kind?: string; metadata?: { name?: string; namespace?: string; resourceVersion?: string; [key: string]: unknown }; [key: string]: unknown };

interface ResourceSpec {
  resource: string;
  kind: string;
  /** "" for the core group. */
  group: string;
  /** Tried in order; the first the server serves is used. */
  versions: string[];
  /** A 404 means "not installed here" (an empty list), not an error. */
  optional: boolean;
}

const resourceSpecs: ResourceSpec[] = [
  { resource: "services", kind: "Service", group: "", versions: ["v1"], optional: false },
  { resource: "endpointslices", kind: "EndpointSlice", group: "discovery.k8s.io", versions: ["v1"], optional: false },
  { resource: "destinationrules", kind: "DestinationRule", group: "networking.istio.io", versions: ["v1", "v1beta1", "v1alpha3"], optional: true },
];

/** What the source holds for one object of the API. */
interface Held {
  /** The last version that normalised; kept when a later version is refused. */
  good?: CatalogObject;
  /** metadata.resourceVersion of the last version seen, good or refused. */
  seenVersion?: string;
  /** resourceVersion of the last refused version, so a relist does not report it again. */
  refusedVersion?: string;
}

/** What a reflector needs of its source: handed in, so the source keeps no public internals. */
interface ReflectorHost {
  log: Logger;
  clock: Clock;
  options: KubernetesSourceOptions;
  kubeconfig: KubeConfig;
  server: string;
  replaceAll(before: Iterable<Held>, after: Iterable<Held>): void;
  replaceOne(before: CatalogObject | undefined, after: CatalogObject | undefined): void;
  reject(rejection: Omit<CatalogRejection, "source">): void;
  /** A resource counts as synced without a list (an optional API that refused): announce the catalog if all are. */
  synced(): void;
}

class HttpStatusError extends Error {
  readonly statusCode: number;
  constructor(statusCode: number, message: string) {
    super(message);
    this.statusCode = statusCode;
  }
}

export class KubernetesSource implements CatalogSource {
  readonly name: string;
  readonly #options: KubernetesSourceOptions;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #listeners = new SourceListeners();
  readonly #kubeconfig: KubeConfig;
  readonly #server: string;
  #catalog = new Map<string, CatalogObject>();
  #reflectors: Reflector[] = [];
  #started = false;
  /** Whether the first full sync went out to listeners (see #emit). */
  #announced = false;

  constructor(options: KubernetesSourceOptions) {
    this.#options = options;
    this.#log = options.log;
    this.#clock = options.clock ?? systemClock;
    this.#kubeconfig = loadKubeconfig(options.kubeconfig);
    this.#server = this.#kubeconfig.getCurrentCluster()?.server ?? "";
    this.name = `kubernetes:${this.#server}${options.namespace ? `/namespaces/${options.namespace}` : ""}`;
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
      options: this.#options,
      kubeconfig: this.#kubeconfig,
      server: this.#server,
      replaceAll: (before, after) => this.#replaceAll(before, after),
      replaceOne: (before, after) => this.#replaceOne(before, after),
      reject: (rejection) => this.#reject(rejection),
      synced: () => this.#emit([]),
    };
    this.#reflectors = resourceSpecs.map((spec) => new Reflector(spec, host));
    let timer: unknown;
    await Promise.race([
      Promise.all(this.#reflectors.map((reflector) => reflector.start())),
      new Promise<void>((resolve) => (timer = this.#clock.setTimeout(resolve, this.#options.startWaitMs ?? 10_000))),
    ]);
    this.#clock.clearTimeout(timer);
    if (!this.synced) this.#log.warn({ server: this.#server }, "the Kubernetes API is not reachable yet; retrying in the background, the catalog stays as it was");
  }

  async stop(): Promise<void> {
    await Promise.all(this.#reflectors.map((reflector) => reflector.stop()));
  }

  /** Per resource: state, resourceVersion, counters (lists, watches, 410s, failures, refusals) and the current error. */
  status(): KubernetesResourceStatus[] {
    return this.#reflectors.map((reflector) => reflector.status());
  }

  /** Replaces everything a resource held (after a list) and emits the difference. */
  #replaceAll(before: Iterable<Held>, after: Iterable<Held>): void {
    const next = new Map(this.#catalog);
    for (const held of before) if (held.good) next.delete(catalogKey(held.good));
    for (const held of after) if (held.good) next.set(catalogKey(held.good), held.good);
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

  #reject(rejection: Omit<CatalogRejection, "source">): void {
    const full = { source: this.name, ...rejection };
    this.#log.warn(full, `rejected: ${[full.object, full.message].filter(Boolean).join(": ")}`);
    this.#listeners.emitRejection(full);
  }
}

/** Where one resource's list/watch loop is; `backoff` waits after a failure, `absent` rechecks an API that is not installed. */
export type ReflectorState = "listing" | "watching" | "backoff" | "absent" | "stopped";

/** One resource as the source sees it, for status pages and /readyz. */
export interface KubernetesResourceStatus {
  /** "services", "endpointslices", "destinationrules". */
  resource: string;
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

type ReflectorEvent = { type: "LIST" } | { type: "WATCH" } | { type: "ABSENT" } | { type: "WAIT" } | { type: "STOP" };

/**
 *   listing → watching ⟲ (a resume opens a new watch) → listing (410 Gone)
 *   listing | watching → backoff → listing | watching
 *   listing → absent (optional API not installed) → listing (recheck)
 *   any → stopped
 */
const reflectorMachine = setup({ types: { events: {} as ReflectorEvent } }).createMachine({
  id: "reflector",
  initial: "listing",
  on: { STOP: ".stopped" },
  states: {
    listing: { on: { WATCH: "watching", ABSENT: "absent", WAIT: "backoff" } },
    watching: { on: { WATCH: { target: "watching", reenter: true }, LIST: "listing", WAIT: "backoff" } },
    backoff: { on: { LIST: "listing", WATCH: "watching" } },
    absent: { on: { LIST: "listing" } },
    stopped: { type: "final" },
  },
});

/**
 * The list/watch loop of one resource, the job client-go's Reflector does:
 * list, watch from the list's resourceVersion, follow events and BOOKMARKs,
 * resume from the last resourceVersion when the stream ends, relist on 410.
 */
class Reflector {
  readonly spec: ResourceSpec;
  readonly #source: ReflectorHost;
  #held = new Map<string, Held>();
  #resourceVersion = "";
  /** The version the server serves this resource at (DestinationRules have several). */
  #version: string | undefined;
  #absent = false;
  #synced = false;
  #stopped = false;
  /** Consecutive failed requests (the API unreachable, refusing, erring). */
  #failures = 0;
  /** Consecutive watches that ended at once with nothing on them (not an error, but no reason to spin). */
  #quickEnds = 0;
  /** The server ignores a watch's resourceVersion (KubeEdge's MetaServer): relist instead of resuming. */
  #replaysOnResume = false;
  #lastError: string | undefined;
  readonly #counters = { lists: 0, watches: 0, expired: 0, failures: 0, rejected: 0 };
  readonly #machine = createActor(reflectorMachine);
  #loop: Promise<void> | undefined;
  #firstAttempt: { promise: Promise<void>; resolve: () => void };
  #wake: (() => void) | undefined;
  #sleepTimer: unknown;
  /** Aborts the list request in flight. */
  #abort: AbortController | undefined;
  /** Ends the watch in flight. */
  #cancelWatch: (() => void) | undefined;

  constructor(spec: ResourceSpec, source: ReflectorHost) {
    this.spec = spec;
    this.#source = source;
    let resolve!: () => void;
    const promise = new Promise<void>((done) => (resolve = done));
    this.#firstAttempt = { promise, resolve };
  }

  get synced(): boolean {
    return this.#synced;
  }

  async start(): Promise<void> {
    this.#loop = this.#run();
    await this.#firstAttempt.promise;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort?.abort();
    this.#cancelWatch?.();
    this.#source.clock.clearTimeout(this.#sleepTimer);
    this.#wake?.();
    this.#firstAttempt.resolve();
    await this.#loop;
  }

  get #log(): Logger {
    return this.#source.log;
  }

  #path(version: string): string {
    const namespace = this.#source.options.namespace;
    const base = this.spec.group ? `/apis/${this.spec.group}/${version}` : `/api/${version}`;
    return `${base}${namespace ? `/namespaces/${encodeURIComponent(namespace)}` : ""}/${this.spec.resource}`;
  }

  #apiVersion(version: string): string {
    return this.spec.group ? `${this.spec.group}/${version}` : version;
  }

  async #run(): Promise<void> {
    this.#machine.start();
    // Bounded by #stopped: every pass either lists, watches until the stream ends, or sleeps.
    while (!this.#stopped) {
      let listed = false;
      if (this.#replaysOnResume) this.#resourceVersion = "";
      try {
        if (!this.#resourceVersion) {
          this.#machine.send({ type: "LIST" });
          await this.#list();
          listed = true;
          this.#firstAttempt.resolve();
          if (this.#failures > 0) this.#log.info({ resource: this.spec.resource, failures: this.#failures }, "Kubernetes API reachable again; listed");
          this.#failures = 0;
        }
        if (this.#stopped) break;
        if (this.#absent) {
          this.#machine.send({ type: "ABSENT" });
          await this.#sleep(this.#source.options.optionalRecheckMs ?? 300_000);
          this.#resourceVersion = "";
          continue;
        }
        this.#machine.send({ type: "WATCH" });
        this.#counters.watches++;
        const outcome = await this.#watch();
        if (outcome.expired) {
          this.#counters.expired++;
          this.#log.info({ resource: this.spec.resource, resourceVersion: this.#resourceVersion }, "watch resourceVersion expired (410 Gone); relisting");
          this.#resourceVersion = "";
          if (listed) {
            // Expired straight after a list: the server's history is shorter than a list takes. Relisting at once would spin.
            this.#quickEnds++;
            this.#machine.send({ type: "WAIT" });
            await this.#sleep(this.#backoff());
          }
          continue;
        }
        if (outcome.error) throw outcome.error;
        if (outcome.healthy) {
          this.#quickEnds = 0;
        } else {
          // The stream closed at once with nothing on it: pause before asking again rather than spin.
          this.#quickEnds++;
          this.#log.debug({ resource: this.spec.resource }, "watch closed without events; resuming after a pause");
          this.#machine.send({ type: "WAIT" });
          await this.#sleep(this.#backoff());
        }
      } catch (error) {
        if (this.#stopped) break;
        this.#failures++;
        this.#counters.failures++;
        this.#lastError = `${explain(error, this.spec)}: ${describeError(error)}`;
        // An optional resource the API answers with an error (RBAC without Istio's group, a MetaServer that cannot serve it)
        // must not hold the Services back: it counts as synced with what it holds (nothing, the first time).
        const passOver = this.spec.optional && error instanceof HttpStatusError && !this.#synced;
        if (passOver) {
          this.#synced = true;
          this.#source.synced();
        }
        this.#firstAttempt.resolve();
        this.#machine.send({ type: "WAIT" });
        const delay = this.#backoff();
        const fields = { resource: this.spec.resource, server: this.#source.server, attempt: this.#failures, retryInMs: Math.round(delay), err: describeError(error) };
        const consequence = passOver ? `going on without ${this.spec.kind}s and retrying` : "keeping the last catalog and retrying";
        if (this.#failures === 1) this.#log.warn(fields, `Kubernetes API request failed (${explain(error, this.spec)}); ${consequence}`);
        else this.#log.debug(fields, "Kubernetes API still failing");
        await this.#sleep(delay);
      }
    }
    this.#machine.send({ type: "STOP" });
  }

  status(): KubernetesResourceStatus {
    return {
      resource: this.spec.resource,
      state: this.#machine.getSnapshot().value as ReflectorState,
      synced: this.#synced,
      resourceVersion: this.#resourceVersion,
      ...(this.#version ? { apiVersion: this.#apiVersion(this.#version) } : {}),
      objects: [...this.#held.values()].filter((held) => held.good).length,
      ...this.#counters,
      ...(this.#lastError && this.#failures > 0 ? { lastError: this.#lastError } : {}),
    };
  }

  #backoff(): number {
    const initial = this.#source.options.retryInitialMs ?? 500;
    const max = this.#source.options.retryMaxMs ?? 30_000;
    const attempts = this.#failures + this.#quickEnds;
    const base = Math.min(max, initial * 2 ** Math.min(30, Math.max(0, attempts - 1)));
    // Jitter: a fleet of hubs cut off together must not come back in lockstep.
    return base * (0.8 + Math.random() * 0.4);
  }

  #sleep(ms: number): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
      this.#sleepTimer = this.#source.clock.setTimeout(resolve, ms);
    }).then(() => {
      this.#wake = undefined;
    });
  }

  /** Lists every page, replaces what this resource held and emits the difference. */
  async #list(): Promise<void> {
    const versions = this.#version ? [this.#version, ...this.spec.versions.filter((v) => v !== this.#version)] : this.spec.versions;
    let found: { version: string; items: RawObject[]; resourceVersion: string } | undefined;
    for (const version of versions) {
      try {
        found = await this.#listPages(version);
        break;
      } catch (error) {
        if (error instanceof HttpStatusError && error.statusCode === 404 && this.spec.optional) continue;
        throw error;
      }
    }
    if (!found) {
      // Not installed here: the same as an empty list, so a removed CRD also removes its objects.
      if (!this.#absent) this.#log.info({ resource: this.spec.resource, group: this.spec.group }, `the API serves no ${this.spec.kind}s (${this.spec.group} not installed); looking again later`);
      this.#absent = true;
      this.#version = undefined;
      this.#replace([], "");
      return;
    }
    if (this.#absent || (this.spec.optional && this.#version === undefined)) {
      this.#log.info({ resource: this.spec.resource, version: found.version }, `reading ${this.spec.kind}s from ${this.#apiVersion(found.version)}`);
    }
    this.#absent = false;
    this.#version = found.version;
    this.#replace(found.items, found.version);
    this.#resourceVersion = found.resourceVersion;
  }

  async #listPages(version: string): Promise<{ version: string; items: RawObject[]; resourceVersion: string }> {
    let items: RawObject[] = [];
    let resourceVersion = "";
    let continueToken: string | undefined;
    let restarts = 0;
    // Bounded: each page is a request; a server returning `continue` forever would be a broken server, cut at 10,000 pages.
    for (let page = 0; page < 10_000; page++) {
      const query = new URLSearchParams({ limit: String(this.#source.options.pageSize ?? 500) });
      if (continueToken) query.set("continue", continueToken);
      if (!continueToken) this.#counters.lists++;
      let body: { items?: RawObject[] | null; metadata?: { resourceVersion?: string; continue?: string } };
      try {
        body = (await this.#get(`${this.#path(version)}?${query}`)) as typeof body;
      } catch (error) {
        // A continue token outlives its snapshot when the list takes longer than the server keeps history: start the list again.
        if (continueToken && error instanceof HttpStatusError && error.statusCode === 410 && restarts < 3) {
          restarts++;
          this.#log.info({ resource: this.spec.resource, pages: page }, "list continue token expired (410 Gone); listing again from the start");
          items = [];
          continueToken = undefined;
          continue;
        }
        throw error;
      }
      items.push(...(body.items ?? []));
      resourceVersion = body.metadata?.resourceVersion ?? "";
      continueToken = body.metadata?.continue || undefined;
      if (!continueToken) return { version, items, resourceVersion };
    }
    throw new LeafmeshError("KUBERNETES_FAILED", `listing ${this.spec.resource} did not end after 10,000 pages`);
  }

  #replace(items: RawObject[], version: string): void {
    const next = new Map<string, Held>();
    for (const item of items) {
      const raw = this.#complete(item, version);
      const id = objectId(raw);
      const held = this.#normalize(raw, this.#held.get(id));
      if (held) next.set(id, held);
    }
    const before = [...this.#held.values()];
    this.#held = next;
    this.#synced = true;
    this.#source.replaceAll(before, next.values());
  }

  /** A list's items carry no kind and apiVersion: the list says them. */
  #complete(item: RawObject, version: string): RawObject {
    return { ...item, apiVersion: item.apiVersion ?? this.#apiVersion(version), kind: item.kind ?? this.spec.kind };
  }

  /** What to hold for a raw object: its normalised form, or the previous good one when it is refused. */
  #normalize(raw: RawObject, previous: Held | undefined): Held | undefined {
    const result = normalizeObject(raw);
    const version = raw.metadata?.resourceVersion;
    if (result.status === "ok") return { good: result.object, seenVersion: version };
    if (result.status === "ignored") return previous;
    if (previous?.refusedVersion !== version) {
      this.#counters.rejected++;
      for (const problem of result.problems) {
        this.#source.reject({
          object: describeObject(result.kind, result.name),
          field: problem.field,
          message: `${problem.field ? `${problem.field} ` : ""}${problem.message}${previous?.good ? " (the previous version stays in the catalog)" : ""}`,
        });
      }
    }
    return { good: previous?.good, refusedVersion: version, seenVersion: version };
  }

  /** One watch stream, from #resourceVersion until it ends. */
  #watch(): Promise<{ expired?: boolean; error?: unknown; healthy: boolean }> {
    const version = this.#version ?? this.spec.versions[0];
    const startedAt = this.#source.clock.now();
    const resumedFrom = this.#resourceVersion;
    let sawEvent = false;
    let expired = false;
    let streamError: Error | undefined;
    return new Promise((resolve) => {
      let settled = false;
      let controller: AbortController | undefined;
      // The library's watch has no timeout until the response headers arrive: a server that accepts and never answers would hold this loop for ever.
      const headerTimeoutMs = this.#source.options.requestTimeoutMs ?? 30_000;
      const headerTimer = this.#source.clock.setTimeout(
        () => finish(new LeafmeshError("KUBERNETES_FAILED", `watch ${this.spec.resource}: no answer within ${headerTimeoutMs} ms`)),
        headerTimeoutMs,
      );
      let deadlineTimer: unknown;
      const finish = (error: unknown) => {
        if (settled) return;
        settled = true;
        this.#source.clock.clearTimeout(headerTimer);
        this.#source.clock.clearTimeout(deadlineTimer);
        this.#cancelWatch = undefined;
        controller?.abort();
        const statusCode = (error as { statusCode?: number } | null)?.statusCode;
        if (expired || statusCode === 410) resolve({ expired: true, healthy: true });
        else if (streamError) resolve({ error: streamError, healthy: false });
        else if (error && !this.#stopped && !isAbort(error)) resolve({ error, healthy: false });
        else resolve({ healthy: sawEvent || this.#source.clock.now() - startedAt >= 1_000 });
      };
      const onEvent = (type: string, object: RawObject) => {
        if (this.#stopped || settled || expired || streamError) return;
        sawEvent = true;
        if (type === "ERROR") {
          const status = object as { code?: number; reason?: string; message?: string };
          if (status.code === 410) expired = true;
          else streamError = new HttpStatusError(status.code ?? 500, `watch ${this.spec.resource}: ${status.message ?? status.reason ?? "ERROR event"}`);
          controller?.abort();
          return;
        }
        const resourceVersion = object?.metadata?.resourceVersion;
        if (type === "BOOKMARK") {
          if (resourceVersion) this.#resourceVersion = resourceVersion;
          return;
        }
        if (type !== "ADDED" && type !== "MODIFIED" && type !== "DELETED") return;
        const raw = this.#complete(object, version);
        // A server that resumes from a resourceVersion never sends again a version the client holds. KubeEdge's
        // MetaServer does: it ignores the resourceVersion and replays every object as ADDED. Resuming there would
        // miss what was deleted meanwhile, so from now on every watch that ends is followed by a list.
        if (resumedFrom && type !== "DELETED" && resourceVersion && this.#held.get(objectId(raw))?.seenVersion === resourceVersion && !this.#replaysOnResume) {
          this.#replaysOnResume = true;
          this.#log.info({ resource: this.spec.resource, resourceVersion: resumedFrom }, "the server replays every object instead of resuming a watch (as KubeEdge's MetaServer does); relisting after every watch so that deletions are not missed");
        }
        this.#follow(type, raw);
        if (resourceVersion) this.#resourceVersion = resourceVersion;
      };
      const timeoutSeconds = this.#source.options.watchTimeoutSeconds ?? 300;
      const query: Record<string, string | number | boolean> = { resourceVersion: this.#resourceVersion, allowWatchBookmarks: true, timeoutSeconds };
      this.#cancelWatch = () => finish(null);
      new Watch(this.#source.kubeconfig)
        .watch(this.#path(version), query, onEvent, finish)
        .then((opened) => {
          controller = opened;
          this.#source.clock.clearTimeout(headerTimer);
          if (!settled) {
            this.#watchOpened();
            // The server ends the watch at timeoutSeconds; one still open well after is a connection that died without a word.
            deadlineTimer = this.#source.clock.setTimeout(() => {
              this.#log.info({ resource: this.spec.resource, timeoutSeconds }, "watch outlived its timeout: the connection is taken for dead; resuming");
              finish(null);
            }, timeoutSeconds * 1_250 + 1_000);
          }
          // Finished meanwhile (stopped, timed out, or the stream already ended): let go of the connection.
          if (settled) opened.abort();
        })
        .catch(finish);
    });
  }

  /** The server answered the watch: whatever failed before works again. */
  #watchOpened(): void {
    if (this.#failures > 0) this.#log.info({ resource: this.spec.resource, failures: this.#failures }, "Kubernetes API reachable again; watch resumed");
    this.#failures = 0;
  }

  #follow(type: "ADDED" | "MODIFIED" | "DELETED", raw: RawObject): void {
    const id = objectId(raw);
    const previous = this.#held.get(id);
    if (type === "DELETED") {
      this.#held.delete(id);
      if (previous?.good) this.#source.replaceOne(previous.good, undefined);
      return;
    }
    const held = this.#normalize(raw, previous);
    if (!held) return;
    this.#held.set(id, held);
    if (held.good && held.good !== previous?.good) this.#source.replaceOne(previous?.good, held.good);
  }

  /** GET of a JSON document with the kubeconfig's TLS and credentials. */
  async #get(path: string): Promise<unknown> {
    const url = new URL(this.#source.server.replace(/\/$/, "") + path);
    const options: https.RequestOptions = { method: "GET", headers: { Accept: "application/json" } };
    await this.#source.kubeconfig.applyToHTTPSOptions(options);
    const abort = new AbortController();
    this.#abort = abort;
    const timeoutMs = this.#source.options.requestTimeoutMs ?? 30_000;
    try {
      return await new Promise((resolve, reject) => {
        const request = (url.protocol === "https:" ? https : http).request(url, { ...options, signal: abort.signal }, (response) => {
          const chunks: Buffer[] = [];
          response.on("data", (chunk: Buffer) => chunks.push(chunk));
          response.on("error", reject);
          response.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            const status = response.statusCode ?? 0;
            if (status !== 200) {
              let message = text.slice(0, 300);
              try {
                message = (JSON.parse(text) as { message?: string }).message ?? message;
              } catch {
                // not a Status object: keep the text as it came
              }
              reject(new HttpStatusError(status, `GET ${path}: HTTP ${status}${message ? `: ${message}` : ""}`));
              return;
            }
            try {
              resolve(JSON.parse(text));
            } catch (error) {
              reject(new LeafmeshError("KUBERNETES_FAILED", `GET ${path}: the answer is not JSON`, { cause: error }));
            }
          });
        });
        request.setTimeout(timeoutMs, () => request.destroy(new LeafmeshError("KUBERNETES_FAILED", `GET ${path}: no answer within ${timeoutMs} ms`)));
        request.on("error", reject);
        request.end();
      });
    } finally {
      if (this.#abort === abort) this.#abort = undefined;
    }
  }
}

function objectId(raw: RawObject): string {
  return `${raw.metadata?.namespace ?? "default"}/${raw.metadata?.name ?? ""}`;
}

function isAbort(error: unknown): boolean {
  return (error as { name?: string } | null)?.name === "AbortError";
}

/** A short reason an operator can act on. */
function explain(error: unknown, spec: ResourceSpec): string {
  const status = (error as { statusCode?: number }).statusCode;
  if (status === 401) return "not authenticated: check the kubeconfig's credentials";
  if (status === 403) return `forbidden: the account needs list and watch on ${spec.resource}${spec.group ? `.${spec.group}` : ""}`;
  if (status === 404) return `the API does not serve ${spec.resource}${spec.group ? `.${spec.group}` : ""}`;
  if (status) return `HTTP ${status}`;
  const code = (error as { code?: string }).code ?? ((error as { cause?: { code?: string } }).cause?.code);
  if (code === "ECONNREFUSED") return "connection refused: is the API server (or MetaServer) running?";
  if (code === "ECONNRESET" || code === "ERR_STREAM_PREMATURE_CLOSE") return "the connection was cut";
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return "the API server's name does not resolve";
  if (code === "ETIMEDOUT" || code === "EHOSTUNREACH" || code === "ENETUNREACH") return `the API server is unreachable (${code})`;
  if (code) return code;
  return describeError(error);
}

/**
 * The kubeconfig to use. client-node 1.4 refuses an `http:` server unless
 * `insecure-skip-tls-verify` is set ("HTTP protocol is not allowed when
 * skipTLSVerify is not set"), yet KubeEdge's MetaServer is plain http with no
 * credentials; for an http server the flag changes nothing but the agent the
 * library builds, so it is set on a copy.
 */
function loadKubeconfig(input: string | KubeConfig | undefined): KubeConfig {
  let config: KubeConfig;
  if (input instanceof KubeConfig) {
    config = input;
  } else {
    config = new KubeConfig();
    try {
      if (typeof input === "string") config.loadFromFile(input);
      else config.loadFromDefault();
    } catch (error) {
      throw new LeafmeshError("CONFIG_INVALID", `--kubeconfig: cannot load ${input ?? "the default kubeconfig"}: ${describeError(error)}`, { cause: error });
    }
  }
  const cluster = config.getCurrentCluster();
  if (!cluster) {
    throw new LeafmeshError("CONFIG_INVALID", `--kubeconfig: ${typeof input === "string" ? input : "the kubeconfig"} has no current cluster (set current-context to a context with a cluster)`);
  }
  if (!/^https?:\/\//.test(cluster.server)) {
    throw new LeafmeshError("CONFIG_INVALID", `--kubeconfig: cluster '${cluster.name}' has server '${cluster.server}', expected an http:// or https:// URL`);
  }
  if (!cluster.server.startsWith("http:") || cluster.skipTLSVerify) return config;
  const copy = new KubeConfig();
  copy.loadFromOptions({
    clusters: config.clusters.map((entry) => (entry.name === cluster.name ? { ...entry, skipTLSVerify: true } : entry)),
    users: config.users,
    contexts: config.contexts,
    currentContext: config.getCurrentContext(),
  });
  return copy;
}
