/**
 * The Kubernetes API over HTTP, as the catalog source reads it, and nothing
 * more: the kubeconfig (server, TLS, credentials; KubeEdge's MetaServer is plain
 * http with none), a GET of one JSON document, a list read in pages (client-go's
 * pager), and a watch (a response that
 * streams one JSON event per line until the server ends it) with its two
 * deadlines. When to list, where to resume and how long to back off are the
 * reflector's (kubernetes-reflector.ts). Every failure is a
 * `KubernetesApiError`, with the HTTP status when the API answered one (a
 * watch's ERROR event included: 410 Gone is status 410), so callers branch on
 * the status, never on a message.
 *
 * ```ts
 * const client = new KubernetesClient(loadKubeconfig("/etc/kubeedge/metaserver.kubeconfig"), { requestTimeoutMs: 30_000, clock });
 * const { items, resourceVersion } = await client.list("/api/v1/services", { pageSize: 500, signal });
 * const ended = await client.watch("/api/v1/services", { resourceVersion: "42" }, { onOpen, onEvent, signal, deadlineMs }); // "server" | "deadline"
 * ```
 */
import type { IncomingMessage } from "node:http";
import { http } from "../../lib/node-http.ts";
import https from "node:https";
import { finished } from "node:stream/promises";
import { KubeConfig } from "@kubernetes/client-node";
import type { Clock } from "../../lib/clock.ts";
import { describeError, LeafmeshError } from "../../lib/errors.ts";

/** An answer of the API other than 200, or no answer: `status` is the HTTP status when the server gave one. */
export class KubernetesApiError extends LeafmeshError {
  readonly status: number | undefined;
  /** How long the server asked to be left alone (its Retry-After, on a 429 or a 503), in ms. */
  readonly retryAfterMs: number | undefined;

  constructor(message: string, options: { status?: number; cause?: unknown; retryAfterMs?: number } = {}) {
    super("KUBERNETES_FAILED", message, { cause: options.cause });
    this.name = "KubernetesApiError";
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
  }
}

/**
 * The wait a Retry-After header asks for (RFC 9110 §10.2.3: delay-seconds, or an HTTP date), in ms; undefined when
 * absent or unreadable. The API server's priority and fairness answers 429 with one, as client-go honours.
 */
