/**
 * One request through the gateway after routing (http-proxy.ts), from its
 * first attempt to its access-log line: a backend by the rule's weights, a
 * connection to one of its endpoints, the exchange (http1-exchange.ts, or
 * http2-exchange.ts for a backend that speaks HTTP/2), and a retry, another
 * endpoint or the gateway's own answer (502, 503, 504) when the policy says
 * so. Its deadline is the route's timeout (deadlines.ts).
 *
 * One object per request holds what a request's attempts share, and goes on
 * from one step to the next by calling itself: when an idle connection is
 * ready (most requests), a request is forwarded and its answer passed back
 * without a promise, an await, a timer or a closure of its own. A connect or
 * an HTTP/2 exchange is awaited with `then`.
 */
import type { ServerResponse } from "node:http";
import { EarlyBytesInDoubt } from "../../lib/early-bytes.ts";
import type { Deadlines } from "./deadlines.ts";
import { requestHead } from "./http1-codec.ts";
import { Http1Exchange, type Http1ExchangeOwner, type Http1ExchangeParts } from "./http1-exchange.ts";
import { exchangeHttp2 } from "./http2-exchange.ts";
import { connectionNamed, cutResponse, endToEnd, hasBody, RequestAbort, retriable, setByGateway, type AccessEntry, type ExchangeOutcome, type GatewayRequest, type GatewayResponse } from "./http-message.ts";
import type { PlannedBackend, PlannedHttpRule } from "./plan.ts";
import type { WeightedChoice } from "./router.ts";
import { NoUpstreamError, type Http2Upstream, type HttpUpstream } from "./upstream.ts";

/** What every request of a forwarder shares. */
export interface ForwardingParts extends Http1ExchangeParts {
  weights: WeightedChoice;
  deadlines: Deadlines;
  routeOutcome: (route: string, status: number) => void;
  access: (entry: AccessEntry) => void;
  defaultTimeoutMs: number;
}

export class ForwardedRequest extends RequestAbort implements Http1ExchangeOwner {
  readonly request: GatewayRequest;
  readonly response: GatewayResponse;
  readonly entry: AccessEntry;
  readonly #parts: ForwardingParts;
  readonly #started: number;
  #rule!: PlannedHttpRule;
  #target = "";
  #withBody = false;
  #chunked = false;
  #attempts = 1;
  #attempt = 0;
  /** The request's headers as they go to a backend, and its head written once (not per attempt). */
  #headers: string[] = [];
  #head = "";
  #failureStatus = 503;
  #failureReason = "no backend";
  #onClientClose: (() => void) | undefined;

  constructor(parts: ForwardingParts, request: GatewayRequest, response: GatewayResponse, entry: AccessEntry, started: number) {
    super();
    this.#parts = parts;
    this.request = request;
    this.response = response;
    this.entry = entry;
    this.#started = started;
  }

