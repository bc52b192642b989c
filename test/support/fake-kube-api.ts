/**
 * A small real Kubernetes API server for tests (node:http), speaking the real
 * list/watch wire format for the resources leafmesh reads: core/v1 Services,
 * discovery.k8s.io/v1 EndpointSlices and, when enabled, networking.istio.io
 * DestinationRules, Gateways and VirtualServices, the Gateway API's Gateways and
 * routes, and core/v1 Secrets (with the `type=` field selector). Everything else
 * answers 404 with a Status object, as the real API server does for a resource
 * it does not serve.
 *
 * It keeps one resourceVersion counter for all resources (like etcd's revision),
 * a history of events for watch resumes, and test levers that the real server
 * pulls by itself: `compact()` (history forgotten: a resume gets ERROR 410),
 * `dropWatches()` (streams closed: the client must resume), `bookmark()`
 * (a BOOKMARK to every watch that asked for them), `stop()`/`start()` (the API
 * unreachable, then back on the same port with the same state).
 *
 * ```ts
 * const api = await FakeKubeApi.start();
 * api.apply({ apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: "demo" }, spec: { ... } });
 * const kubeconfig = api.writeKubeconfig(dir); // server: http://127.0.0.1:PORT, no credentials (like KubeEdge's MetaServer)
 * api.requests.filter((r) => r.watch && r.resource === "services");
 * await api.close();
 * ```
 */
import { writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTlsServer } from "node:https";
import { join } from "node:path";

export type FakeResource = "services" | "endpointslices" | "destinationrules" | "gateways" | "virtualservices" | "httproutes" | "tcproutes" | "tlsroutes" | "secrets";

interface ResourceInfo {
  resource: FakeResource;
  kind: string;
  listKind: string;
  /** "" for the core group. */
  group: string;
  versions: string[];
  /** Which option makes the fake serve it; undefined: always served. */
  servedWith?: "istio" | "istioGateways" | "gatewayApi" | "secrets";
}

const istio = "networking.istio.io";
const gatewayApi = "gateway.networking.k8s.io";
const resourceInfos: ResourceInfo[] = [
  { resource: "services", kind: "Service", listKind: "ServiceList", group: "", versions: ["v1"] },
  { resource: "endpointslices", kind: "EndpointSlice", listKind: "EndpointSliceList", group: "discovery.k8s.io", versions: ["v1"] },
  { resource: "destinationrules", kind: "DestinationRule", listKind: "DestinationRuleList", group: istio, versions: ["v1", "v1beta1", "v1alpha3"], servedWith: "istio" },
  { resource: "gateways", kind: "Gateway", listKind: "GatewayList", group: istio, versions: ["v1", "v1beta1", "v1alpha3"], servedWith: "istioGateways" },
  { resource: "virtualservices", kind: "VirtualService", listKind: "VirtualServiceList", group: istio, versions: ["v1", "v1beta1", "v1alpha3"], servedWith: "istioGateways" },
  { resource: "gateways", kind: "Gateway", listKind: "GatewayList", group: gatewayApi, versions: ["v1", "v1beta1"], servedWith: "gatewayApi" },
  { resource: "httproutes", kind: "HTTPRoute", listKind: "HTTPRouteList", group: gatewayApi, versions: ["v1", "v1beta1"], servedWith: "gatewayApi" },
  { resource: "tcproutes", kind: "TCPRoute", listKind: "TCPRouteList", group: gatewayApi, versions: ["v1alpha2"], servedWith: "gatewayApi" },
  { resource: "tlsroutes", kind: "TLSRoute", listKind: "TLSRouteList", group: gatewayApi, versions: ["v1alpha3", "v1alpha2"], servedWith: "gatewayApi" },
  { resource: "secrets", kind: "Secret", listKind: "SecretList", group: "", versions: ["v1"], servedWith: "secrets" },
];

/** Where the fake keeps a resource's objects: two resources are called gateways. */
const idOf = (info: ResourceInfo) => (info.group ? `${info.resource}.${info.group}` : info.resource);

