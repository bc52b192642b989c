/**
 * What the gateway's HTTP forwarding needs to know of an HTTP message, apart from
 * the exchange itself (http-proxy.ts): which headers are hop-by-hop and which go
 * on, whether a request has a body, whether a retry policy names an outcome, how
 * a client's answer is cut, and a request's abort.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { constants as http2Constants } from "node:http2";
import type { Socket } from "node:net";
import type { Http1Request, Http1Response } from "./http1-messages.ts";
import type { RetryPolicy } from "../../bus/catalog-gateway.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import { resetStream } from "../../lib/join-streams.ts";
import { HttpAccessEntry } from "./access-entry.ts";
import { DeadlineEntry } from "./deadlines.ts";
import { requestTarget } from "./request-target.ts";
import type { RequestView } from "./router.ts";

/** HTTP/1.x over TLS and HTTP/2 come through Node's servers; plain HTTP/1.x through the gateway's own (http1-server.ts). */
export type GatewayRequest = IncomingMessage | Http2ServerRequest | Http1Request;
export type GatewayResponse = ServerResponse | Http2ServerResponse | Http1Response;
// The three share what the forwarder calls (writeHead, write, end, once/off of close and drain); a call goes through
// ServerResponse's signatures where TypeScript cannot unite their overloads.

/**
 * How one attempt of a request ended (an HTTP/1.1 exchange in http-proxy.ts, an HTTP/2 one in http2-exchange.ts); an
 * answer the backend cut part-way carries the reason its access-log line gives.
 */
export type ExchangeOutcome = { kind: "answered"; status: number; reason?: "answer cut by backend" } | { kind: "retry" | "failed" | "stale"; status: number; reason: string };

/** One line of the access log. */
export interface AccessEntry {
  kind: "http";
  port: number;
  client: string;
  protocol: string;
  method: string;
  host: string;
  path: string;
  status: number;
  route?: string;
  backend?: string;
  endpoint?: string;
  attempts: number;
  durationMs: number;
  /** Why the gateway answered itself (no route, no endpoint, timeout...), or why an answer under way ended in a cut. */
  reason?: string;
}

/** A request's headers as the router reads them (router.ts RequestView.header), without a closure per request. */
class RequestHeaders {
  readonly #headers: IncomingHttpHeaders;
  readonly host: string | undefined;
  readonly path: string;
  readonly method: string;

  constructor(headers: IncomingHttpHeaders, host: string | undefined, path: string, method: string) {
    this.#headers = headers;
    this.host = host;
    this.path = path;
    this.method = method;
  }

  header(name: string): string | undefined {
    const value = this.#headers[name];
    return Array.isArray(value) ? value.join(", ") : value;
  }
}

/** What a request is routed by, and its access-log line as far as it is known before routing. */
export function describeRequest(request: Pick<GatewayRequest, "url" | "headers" | "method" | "httpVersion" | "socket">, context: { port: number; client?: string }): { view: RequestView; entry: HttpAccessEntry; target: string } {
  const headers = request.headers;
  const { authority, path, target } = requestTarget(request.url ?? "/", (headers[":authority"] as string | undefined) ?? headers.host);
  const method = request.method ?? "GET";
  const view = new RequestHeaders(headers, authority, path, method);
  const client = context.client ?? (request.socket?.remoteAddress ?? "").replace(/^::ffff:/, "");
  const entry = new HttpAccessEntry(context.port, client, `HTTP/${request.httpVersion}`, method, authority ?? "", path);
  return { view, entry, target };
}

/** Hop-by-hop headers (RFC 9110 §7.6.1), and HTTP/2's connection-specific ones that Node refuses to send. */
export const hopByHop = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "http2-settings", "host"]);
/** Request headers the gateway writes itself. */
export const setByGateway = new Set([...hopByHop, "x-forwarded-for", "x-forwarded-proto"]);

/** The header names a Connection header lists (they are hop-by-hop too); undefined when it lists none. */
export function connectionNamed(connection: string | string[] | undefined): Set<string> | undefined {
  if (connection === undefined) return undefined;
  const names = String(connection)
    .split(",")
    .map((name) => name.trim().toLowerCase())
    .filter(Boolean);
  return names.length > 0 ? new Set(names) : undefined;
}

/**
 * The end-to-end headers of a raw list ([name, value, …], as received), without HTTP/2 pseudo-headers and without
 * those in `drop` or named by a Connection header: what goes on to the other side, in order, duplicates kept.
 */