export function retryAfterMs(header: string | string[] | undefined, now = Date.now()): number | undefined {
  const value = (Array.isArray(header) ? header[0] : header)?.trim();
  if (!value) return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1_000;
  // An HTTP date is a wall-clock time by definition: the wait is that date less the wall clock.
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** The HTTP status of a failed request, when the API answered one. */
export function apiStatus(error: unknown): number | undefined {
  return error instanceof KubernetesApiError ? error.status : undefined;
}

export interface WatchOptions {
  /** The server accepted the watch (200, headers received): events follow. */
  onOpen(): void;
  /** One event: ADDED, MODIFIED, DELETED or BOOKMARK (an ERROR event ends the watch with its status). */
  onEvent(type: string, object: unknown): void;
  /** Ends the watch; the promise then rejects with an AbortError. */
  signal: AbortSignal;
  /**
   * How long after it opened the watch is given up as a connection that died without a word (a NAT that forgot it, a
   * cut link): the server ends a watch at the timeoutSeconds it was asked, so one open well past it is dead.
   */
  deadlineMs: number;
}

/** The longest line a watch may send, in characters: one object of a few MB is possible, an endless line is a broken server. */
const maxWatchLineLength = 16 * 1024 * 1024;

export class KubernetesClient {
  /** The API server's URL, as the kubeconfig names it. */
  readonly server: string;
  readonly #kubeconfig: KubeConfig;
  readonly #requestTimeoutMs: number;
  readonly #clock: Clock;

  /** `requestTimeoutMs`: a GET silent that long fails, and so does a watch not answered within it. The watch deadlines run on `clock`. */
  constructor(kubeconfig: KubeConfig, options: { requestTimeoutMs: number; clock: Clock }) {
    this.#kubeconfig = kubeconfig;
    this.server = kubeconfig.getCurrentCluster()?.server ?? "";
    this.#requestTimeoutMs = options.requestTimeoutMs;
    this.#clock = options.clock;
  }

  /** GET of a JSON document; a request silent for `requestTimeoutMs` fails. */
  async get(path: string, signal?: AbortSignal): Promise<unknown> {
    const response = await this.#open(path, `GET ${path}`, { signal, idleTimeoutMs: this.#requestTimeoutMs });
    const text = await readText(response);
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new KubernetesApiError(`GET ${path}: the answer is not JSON`, { cause: error });
    }
  }

  /**
   * Lists `path` in pages of `pageSize` (limit and continue), all from one snapshot of the server. A continue token
   * outlives its snapshot when the list takes longer than the server keeps history (410 Gone): the list starts over,
   * at most three times, and `onRestart` is told each time. A list answers without kind and apiVersion in its items.
   * `query` adds parameters to every page's request (a `fieldSelector`).
   */
  async list(path: string, options: { pageSize: number; signal?: AbortSignal; onRestart?: () => void; query?: Record<string, string> }): Promise<{ items: unknown[]; resourceVersion: string }> {
    let items: unknown[] = [];
    let continueToken: string | undefined;
    let restarts = 0;
    // Bounded: each page is a request; a server returning `continue` forever would be a broken server, cut at 10,000 pages.
    for (let page = 0; page < 10_000; page++) {
      const query = new URLSearchParams({ ...options.query, limit: String(options.pageSize) });
      if (continueToken) query.set("continue", continueToken);
      let body: { items?: unknown[] | null; metadata?: { resourceVersion?: string; continue?: string } };
      try {
        body = (await this.get(`${path}?${query}`, options.signal)) as typeof body;
      } catch (error) {
        if (continueToken && apiStatus(error) === 410 && restarts < 3) {
          restarts++;
          options.onRestart?.();
          items = [];
          continueToken = undefined;
          continue;
        }
        throw error;
      }
      items.push(...(body?.items ?? []));
      continueToken = body?.metadata?.continue || undefined;
      if (!continueToken) return { items, resourceVersion: body?.metadata?.resourceVersion ?? "" };
    }
    throw new KubernetesApiError(`listing ${path} did not end after 10,000 pages`);
  }

  /**
   * Watches `path` from `query.resourceVersion`: resolves "server" when the server ends the stream and "deadline" when
   * it outlived `deadlineMs`; rejects with a KubernetesApiError when the answer does not come within the request
   * timeout, the server refuses (HTTP status, or an ERROR event's status: 410 when the history is gone), or the
   * connection is cut. A quiet watch is idle for minutes: no idle timeout here.
   */
  async watch(path: string, query: Record<string, string | number | boolean>, options: WatchOptions): Promise<"server" | "deadline"> {
    const search = new URLSearchParams({ watch: "true" });
    for (const [key, value] of Object.entries(query)) search.set(key, String(value));
    const what = `watch ${path}`;
    // Ends the request on the clock's deadlines; the signal passed in ends it too.
    const abort = new AbortController();
    const forward = () => abort.abort(options.signal.reason);
    options.signal.addEventListener("abort", forward, { once: true });
    if (options.signal.aborted) forward();
    let ended: "deadline" | KubernetesApiError | undefined;
    const endWith = (reason: "deadline" | KubernetesApiError) => {
      ended ??= reason;
      abort.abort();
    };
    let timer = this.#clock.setTimeout(() => endWith(new KubernetesApiError(`${what}: no answer within ${this.#requestTimeoutMs} ms`)), this.#requestTimeoutMs);
    try {
      const response = await this.#open(`${path}?${search}`, what, { signal: abort.signal });
      this.#clock.clearTimeout(timer);
      timer = this.#clock.setTimeout(() => endWith("deadline"), options.deadlineMs);
      options.onOpen();
      await this.#readEvents(response, what, options, endWith, abort.signal);
      if (ended === "deadline") return "deadline";
      if (ended) throw ended;
      return "server";
    } catch (error) {
      if (ended === "deadline") return "deadline";
      throw ended ?? error;
    } finally {
      this.#clock.clearTimeout(timer);
      options.signal.removeEventListener("abort", forward);
      abort.abort();
    }
  }

  /** Reads one event per line until the stream ends. */
  async #readEvents(response: IncomingMessage, what: string, options: WatchOptions, fail: (error: KubernetesApiError) => void, ended: AbortSignal): Promise<void> {
    // Decoded as UTF-8 across chunk boundaries.
    response.setEncoding("utf8");
    let partial = "";
    response.on("data", (chunk: string) => {
      partial += chunk;
      let newline: number;
      while (!ended.aborted && (newline = partial.indexOf("\n")) >= 0) {
        const line = partial.slice(0, newline).trim();
        partial = partial.slice(newline + 1);
        if (line) this.#deliver(line, what, options, fail);
      }
      if (partial.length > maxWatchLineLength) fail(new KubernetesApiError(`${what}: an event longer than ${maxWatchLineLength} characters`));
    });
    await finished(response);
    // The last event, should a server end the stream without a newline after it.
    const last = partial.trim();
    if (last && !ended.aborted) this.#deliver(last, what, options, fail);
  }

  /**
   * A line that is not an event ends the watch with an error: skipping it would lose an event for good, while the
   * caller resumes from the last event it had. Nothing the server sends escapes as an exception.
   */
  #deliver(line: string, what: string, options: WatchOptions, fail: (error: KubernetesApiError) => void): void {
    let event: { type?: unknown; object?: unknown } | null;
    try {
      event = JSON.parse(line) as typeof event;
    } catch (error) {
      fail(new KubernetesApiError(`${what}: a line of the stream is not JSON`, { cause: error }));
      return;
    }
    if (typeof event?.type !== "string") {
      fail(new KubernetesApiError(`${what}: a line of the stream is not a watch event`));
      return;
    }
    if (event.type === "ERROR") {
      // A Status object: 410 Gone when the resourceVersion asked for is older than the history the server keeps.
      const status = event.object as { code?: unknown; reason?: unknown; message?: unknown } | null;
      const code = typeof status?.code === "number" ? status.code : 500;
      fail(new KubernetesApiError(`${what}: ${String(status?.message ?? status?.reason ?? "ERROR event")}`, { status: code }));
      return;
    }
    try {
      options.onEvent(event.type, event.object);
    } catch (error) {
      fail(new KubernetesApiError(`${what}: handling a ${event.type} event failed: ${describeError(error)}`, { cause: error }));
    }
  }

  /** Sends the GET with the kubeconfig's TLS and credentials; resolves with a 200 response, rejects with the API's Status otherwise. */
  async #open(pathAndQuery: string, what: string, options: { signal?: AbortSignal; idleTimeoutMs?: number }): Promise<IncomingMessage> {
    const url = new URL(this.server.replace(/\/$/, "") + pathAndQuery);
    const requestOptions: https.RequestOptions = { method: "GET", headers: { Accept: "application/json" } };
    await this.#kubeconfig.applyToHTTPSOptions(requestOptions);
    return new Promise((resolve, reject) => {
      const request = (url.protocol === "https:" ? https : http).request(url, { ...requestOptions, signal: options.signal }, (response) => {
        if (response.statusCode === 200) {
          resolve(response);
          return;
        }
        const status = response.statusCode ?? 0;
        const retryAfter = retryAfterMs(response.headers["retry-after"]);
        readText(response).then((text) => reject(new KubernetesApiError(`${what}: HTTP ${status}${statusMessage(text) ? `: ${statusMessage(text)}` : ""}`, { status, retryAfterMs: retryAfter })), reject);
      });
      // A dead peer on a long watch is found by TCP keepalive as well as by the caller's deadline.
      request.on("socket", (socket) => socket.setKeepAlive(true, 30_000));
      const idleTimeoutMs = options.idleTimeoutMs;
      if (idleTimeoutMs) request.setTimeout(idleTimeoutMs, () => request.destroy(new KubernetesApiError(`${what}: no answer within ${idleTimeoutMs} ms`)));
      request.on("error", reject);
      request.end();
    });
  }
}