/** The resource of a kind; `group` tells Istio's Gateway from the Gateway API's (from an apiVersion, or given). */
function infoOf(kind: string, group?: string): ResourceInfo | undefined {
  const matches = resourceInfos.filter((info) => info.kind === kind);
  return matches.length === 1 ? matches[0] : matches.find((info) => info.group === group);
}

const groupOf = (apiVersion: unknown) => (typeof apiVersion === "string" && apiVersion.includes("/") ? apiVersion.slice(0, apiVersion.indexOf("/")) : "");

/** What a list or watch's `fieldSelector` keeps (the fake knows the one leafmesh asks: a Secret's type). */
function selects(object: KubeObject, fieldSelector: string | null): boolean {
  if (!fieldSelector) return true;
  return fieldSelector.split(",").every((term) => {
    const [field, value] = term.split("=");
    return field === "type" ? object.type === value : true;
  });
}

export interface FakeKubeApiOptions {
  /** @default 0 (any free port) */
  port?: number;
  /** Serve networking.istio.io DestinationRules. @default false — most clusters and MetaServer have no Istio. */
  istio?: boolean;
  /** Serve networking.istio.io Gateways and VirtualServices. @default false */
  istioGateways?: boolean;
  /** Serve the Gateway API (gateway.networking.k8s.io Gateways, HTTPRoutes, TCPRoutes, TLSRoutes). @default false */
  gatewayApi?: boolean;
  /** Serve core/v1 Secrets (a real API always does; the default keeps the other tests' watch counts). @default false */
  secrets?: boolean;
  /** Serve https with this key and certificate (PEM) instead of plain http, as a real API server does. */
  tls?: { key: string; cert: string };
  /** Require `Authorization: Bearer <token>`; anything else gets 401 like a real API server. */
  token?: string;
  /**
   * Behave like KubeEdge's MetaServer (edge/pkg/metamanager/metaserver/kubernetes/storage/sqlite/watcher.go):
   * a watch ignores its resourceVersion ("base storage now only support rev == 0"), replays every current object
   * as ADDED and then follows; it never answers 410. @default false
   */
  metaServer?: boolean;
}

/** One request the fake answered, for assertions (a resume did not relist, a 410 did). */
export interface FakeRequest {
  resource: FakeResource;
  /** The resource's API group ("" for core): two resources are called gateways. */
  group: string;
  fieldSelector?: string;
  namespace?: string;
  watch: boolean;
  resourceVersion?: string;
  /** A list's page size and continue token, when given. */
  limit?: string;
  continue?: string;
  allowWatchBookmarks: boolean;
  /** The HTTP status answered (a watch's 410 comes as an ERROR event on a 200 stream but is recorded as 410); 0 when stalled. */
  status: number;
}

type KubeObject = { apiVersion?: string; kind?: string; metadata: { name: string; namespace?: string; resourceVersion?: string; uid?: string; [key: string]: unknown }; [key: string]: unknown };

interface HistoryEvent {
  resourceVersion: number;
  /** idOf the resource. */
  resource: string;
  namespace: string;
  type: "ADDED" | "MODIFIED" | "DELETED";
  object: KubeObject;
}

interface OpenWatch {
  /** The resource's id (idOf): two resources are called gateways. */
  resource: string;
  /** The watch's fieldSelector: events of objects it does not select are not sent. */
  fieldSelector: string | null;
  namespace?: string;
  bookmarks: boolean;
  apiVersion: string;
  kind: string;
  response: ServerResponse;
  /** Silent for good: no events, no end (see `freezeWatches`). */
  frozen?: boolean;
}

export class FakeKubeApi {
  readonly options: FakeKubeApiOptions;
  readonly requests: FakeRequest[] = [];
  #port = 0;
  #server: Server | undefined;
  #resourceVersion = 100;
  /** Resume requests below this resourceVersion get 410 Gone. */
  #compactedBefore = 0;
  #objects = new Map<string, KubeObject>();
  #history: HistoryEvent[] = [];
  #watches = new Set<OpenWatch>();
  #uid = 0;
  #failWith: number | undefined;
  #failResource: FakeResource | undefined;
  #failRetryAfter: number | undefined;
  #stalled = false;
  #listSnapshots = new Map<string, { resourceVersion: string; items: object[] }>();
  #listSnapshotId = 0;
  #expireEveryWatch = false;
  #expireContinueTokens = 0;
  #garbleNextEvent = false;

