/**
 * One HTTP request through the gateway, for HTTP/1.1 and HTTP/2 clients alike
 * (Node's http2 compatibility API gives both one request/response shape): the
 * router picks the rule (host, path, method, headers), the rule's weights a
 * backend, the backend's balancer an endpoint (here or through the tunnel);
 * the request goes to it as HTTP/1.1, written and parsed by the gateway itself
 * (http1-codec.ts), and the answer streams back with backpressure. A rule's timeout answers 504, a failed
 * backend 502 or 503; a retry policy sends a request without a body again when
 * the answer or the failure is one it names. One JSON access-log line per
 * request. Here: the refusals and the route; a routed request's attempts are
 * forwarded-request.ts's, one attempt on an HTTP/1.1 connection
 * http1-exchange.ts's.
 *
 * Upstream connections (sockets, or tunnel streams to other nodes) are kept
 * alive between requests without a body, one request at a time each, in a
 * small idle pool per endpoint (upstream.ts): a connect, or a tunnel stream
 * open, per request was the gateway's main cost beside haproxy.
 */
import type { ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "../../lib/log.ts";
import { Deadlines } from "./deadlines.ts";
import { Http1Request } from "./http1-messages.ts";
import { ForwardedRequest, type ForwardingParts } from "./forwarded-request.ts";
import type { HostTable } from "./hosts.ts";
import type { HttpHost } from "./plan.ts";
import { routeHttp, WeightedChoice } from "./router.ts";
import { forwardUpgrade, type UpgradeContext } from "./http-upgrade.ts";
import type { BackendPools } from "./upstream.ts";
import { describeRequest, type AccessEntry, type GatewayRequest, type GatewayResponse } from "./http-message.ts";

export { retriable, type AccessEntry, type GatewayRequest, type GatewayResponse } from "./http-message.ts";

/** Where a request came in: the listener's port and routes, and whether TLS was terminated. */
export interface HttpContext {
  port: number;
  hosts: HostTable<HttpHost>;
  scheme: "http" | "https";
  /** The client's address (HTTP/2 sessions run on a wrapped stream that has none). */
  client?: string;
}


export interface HttpForwarderOptions {
  pools: BackendPools;
  log: Logger;
  /** Counts a reason (every refusal and failure). */
  count: (reason: string) => void;
  /** A request's outcome per route, for metrics and status. */
  routeOutcome: (route: string, status: number) => void;
  access: (entry: AccessEntry) => void;
  /** @default 60_000 — a rule without a timeout still ends (Envoy's route timeout default is 15 s; 60 s leaves room for slow edge backends). */
  defaultTimeoutMs?: number;
}

/** For 'error' on a request and its response: a client that sends a broken request or leaves mid-way is ordinary. */
const ignore = () => undefined;

export class HttpForwarder {
  readonly #options: HttpForwarderOptions;
  readonly #weights = new WeightedChoice();
  readonly #parts: ForwardingParts;

  constructor(options: HttpForwarderOptions) {
    this.#options = options;
    const { pools, log, count, routeOutcome, access } = options;
    this.#parts = { pools, log, count, routeOutcome, access, weights: this.#weights, deadlines: new Deadlines(), defaultTimeoutMs: options.defaultTimeoutMs ?? 60_000 };
  }

  handle(request: GatewayRequest, response: GatewayResponse, context: HttpContext): void {
    const started = performance.now();
    const { view, entry, target } = describeRequest(request, context);
    const forwarded = new ForwardedRequest(this.#parts, request, response, entry, started);
    // Its error must not end the process. The front end's own request and answer (http1-messages.ts) emit none unheard.
    if (!(request instanceof Http1Request)) {
      request.on("error", ignore);
      (response as ServerResponse).on("error", ignore);
    }
    // CONNECT asks for a tunnel to any address: a gateway to services is not a forward proxy.
    if (view.method === "CONNECT") return forwarded.answer(405, "CONNECT is not served", { allow: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS" });
    const decision = routeHttp(context.hosts, view);
    if (decision.kind === "no host") return forwarded.answer(404, "no route for the host");
    if (decision.kind === "no route") return forwarded.answer(404, "no route for the request");
    if (decision.kind === "redirect") return forwarded.answer(301, "redirected to https", { location: `https://${decision.host}${target}` });
    forwarded.forward(decision.entry.rule, target, context.scheme);
  }

  /** A WebSocket upgrade from an HTTP/1.1 client (http-upgrade.ts): routed as a request is, joined with its backend on a 101. */
  upgrade(request: GatewayRequest, client: Duplex, early: Buffer, context: UpgradeContext): void {
    void forwardUpgrade({ ...this.#options, weights: this.#weights }, request, client, early, context);
  }
}
