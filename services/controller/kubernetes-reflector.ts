/**
 * The list/watch loop of one Kubernetes resource, the job client-go's Reflector
 * does: list (in pages), watch from the list's resourceVersion with BOOKMARKs,
 * resume from the last resourceVersion when the stream ends, relist on 410
 * Gone, back off with jitter while the API fails, look again now and then for
 * an optional API that is not installed, and relist after every watch on a
 * server that replays instead of resuming (KubeEdge's MetaServer). What it
 * holds lives in a ResourceStore (kubernetes-store.ts), the HTTP in
 * kubernetes-client.ts, what a resource is and where it lives in
 * kubernetes-store.ts, its status and absence in kubernetes-reflector-report.ts; the source
 * (kubernetes-source.ts) runs one per resource.
 *
 * ```ts
 * const reflector = new Reflector({ resource: "services", kind: "Service", group: "", versions: ["v1"], optional: false }, host);
 * await reflector.start(); // after the first attempt to list, good or not
 * reflector.status();      // { state: "watching", resourceVersion, lists, watches, expired, ... }
 * ```
 */
import { createActor, setup } from "xstate";
import type { CatalogObject } from "../../bus/catalog.ts";
import type { Clock } from "../../lib/clock.ts";
import { describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { apiStatus, explainFailure, KubernetesApiError } from "./kubernetes-client.ts";
import { sayAbsent, type AbsenceHost, type KubernetesResourceStatus, type ReflectorState } from "./kubernetes-reflector-report.ts";
import { apiVersionOf, qualifiedResource, resourcePath, ResourceStore, selectorQuery, withKind, type RawObject, type Refusal, type ResourceSpec } from "./kubernetes-store.ts";

/** How a reflector reads, every value resolved: KubernetesSourceOptions documents each one and its default. */
export interface ReflectorSettings {
  /** undefined: all namespaces. */
  namespace: string | undefined;
  retryInitialMs: number;
  retryMaxMs: number;
  /** Asked of the server per watch; a watch open a quarter longer is taken for dead. */
  watchTimeoutSeconds: number;
  optionalRecheckMs: number;
  pageSize: number;
}

export type { KubernetesResourceStatus, ReflectorState } from "./kubernetes-reflector-report.ts";

/** What a reflector needs of its source (its log, client and absent groups: AbsenceHost): handed in, so the source keeps no public internals. */
export interface ReflectorHost extends AbsenceHost {
  clock: Clock;
  settings: ReflectorSettings;
  /** After a list: everything this resource held before, and everything it holds now. */
  replaceAll(before: CatalogObject[], after: CatalogObject[]): void;
  /** After a watch event: one object added, changed or gone. */
  replaceOne(before: CatalogObject | undefined, after: CatalogObject | undefined): void;
  reject(refusal: Refusal): void;
  /** A resource counts as synced without a list (an optional API that refused): announce the catalog if all are. */
  synced(): void;
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

/** How one watch stream ended: history gone (relist), failed, or ended by the server (healthy unless at once and empty). */
type WatchOutcome = { expired: true } | { notServed: true } | { error: unknown } | { healthy: boolean };

export class Reflector {
  readonly spec: ResourceSpec;
  readonly #host: ReflectorHost;
  readonly #store: ResourceStore;
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
  readonly #counters = { lists: 0, watches: 0, expired: 0, failures: 0 };
  readonly #machine = createActor(reflectorMachine);
  #loop: Promise<void> | undefined;
  #firstAttempt: { promise: Promise<void>; resolve: () => void };
  #wake: (() => void) | undefined;
  #sleepTimer: unknown;
  /** Ends the list or watch request in flight. */
  #inFlight: AbortController | undefined;

  constructor(spec: ResourceSpec, host: ReflectorHost) {
    this.spec = spec;
    this.#host = host;
    this.#store = new ResourceStore((refusal) => host.reject(refusal));
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
    this.#inFlight?.abort();
    this.#host.clock.clearTimeout(this.#sleepTimer);
    this.#wake?.();
    this.#firstAttempt.resolve();
    await this.#loop;
  }

  status(): KubernetesResourceStatus {
    return {
      resource: this.spec.resource,
      group: this.spec.group,
      state: this.#machine.getSnapshot().value as ReflectorState,
      synced: this.#synced,
      resourceVersion: this.#resourceVersion,
      ...(this.#version ? { apiVersion: apiVersionOf(this.spec, this.#version) } : {}),
      objects: this.#store.size,
      ...this.#counters,
      rejected: this.#store.rejected,
      ...(this.#lastError && this.#failures > 0 ? { lastError: this.#lastError } : {}),
    };
  }

  get #log(): Logger {
    return this.#host.log;
  }

  get #settings(): ReflectorSettings {
    return this.#host.settings;
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
          await this.#sleep(this.#settings.optionalRecheckMs);
          this.#resourceVersion = "";
          continue;
        }
        this.#machine.send({ type: "WATCH" });
        this.#counters.watches++;
        const outcome = await this.#watch();
        if ("expired" in outcome || "notServed" in outcome) {
          // 404: its CRD was removed, and only a list empties it (resuming would keep its objects, failing for ever).
          const expired = "expired" in outcome;
          if (expired) this.#counters.expired++;
          this.#log.info({ resource: this.spec.resource, resourceVersion: this.#resourceVersion }, expired ? "watch resourceVersion expired (410 Gone); relisting" : `the API no longer serves ${this.spec.kind}s (404 on the watch); relisting`);
          this.#resourceVersion = "";
          // Expired straight after a list (the server's history is shorter than a list takes), or gone: relisting at once would spin.
          if (listed || !expired) {
            this.#quickEnds++;
            this.#machine.send({ type: "WAIT" });
            await this.#sleep(this.#backoff());
          }
          continue;
        }
        if ("error" in outcome) throw outcome.error;
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
        await this.#failed(error);
      }
    }
    this.#machine.send({ type: "STOP" });
  }

  /** A request failed: count it, say why (once at warn, then at debug), and wait before the next. */
  async #failed(error: unknown): Promise<void> {
    this.#failures++;
    this.#counters.failures++;
    const reason = explainFailure(error, qualifiedResource(this.spec));
    // With nothing to add to the error (a timeout), the reason is its message: said once.
    this.#lastError = reason === describeError(error) ? reason : `${reason}: ${describeError(error)}`;
    // An optional resource the API answers with an error (RBAC without Istio's group, a MetaServer that cannot serve it)
    // must not hold the Services back: it counts as synced with what it holds (nothing, the first time).
    const passOver = this.spec.optional && apiStatus(error) !== undefined && !this.#synced;
    if (passOver) {
      this.#synced = true;
      this.#host.synced();
    }
    this.#firstAttempt.resolve();
    this.#machine.send({ type: "WAIT" });
    // A server that said when to come back (429 Too Many Requests, 503 with Retry-After) is not asked sooner, within retryMaxMs.
    const asked = error instanceof KubernetesApiError ? error.retryAfterMs : undefined;
    const delay = Math.max(this.#backoff(), Math.min(asked ?? 0, this.#settings.retryMaxMs));
    const fields = { resource: this.spec.resource, server: this.#host.client.server, attempt: this.#failures, retryInMs: Math.round(delay), ...(asked !== undefined ? { retryAfterMs: asked } : {}), err: describeError(error) };
    const consequence = passOver ? `going on without ${this.spec.kind}s and retrying` : "keeping the last catalog and retrying";
    if (this.#failures === 1) this.#log.warn(fields, `Kubernetes API request failed (${reason}); ${consequence}`);
    else this.#log.debug(fields, "Kubernetes API still failing");
    await this.#sleep(delay);
  }

  #backoff(): number {
    const { retryInitialMs: initial, retryMaxMs: max } = this.#settings;
    const attempts = this.#failures + this.#quickEnds;
    const base = Math.min(max, initial * 2 ** Math.min(30, Math.max(0, attempts - 1)));
    // Jitter: a fleet of hubs cut off together must not come back in lockstep.
    return base * (0.8 + Math.random() * 0.4);
  }

  #sleep(ms: number): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
      this.#sleepTimer = this.#host.clock.setTimeout(resolve, ms);
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
        if (apiStatus(error) === 404 && this.spec.optional) continue;
        throw error;
      }
    }
    if (!found) {
      // Not installed here: the same as an empty list, so a removed CRD also removes its objects.
      if (!this.#absent) await this.#sayAbsent();
      this.#absent = true;
      this.#version = undefined;
      this.#replace([], "");
      return;
    }
    if (this.#absent || (this.spec.optional && this.#version === undefined)) {
      this.#log.info({ resource: this.spec.resource, version: found.version }, `reading ${this.spec.kind}s from ${apiVersionOf(this.spec, found.version)}`);
    }
    this.#absent = false;
    this.#host.absentGroups.delete(this.spec.group);
    this.#version = found.version;
    this.#replace(found.items, found.version);
    this.#resourceVersion = found.resourceVersion;
  }

  /** Says once that this resource (or its group) is not served: kubernetes-reflector-report.ts. */
  async #sayAbsent(): Promise<void> {
    const abort = new AbortController();
    this.#inFlight = abort;
    try {
      await sayAbsent(this.spec, this.#host, abort.signal);
    } finally {
      if (this.#inFlight === abort) this.#inFlight = undefined;
    }
  }

  async #listPages(version: string): Promise<{ version: string; items: RawObject[]; resourceVersion: string }> {
    const abort = new AbortController();
    this.#inFlight = abort;
    this.#counters.lists++;
    try {
      const list = await this.#host.client.list(resourcePath(this.spec, version, this.#settings.namespace), {
        pageSize: this.#settings.pageSize,
        query: selectorQuery(this.spec),
        signal: abort.signal,
        onRestart: () => {
          this.#counters.lists++;
          this.#log.info({ resource: this.spec.resource }, "list continue token expired (410 Gone); listing again from the start");
        },
      });
      return { version, items: list.items as RawObject[], resourceVersion: list.resourceVersion };
    } finally {
      if (this.#inFlight === abort) this.#inFlight = undefined;
    }
  }

  #replace(items: RawObject[], version: string): void {
    const { before, after } = this.#store.replace(items.map((item) => withKind(item, apiVersionOf(this.spec, version), this.spec.kind)));
    this.#synced = true;
    this.#host.replaceAll(before, after);
  }

  /** One watch stream, from #resourceVersion until it ends: the server ends it, a 410 asks for a relist, a failure for a backoff. */
  async #watch(): Promise<WatchOutcome> {
    const clock = this.#host.clock;
    const version = this.#version ?? this.spec.versions[0];
    const startedAt = clock.monotonic();
    const resumedFrom = this.#resourceVersion;
    const timeoutSeconds = this.#settings.watchTimeoutSeconds;
    const abort = new AbortController();
    this.#inFlight = abort;
    let sawEvent = false;
    try {
      const ended = await this.#host.client.watch(
        resourcePath(this.spec, version, this.#settings.namespace),
        { resourceVersion: this.#resourceVersion, allowWatchBookmarks: true, timeoutSeconds, ...selectorQuery(this.spec) },
        {
          signal: abort.signal,
          // The server ends the watch at timeoutSeconds; one still open a quarter later is a connection that died without a word.
          deadlineMs: timeoutSeconds * 1_250 + 1_000,
          onOpen: () => this.#watchOpened(),
          onEvent: (type, object) => {
            sawEvent = true;
            this.#onEvent(type, object as RawObject, version, resumedFrom);
          },
        },
      );
      if (ended === "deadline") this.#log.info({ resource: this.spec.resource, timeoutSeconds }, "watch outlived its timeout: the connection is taken for dead; resuming");
    } catch (error) {
      if (apiStatus(error) === 410) return { expired: true };
      if (apiStatus(error) === 404) return { notServed: true };
      if (!this.#stopped) return { error };
    } finally {
      if (this.#inFlight === abort) this.#inFlight = undefined;
    }
    // Ended by the server (or given up as dead): healthy unless it ended at once with nothing on it.
    return { healthy: sawEvent || clock.monotonic() - startedAt >= 1_000 };
  }

  #onEvent(type: string, object: RawObject, version: string, resumedFrom: string): void {
    const resourceVersion = object?.metadata?.resourceVersion;
    if (type === "BOOKMARK") {
      if (resourceVersion) this.#resourceVersion = resourceVersion;
      return;
    }
    if (type !== "ADDED" && type !== "MODIFIED" && type !== "DELETED") return;
    const raw = withKind(object, apiVersionOf(this.spec, version), this.spec.kind);
    // A server that resumes from a resourceVersion never sends again a version the client holds. KubeEdge's
    // MetaServer does: it ignores the resourceVersion and replays every object as ADDED. Resuming there would
    // miss what was deleted meanwhile, so from now on every watch that ends is followed by a list.
    if (resumedFrom && type !== "DELETED" && !this.#replaysOnResume && this.#store.hasSeen(raw)) {
      this.#replaysOnResume = true;
      this.#log.info({ resource: this.spec.resource, resourceVersion: resumedFrom }, "the server replays every object instead of resuming a watch (as KubeEdge's MetaServer does); relisting after every watch so that deletions are not missed");
    }
    const change = this.#store.apply(type, raw);
    if (change) this.#host.replaceOne(change.before, change.after);
    if (resourceVersion) this.#resourceVersion = resourceVersion;
  }

  /** The server answered the watch: whatever failed before works again. */
  #watchOpened(): void {
    if (this.#failures > 0) this.#log.info({ resource: this.spec.resource, failures: this.#failures }, "Kubernetes API reachable again; watch resumed");
    this.#failures = 0;
  }
}