  private constructor(options: FakeKubeApiOptions) {
    this.options = options;
  }

  static async start(options: FakeKubeApiOptions = {}): Promise<FakeKubeApi> {
    const api = new FakeKubeApi(options);
    api.#port = options.port ?? 0;
    await api.start();
    return api;
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return `${this.options.tls ? "https" : "http"}://127.0.0.1:${this.#port}`;
  }

  get resourceVersion(): string {
    return String(this.#resourceVersion);
  }

  get openWatches(): number {
    return this.#watches.size;
  }

  /** Listens again (same port, same objects) after `stop()`. */
  async start(): Promise<void> {
    if (this.#server) return;
    const handler = (request: IncomingMessage, response: ServerResponse) => this.#handle(request, response);
    const server: Server = this.options.tls ? createTlsServer({ key: this.options.tls.key, cert: this.options.tls.cert }, handler) : createServer(handler);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    const address = server.address();
    this.#port = typeof address === "object" && address ? address.port : this.#port;
    this.#server = server;
  }

  /** The API unreachable: the port closed, every connection (watches too) cut. Objects and history stay. */
  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = undefined;
    this.#watches.clear();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  async close(): Promise<void> {
    await this.stop();
  }

  /**
   * A kubeconfig for this server; returns its path. Plain http and no
   * credentials is what KubeEdge's MetaServer needs; with `tls` it trusts the
   * server's certificate, with a token (the server's own unless given) it sends it.
   */
  writeKubeconfig(directory: string, file = "kubeconfig", credentials: { token?: string } = {}): string {
    const path = join(directory, file);
    const token = credentials.token ?? this.options.token;
    const lines = ["apiVersion: v1", "kind: Config", "clusters:", "- name: fake", "  cluster:", `    server: ${this.url}`];
    if (this.options.tls) lines.push(`    certificate-authority-data: ${Buffer.from(this.options.tls.cert).toString("base64")}`);
    lines.push("contexts:", "- name: fake", "  context:", "    cluster: fake");
    if (token) lines.push("    user: fake");
    lines.push("current-context: fake");
    if (token) lines.push("users:", "- name: fake", "  user:", `    token: ${token}`);
    writeFileSync(path, `${lines.join("\n")}\n`);
    return path;
  }

  /** Creates or replaces an object (kind and apiVersion as in a manifest); returns its new resourceVersion. */
  apply(raw: object): string {
    const object = structuredClone(raw) as KubeObject;
    const info = infoOf(String(object.kind), groupOf(object.apiVersion));
    if (!info) throw new Error(`the fake API does not serve kind ${String(object.kind)}`);
    if (!object.metadata?.name) throw new Error("the fake API needs metadata.name");
    const namespace = object.metadata.namespace ?? "default";
    object.metadata.namespace = namespace;
    const key = objectKey(idOf(info), namespace, object.metadata.name);
    const previous = this.#objects.get(key);
    object.metadata.uid = previous?.metadata.uid ?? `uid-${++this.#uid}`;
    object.metadata.resourceVersion = String(++this.#resourceVersion);
    this.#objects.set(key, object);
    this.#record({ resourceVersion: this.#resourceVersion, resource: idOf(info), namespace, type: previous ? "MODIFIED" : "ADDED", object });
    return object.metadata.resourceVersion;
  }

  /** Deletes an object; false when there was none. `group` tells Istio's Gateway from the Gateway API's. */
  delete(kind: string, namespace: string, name: string, group?: string): boolean {
    const info = infoOf(kind, group);
    if (!info) throw new Error(`the fake API does not serve kind ${kind}`);
    const key = objectKey(idOf(info), namespace, name);
    const previous = this.#objects.get(key);
    if (!previous) return false;
    this.#objects.delete(key);
    // A DELETED event carries the object's last state with the deletion's resourceVersion.
    const object = { ...structuredClone(previous), metadata: { ...previous.metadata, resourceVersion: String(++this.#resourceVersion) } };
    this.#record({ resourceVersion: this.#resourceVersion, resource: idOf(info), namespace, type: "DELETED", object });
    return true;
  }

  /**
   * Forgets the history: a watch resuming from any resourceVersion handed out so
   * far gets ERROR 410 Gone. The resourceVersion moves on by one, so a fresh
   * list returns a version a watch can start from again.
   */
  compact(): void {
    this.#history = [];
    this.#compactedBefore = ++this.#resourceVersion;
  }

  /** Closes every open watch stream cleanly, as the API server does at its watch timeout. */
  dropWatches(): void {
    for (const watch of this.#watches) watch.response.end();
    this.#watches.clear();
  }

  /** Leaves every open watch stream open but silent for good, neither events nor an end: a connection that died without a FIN. */
  freezeWatches(): void {
    for (const watch of this.#watches) watch.frozen = true;
    this.#watches.clear();
  }

  /** Sends a BOOKMARK with the current resourceVersion to every watch that allowed bookmarks. */
  bookmark(): number {
    let sent = 0;
    for (const watch of this.#watches) {
      if (!watch.bookmarks) continue;
      writeEvent(watch.response, "BOOKMARK", { apiVersion: watch.apiVersion, kind: watch.kind, metadata: { resourceVersion: this.resourceVersion } });
      sent++;
    }
    return sent;
  }

  /**
   * Answers every request (or those for one resource) with this HTTP status and a Status object (403, 429, 500, 503…)
   * until called with undefined; with `retryAfterSeconds`, a Retry-After header too (as priority and fairness sends with 429).
   */
  failWith(code: number | undefined, resource?: FakeResource, retryAfterSeconds?: number): void {
    this.#failWith = code;
    this.#failResource = resource;
    this.#failRetryAfter = retryAfterSeconds;
  }

  /** Answers every watch with ERROR 410, even one from a fresh list (a server whose history is shorter than a list takes). */
  expireEveryWatch(on: boolean): void {
    this.#expireEveryWatch = on;
  }

  /** Answers the next `count` list pages asked for with a continue token with 410, as after a compaction in the middle of a paged list. */
  expireContinueTokens(count: number): void {
    this.#expireContinueTokens = count;
  }

  /**
   * Sends the next event to open watches cut in half (a line that is not JSON), as a broken proxy might; the history
   * keeps it whole, so a watch resumed from before it gets it right.
   */
  garbleNextEvent(): void {
    this.#garbleNextEvent = true;
  }

  /** Accepts requests and never answers them (a hung API server or proxy) until called with false. */
  stall(on: boolean): void {
    this.#stalled = on;
  }

  /** Advances the resourceVersion without touching an object (other resources of a real cluster do this all the time). */
  bumpResourceVersion(by = 1): string {
    this.#resourceVersion += by;
    return this.resourceVersion;
  }

  count(resource: FakeResource, what: "list" | "watch"): number {
    return this.requests.filter((request) => request.resource === resource && request.watch === (what === "watch")).length;
  }

  #record(event: HistoryEvent): void {
    this.#history.push(event);
    const garble = this.#garbleNextEvent;
    this.#garbleNextEvent = false;
    for (const watch of this.#watches) {
      if (watch.resource !== event.resource || (watch.namespace && watch.namespace !== event.namespace) || !selects(event.object, watch.fieldSelector)) continue;
      const line = JSON.stringify({ type: event.type, object: this.#wireObject(event.object, watch.apiVersion) });
      if (garble) watch.response.write(`${line.slice(0, line.length / 2)}\n`);
      else watch.response.write(`${line}\n`);
    }
  }

  #wireObject(object: KubeObject, apiVersion: string): KubeObject {
    // Istio and the Gateway API serve every version of their kinds; the object says which one was asked for.
    return apiVersion.includes("/") && !apiVersion.startsWith("discovery.k8s.io/") ? { ...object, apiVersion } : object;
  }

  #handle(request: IncomingMessage, response: ServerResponse): void {
    if (this.options.token && request.headers.authorization !== `Bearer ${this.options.token}`) {
      sendStatus(response, 401, "Unauthorized", "Unauthorized");
      return;
    }
    const url = new URL(request.url ?? "/", "http://fake");
    const group = /^\/apis\/([^/]+)\/?$/.exec(url.pathname)?.[1];
    if (request.method === "GET" && group !== undefined) {
      // Discovery of one group (an APIGroup), as a real server answers it: 404 when none of its kinds is served.
      const versions = [...new Set(resourceInfos.filter((info) => info.group === group && (!info.servedWith || this.options[info.servedWith])).flatMap((info) => info.versions))];
      if (versions.length === 0) sendStatus(response, 404, "NotFound", "the server could not find the requested resource");
      else sendJson(response, 200, { kind: "APIGroup", apiVersion: "v1", name: group, versions: versions.map((version) => ({ groupVersion: `${group}/${version}`, version })), preferredVersion: { groupVersion: `${group}/${versions[0]}`, version: versions[0] } });
      return;
    }
    const route = this.#route(url.pathname);
    if (request.method !== "GET" || !route) {
      sendStatus(response, 404, "NotFound", `the server could not find the requested resource (${request.method} ${url.pathname})`);
      return;
    }
    const watch = url.searchParams.get("watch") === "true" || url.searchParams.get("watch") === "1";
    const resourceVersion = url.searchParams.get("resourceVersion") ?? undefined;
    const allowWatchBookmarks = url.searchParams.get("allowWatchBookmarks") === "true";
    const failWith = this.#failResource === undefined || this.#failResource === route.info.resource ? this.#failWith : undefined;
    const entry: FakeRequest = {
      resource: route.info.resource,
      group: route.info.group,
      ...(url.searchParams.has("fieldSelector") ? { fieldSelector: url.searchParams.get("fieldSelector")! } : {}),
      namespace: route.namespace,
      watch,
      resourceVersion,
      allowWatchBookmarks,
      ...(url.searchParams.has("limit") ? { limit: url.searchParams.get("limit")! } : {}),
      ...(url.searchParams.has("continue") ? { continue: url.searchParams.get("continue")! } : {}),
      status: failWith ?? 200,
    };
    this.requests.push(entry);
    if (this.#stalled) {
      entry.status = 0;
      return;
    }
    if (failWith !== undefined) {
      if (this.#failRetryAfter !== undefined) response.setHeader("Retry-After", String(this.#failRetryAfter));
      const reason = failWith === 403 ? "Forbidden" : failWith === 429 ? "TooManyRequests" : "ServiceUnavailable";
      sendStatus(response, failWith, reason, `the fake API was told to fail with ${failWith}`);
      return;
    }
    const apiVersion = route.info.group ? `${route.info.group}/${route.version}` : route.version;
    const fieldSelector = url.searchParams.get("fieldSelector");
    if (!watch) {
      // Pages (limit/continue) come from one snapshot, as the real server serves them from one etcd revision.
      const token = url.searchParams.get("continue");
      let snapshot: { resourceVersion: string; items: object[] };
      let offset = 0;
      if (token) {
        const [id, from] = token.split(":");
        const kept = this.#listSnapshots.get(id);
        const forcedExpiry = this.#expireContinueTokens > 0;
        if (forcedExpiry) this.#expireContinueTokens--;
        if (!kept || Number(kept.resourceVersion) < this.#compactedBefore || forcedExpiry) {
          entry.status = 410;
          sendStatus(response, 410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.");
          return;
        }
        snapshot = kept;
        offset = Number(from);
      } else {
        const items = [...this.#objects.entries()]
          .filter(([key, object]) => key.startsWith(`${idOf(route.info)}/${route.namespace ? `${route.namespace}/` : ""}`) && selects(object, fieldSelector))
          .sort(([a], [b]) => a.localeCompare(b))
          // A real list leaves kind and apiVersion out of its items: the list's kind says them.
          .map(([, object]) => {
            const { kind: _kind, apiVersion: _apiVersion, ...rest } = structuredClone(object);
            return rest;
          });
        snapshot = { resourceVersion: this.resourceVersion, items };
      }
      const limit = Number(url.searchParams.get("limit") ?? "0");
      const end = limit > 0 ? Math.min(snapshot.items.length, offset + limit) : snapshot.items.length;
      const metadata: { resourceVersion: string; continue?: string } = { resourceVersion: snapshot.resourceVersion };
      if (end < snapshot.items.length) {
        const id = token?.split(":")[0] ?? String(++this.#listSnapshotId);
        this.#listSnapshots.set(id, snapshot);
        metadata.continue = `${id}:${end}`;
      }
      sendJson(response, 200, { kind: route.info.listKind, apiVersion, metadata, items: snapshot.items.slice(offset, end) });
      return;
    }

    response.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked" });
    response.flushHeaders();
    const requested = resourceVersion === undefined || resourceVersion === "" || resourceVersion === "0" ? undefined : Number(resourceVersion);
    if (this.options.metaServer) {
      const open: OpenWatch = { resource: idOf(route.info), namespace: route.namespace, bookmarks: false, apiVersion, kind: route.info.kind, response, fieldSelector };
      for (const [key, object] of [...this.#objects.entries()].sort(([a], [b]) => a.localeCompare(b))) {
        if (key.startsWith(`${idOf(route.info)}/${route.namespace ? `${route.namespace}/` : ""}`) && selects(object, fieldSelector)) writeEvent(response, "ADDED", this.#wireObject(object, apiVersion));
      }
      this.#watches.add(open);
      response.on("close", () => this.#watches.delete(open));
      return;
    }
    if (this.#expireEveryWatch || (requested !== undefined && (!Number.isFinite(requested) || requested < this.#compactedBefore))) {
      entry.status = 410;
      writeEvent(response, "ERROR", {
        kind: "Status",
        apiVersion: "v1",
        metadata: {},
        status: "Failure",
        message: `too old resource version: ${resourceVersion} (${this.#compactedBefore})`,
        reason: "Expired",
        code: 410,
      });
      response.end();
      return;
    }
    const open: OpenWatch = { resource: idOf(route.info), namespace: route.namespace, bookmarks: allowWatchBookmarks, apiVersion, kind: route.info.kind, response, fieldSelector };
    if (requested !== undefined) {
      for (const event of this.#history) {
        if (event.resourceVersion <= requested || event.resource !== open.resource || (open.namespace && open.namespace !== event.namespace) || !selects(event.object, fieldSelector)) continue;
        writeEvent(response, event.type, this.#wireObject(event.object, apiVersion));
      }
    }
    this.#watches.add(open);
    const timeoutSeconds = Number(url.searchParams.get("timeoutSeconds") ?? "0");
    const timer = timeoutSeconds > 0 ? setTimeout(() => open.frozen || response.end(), timeoutSeconds * 1000) : undefined;
    response.on("close", () => {
      clearTimeout(timer);
      this.#watches.delete(open);
    });
  }

  #route(pathname: string): { info: ResourceInfo; version: string; namespace?: string } | undefined {
    const parts = pathname.split("/").filter(Boolean);
    let group = "";
    let version: string;
    let rest: string[];
    if (parts[0] === "api" && parts.length >= 3) {
      version = parts[1];
      rest = parts.slice(2);
    } else if (parts[0] === "apis" && parts.length >= 4) {
      group = parts[1];
      version = parts[2];
      rest = parts.slice(3);
    } else {
      return undefined;
    }
    let namespace: string | undefined;
    if (rest[0] === "namespaces" && rest.length === 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    if (rest.length !== 1) return undefined;
    const info = resourceInfos.find((candidate) => candidate.resource === rest[0] && candidate.group === group && candidate.versions.includes(version));
    if (!info || (info.servedWith && !this.options[info.servedWith])) return undefined;
    return { info, version, namespace };
  }
}

function objectKey(resource: string, namespace: string, name: string): string {
  return `${resource}/${namespace}/${name}`;
}

function writeEvent(response: ServerResponse, type: string, object: object): void {
  response.write(`${JSON.stringify({ type, object })}\n`);
}

function sendJson(response: ServerResponse, status: number, body: object): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  response.end(text);
}

function sendStatus(response: ServerResponse, code: number, reason: string, message: string): void {
  sendJson(response, code, { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code });
}