async function readText(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  response.on("data", (chunk: Buffer) => chunks.push(chunk));
  await finished(response);
  return Buffer.concat(chunks).toString("utf8");
}

/** The message of a Status object, or the start of whatever else the server answered. */
function statusMessage(text: string): string {
  try {
    return (JSON.parse(text) as { message?: string }).message ?? text.slice(0, 300);
  } catch {
    return text.slice(0, 300); // not a Status object: keep the text as it came
  }
}

/** Why a request failed, in words an operator can act on; `resource` is "services" or "destinationrules.networking.istio.io". */
export function explainFailure(error: unknown, resource: string): string {
  const status = apiStatus(error);
  if (status === 401) return "not authenticated: check the kubeconfig's credentials";
  if (status === 403) return `forbidden: the account needs list and watch on ${resource}`;
  if (status === 404) return `the API does not serve ${resource}`;
  if (status === 429) return "too many requests: the API server is throttling this client (priority and fairness)";
  if (status) return `HTTP ${status}`;
  const code = systemErrorCode(error);
  if (code === "ECONNREFUSED") return "connection refused: is the API server (or MetaServer) running?";
  if (code === "ECONNRESET" || code === "ERR_STREAM_PREMATURE_CLOSE") return "the connection was cut";
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return "the API server's name does not resolve";
  if (code === "ETIMEDOUT" || code === "EHOSTUNREACH" || code === "ENETUNREACH") return `the API server is unreachable (${code})`;
  if (code) return code;
  return describeError(error);
}

/**
 * Node's code of a socket or stream failure (ECONNREFUSED…), on the error or its causes. A LeafmeshError's code is
 * leafmesh's own ("KUBERNETES_FAILED" on a timeout) and says nothing an operator can act on: its causes are looked at.
 */
function systemErrorCode(error: unknown): string | undefined {
  for (let current = error, depth = 0; current && depth < 5; current = (current as { cause?: unknown }).cause, depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string" && !(current instanceof LeafmeshError)) return code;
  }
  return undefined;
}

/**
 * The kubeconfig to use. client-node 1.4 refuses an `http:` server unless
 * `insecure-skip-tls-verify` is set ("HTTP protocol is not allowed when
 * skipTLSVerify is not set"), yet KubeEdge's MetaServer is plain http with no
 * credentials; for an http server the flag changes nothing but the agent the
 * library builds, so it is set on a copy.
 */
export function loadKubeconfig(input: string | KubeConfig | undefined): KubeConfig {
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