  /** The request's outcome: its access-log line and its route's count. */
  finish(status: number, reason?: string): void {
    const entry = this.entry;
    entry.status = status;
    entry.durationMs = Math.round((performance.now() - this.#started) * 10) / 10;
    if (reason) entry.reason = reason;
    if (entry.route) this.#parts.routeOutcome(entry.route, status);
    this.#parts.access(entry);
  }

  /** The gateway's own answer (a refusal or a failure), or a cut when an answer is under way already. */
  answer(status: number, reason: string, headers: Record<string, string> = {}): void {
    const { request, response } = this;
    this.#parts.count(`http ${reason}`);
    if (!response.headersSent) {
      (response as ServerResponse).writeHead(status, { "content-type": "text/plain; charset=utf-8", ...headers });
      (response as ServerResponse).end(`${reason}\n`);
    } else cutResponse(response);
    // Unread request bytes are dropped, not left to stall the connection.
    request.resume();
    this.finish(status, reason);
  }

  /** Sends the request to the rule's backends: attempts until one answers, or the policy and the deadline allow no more. */
  forward(rule: PlannedHttpRule, target: string, scheme: "http" | "https"): void {
    const { request, response, entry } = this;
    this.#rule = rule;
    this.#target = target;
    entry.route = rule.route.name;
    const withBody = (this.#withBody = hasBody(request));
    // A body streams through once: a request with one is not sent again.
    this.#attempts = 1 + (withBody ? 0 : (rule.retry?.attempts ?? 0));
    this.#parts.deadlines.add(this, rule.timeoutMs ?? this.#parts.defaultTimeoutMs);
    // 'close' also comes after a response that finished: only an unfinished one means the client left.
    this.#onClientClose = () => {
      if (!(response as ServerResponse).writableFinished) this.abort();
    };
    (response as ServerResponse).on("close", this.#onClientClose);
    // Written once per request (not per attempt): the client's end-to-end headers as received, then the gateway's own.
    const headers = (this.#headers = endToEnd(request.rawHeaders, setByGateway, connectionNamed(request.headers.connection)));
    const forwardedFor = request.headers["x-forwarded-for"];
    // Appended, as every proxy does: a backend that trusts one hop reads the last address, the client the gateway saw.
    headers.push("host", entry.host, "x-forwarded-for", typeof forwardedFor === "string" ? `${forwardedFor}, ${entry.client}` : entry.client, "x-forwarded-proto", scheme, "connection", "keep-alive");
    // A body of unknown length (HTTP/1.1 chunked, HTTP/2 without content-length) goes on chunked.
    this.#chunked = withBody && request.headers["content-length"] === undefined;
    if (this.#chunked) headers.push("transfer-encoding", "chunked");
    this.#head = requestHead(request.method ?? "GET", target, headers);
    this.#next();
  }

  /** The next attempt, or the gateway's answer when none is left. */
  #next(): void {
    if (this.aborted || this.#attempt >= this.#attempts) return this.#giveUp();
    const { pools, weights } = this.#parts;
    const { entry, request } = this;
    entry.attempts = ++this.#attempt;
    const backend = weights.pick(this.#rule.backends);
    if (!backend) {
      this.#failed(503, "no backend with a weight");
      return this.#giveUp();
    }
    entry.backend = backend.key;
    const hashHeader = pools.hashHeader(backend.key);
    const hashKey = (hashHeader && (request.headers[hashHeader] as string | undefined)) || entry.client;
    let connecting: HttpUpstream | Http2Upstream | Promise<HttpUpstream | Http2Upstream>;
    try {
      // A backend that speaks HTTP/2 (gRPC) gets a stream on its endpoint's session (upstream-h2.ts). A request with a
      // body goes on a fresh connection: if an idle one turned out closed, the body could not be sent again.
      connecting = pools.speaksHttp2(backend.key) ? pools.connectHttp2(backend, hashKey, this) : pools.connectHttp(backend, hashKey, this, !this.#withBody, this.#head);
    } catch (error) {
      return this.#connectFailed(error);
    }
    // An idle connection comes at once: no turn of the event loop is spent waiting for it.
    if (connecting instanceof Promise)
      connecting.then(
        (upstream) => this.#connected(backend, upstream),
        (error: unknown) => this.#connectFailed(error),
      );
    else this.#connected(backend, connecting);
  }

  #connectFailed(error: unknown): void {
    if (this.aborted) return this.#giveUp();
    // Its head went with a tunnel stream's header and no answer came: it may have reached the backend, so it goes nowhere else.
    const inDoubt = error instanceof EarlyBytesInDoubt;
    if (inDoubt) this.#failed(502, "request in doubt: its connection failed after it went");
    else if (error instanceof NoUpstreamError && error.reason === "no endpoints") this.#failed(503, "no endpoints");
    else this.#failed(503, "no endpoint reachable");
    if (!inDoubt && this.#attempt < this.#attempts && retriable(this.#rule.retry, { failure: "connect" })) return this.#next();
    this.#giveUp();
  }

  #connected(backend: PlannedBackend, upstream: HttpUpstream | Http2Upstream): void {
    const { pools, count } = this.#parts;
    const { request, response } = this;
    this.entry.endpoint = upstream.endpoint.key;
    const rule = this.#rule;
    const retry = this.#attempt < this.#attempts ? rule.retry : undefined;
    const answersBefore = pools.answerMark(upstream.endpoint);
    if ("session" in upstream) {
      const exchange = { request, response, upstream, method: request.method ?? "GET", target: this.#target, headers: this.#headers, withBody: this.#withBody, deadline: this, perTryTimeoutMs: rule.retry?.perTryTimeoutMs, retry, count };
      void exchangeHttp2({
        ...exchange,
        onAnswer: () => this.answerStarted(),
        endpointAnswered: () => pools.endpointAnswered(upstream.endpoint),
        endpointFailed: (why) => pools.endpointFailed(backend, upstream.endpoint, why),
        endpointTimedOut: (why) => pools.endpointTimedOut(backend, upstream.endpoint, answersBefore, why),
      }).then((outcome) => this.exchanged(outcome));
      return;
    }
    const body = this.#withBody ? (this.#chunked ? "chunked" : "length") : undefined;
    new Http1Exchange(this, this.#parts, { request, response, upstream, backend, body, deadline: this, perTryTimeoutMs: rule.retry?.perTryTimeoutMs, retry, answersBefore }).start(this.#head);
  }

  /** Without a rule timeout, the default bounds only the wait for an answer: a long download is not cut. */
  answerStarted(): void {
    if (this.#rule.timeoutMs === undefined) this.#parts.deadlines.remove(this);
  }

  exchanged(outcome: ExchangeOutcome): void {
    switch (outcome.kind) {
      case "answered":
        this.#done();
        return this.finish(outcome.status, outcome.reason);
      case "stale":
        // An idle connection the backend had closed: not the backend's failure, and not an attempt.
        this.#parts.count("http idle connection was closed");
        this.#attempt--;
        return this.#next();
      case "retry":
        this.#parts.count("http retried");
        this.#failed(outcome.status, outcome.reason);
        return this.#next();
      default:
        this.#failed(outcome.status, outcome.reason);
        return this.#giveUp();
    }
  }

  #failed(status: number, reason: string): void {
    this.#failureStatus = status;
    this.#failureReason = reason;
  }

  #done(): void {
    this.#parts.deadlines.remove(this);
    if (this.#onClientClose) this.response.off("close", this.#onClientClose);
  }

  /** No attempt answered: the gateway answers (a retried 5xx whose attempts ran out: the last answer's status, as the backend gave it). */
  #giveUp(): void {
    this.#done();
    if (this.timedOut) return this.answer(504, "request timed out");
    if (this.response.destroyed || (this.response as ServerResponse).writableEnded) return this.finish(499, "client left");
    this.answer(this.#failureStatus, this.#failureReason);
  }
}