export function endToEnd(raw: readonly string[], drop: ReadonlySet<string>, named: ReadonlySet<string> | undefined): string[] {
  const result: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.charCodeAt(0) === 58 /* ":" */) continue;
    const lower = name.toLowerCase();
    if (drop.has(lower) || named?.has(lower)) continue;
    result.push(name, raw[i + 1]);
  }
  return result;
}

/** The Connection header of a raw list, its values joined. */
export function rawConnection(raw: readonly string[]): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < raw.length; i += 2) if (raw[i].length === 10 && raw[i].toLowerCase() === "connection") value = value === undefined ? raw[i + 1] : `${value},${raw[i + 1]}`;
  return value;
}

/** Whether a retry policy names this outcome (Envoy's conditions as Istio writes them, or a status code). */
export function retriable(retry: RetryPolicy | undefined, outcome: { status?: number; failure?: "connect" | "reset" | "refused-stream" }): boolean {
  if (!retry || retry.attempts <= 0) return false;
  for (const condition of retry.on) {
    if (outcome.failure === "connect" && (condition === "connect-failure" || condition === "5xx" || condition === "gateway-error")) return true;
    if (outcome.failure === "reset" && (condition === "reset" || condition === "5xx")) return true;
    // Envoy: refused-stream, and reset and 5xx include it (a stream the backend refused unprocessed).
    if (outcome.failure === "refused-stream" && (condition === "refused-stream" || condition === "reset" || condition === "5xx")) return true;
    const status = outcome.status;
    if (status === undefined) continue;
    if (condition === "5xx" && status >= 500) return true;
    if (condition === "gateway-error" && (status === 502 || status === 503 || status === 504)) return true;
    if (condition === "retriable-4xx" && status === 409) return true;
    if (condition === String(status)) return true;
  }
  return false;
}

/**
 * Whether a request asks to become a WebSocket (RFC 6455 §4.1): a GET without a body, `Upgrade: websocket` among
 * its protocols and `Connection` naming `upgrade`. Other upgrades (h2c, TLS) are answered as plain requests, as
 * Envoy does without an upgrade_config for them.
 */
export function isWebSocketUpgrade(method: string | undefined, headers: IncomingHttpHeaders): boolean {
  if (method !== "GET" || headers["transfer-encoding"] !== undefined || (headers["content-length"] !== undefined && headers["content-length"] !== "0")) return false;
  const upgrade = headers.upgrade;
  const connection = headers.connection;
  if (typeof upgrade !== "string" || typeof connection !== "string") return false;
  return upgrade.split(",").some((token) => token.trim().toLowerCase() === "websocket") && connection.split(",").some((token) => token.trim().toLowerCase() === "upgrade");
}

export function hasBody(request: GatewayRequest): boolean {
  const length = request.headers["content-length"];
  if (length !== undefined) return length !== "0";
  if (request.headers["transfer-encoding"] !== undefined) return true;
  // HTTP/2 has no framing headers: a stream still open after its headers carries a body.
  return request.httpVersionMajor === 2 && !(request as Http2ServerRequest).stream?.endAfterHeaders;
}

/** Cuts a client's request without a clean end: HTTP/2 resets the stream, HTTP/1.1 resets the connection. */
export function cutResponse(response: GatewayResponse): void {
  if ("stream" in response && response.stream) {
    response.stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  const socket = (response as ServerResponse).socket as Socket | null;
  if (socket) resetStream(socket, new LeafmeshError("PROXY_FAILED", "the backend's answer was cut"));
}

/** Who hears a request's abort: a function, or an object (an exchange in flight, without a closure of its own). */
export type AbortListener = (() => void) | { requestAborted(): void };

/**
 * A request's end before its answer (its timeout, or its client left): a flag and one listener, the exchange in
 * progress. An AbortSignal is made only when a connect needs one: an AbortController and its EventTarget per
 * request were a cost of their own, and most requests reuse an idle connection. Its route's timeout is a deadline
 * (deadlines.ts): expired() is the timeout.
 */
export class RequestAbort extends DeadlineEntry {
  aborted = false;
  /** Aborted for the route's timeout (not for a client that left). */
  timedOut = false;
  #listener: AbortListener | undefined;
  #controller: AbortController | undefined;

  expired(): void {
    this.timeOut();
  }

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.aborted) this.#controller.abort();
    }
    return this.#controller.signal;
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.#controller?.abort();
    const listener = this.#listener;
    this.#listener = undefined;
    if (typeof listener === "function") listener();
    else listener?.requestAborted();
  }

  /** Aborts for the route's timeout. */
  timeOut(): void {
    if (!this.aborted) this.timedOut = true;
    this.abort();
  }

  /** The one listener (undefined: none); called once, at abort. */
  onAbort(listener: AbortListener | undefined): void {
    this.#listener = listener;
  }
}
