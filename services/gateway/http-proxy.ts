/**
 * One HTTP request through the gateway, for HTTP/1.1 and HTTP/2 clients alike
 * (Node's http2 compatibility API gives both one request/response shape): the
 * router picks the rule (host, path, method, headers), the rule's weights a
 * backend, the backend's balancer an endpoint (here or through the tunnel);
 * the request goes to it as HTTP/1.1, written and parsed by the gateway itself
 * (http1-codec.ts), and the answer streams back with backpressure. A rule's timeout answers 504, a failed
 * backend 502 or 503; a retry policy sends a request without a body again when
 * the answer or the failure is one it names. One JSON access-log line per
 * request.
 *
 * Upstream connections (sockets, or tunnel streams to other nodes) are kept
 * alive between requests without a body, one request at a time each, in a
 * small idle pool per endpoint (upstream.ts): a connect, or a tunnel stream
 * open, per request was the gateway's main cost beside haproxy.
 */
import type { ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { RetryPolicy } from "../../bus/catalog-gateway.ts";
import { EarlyBytesInDoubt } from "../../lib/early-bytes.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import { resetStream } from "../../lib/join-streams.ts";
import type { Logger } from "../../lib/log.ts";
import type { HostTable } from "./hosts.ts";
import { chunkPrefix, chunkSuffix, lastChunk, requestHead } from "./http1-codec.ts";
import type { HttpHost, PlannedBackend, PlannedHttpRule } from "./plan.ts";
import { routeHttp, WeightedChoice } from "./router.ts";
import { forwardUpgrade, type UpgradeContext } from "./http-upgrade.ts";
import { NoUpstreamError, type BackendPools, type Http2Upstream, type HttpUpstream } from "./upstream.ts";
import { exchangeHttp2 } from "./http2-exchange.ts";
import { passTrailers } from "./http-trailers.ts";
import { connectionNamed, cutResponse, describeRequest, endToEnd, hasBody, hopByHop, rawConnection, RequestAbort, retriable, setByGateway, type AccessEntry, type ExchangeOutcome, type GatewayRequest, type GatewayResponse } from "./http-message.ts";

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

export class HttpForwarder {
  readonly #options: HttpForwarderOptions;
  readonly #weights = new WeightedChoice();

  constructor(options: HttpForwarderOptions) {
    this.#options = options;
  }

  handle(request: GatewayRequest, response: GatewayResponse, context: HttpContext): void {
    const started = performance.now();
    const { view, entry, target } = describeRequest(request, context);
    const finish = (status: number, reason?: string) => {
      entry.status = status;
      entry.durationMs = Math.round((performance.now() - started) * 10) / 10;
      if (reason) entry.reason = reason;
      if (entry.route) this.#options.routeOutcome(entry.route, status);
      this.#options.access(entry);
    };
    // A client that sends a broken request or leaves mid-way is ordinary: its error must not end the process.
    request.on("error", () => undefined);
    (response as ServerResponse).on("error", () => undefined);
    const answer = (status: number, reason: string, headers: Record<string, string> = {}) => {
      this.#options.count(`http ${reason}`);
      if (!response.headersSent) {
        (response as ServerResponse).writeHead(status, { "content-type": "text/plain; charset=utf-8", ...headers });
        (response as ServerResponse).end(`${reason}\n`);
      } else cutResponse(response);
      // Unread request bytes are dropped, not left to stall the connection.
      request.resume();
      finish(status, reason);
    };

    // CONNECT asks for a tunnel to any address: a gateway to services is not a forward proxy.
    if (view.method === "CONNECT") return answer(405, "CONNECT is not served", { allow: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS" });
    const decision = routeHttp(context.hosts, view);
    if (decision.kind === "no host") return answer(404, "no route for the host");
    if (decision.kind === "no route") return answer(404, "no route for the request");
    if (decision.kind === "redirect") {
      const location = `https://${decision.host}${target}`;
      return answer(301, "redirected to https", { location });
    }
    const rule = decision.entry.rule;
    entry.route = rule.route.name;
    void this.#forward(request, response, context, rule, target, entry, answer, finish);
  }

  /** A WebSocket upgrade from an HTTP/1.1 client (http-upgrade.ts): routed as a request is, joined with its backend on a 101. */
  upgrade(request: GatewayRequest, client: Duplex, early: Buffer, context: UpgradeContext): void {
    void forwardUpgrade({ ...this.#options, weights: this.#weights }, request, client, early, context);
  }

  async #forward(
    request: GatewayRequest,
    response: GatewayResponse,
    context: HttpContext,
    rule: PlannedHttpRule,
    target: string,
    entry: AccessEntry,
    answer: (status: number, reason: string) => void,
    finish: (status: number, reason?: string) => void,
  ): Promise<void> {
    const { pools } = this.#options;
    const withBody = hasBody(request);
    // A body streams through once: a request with one is not sent again.
    const attempts = 1 + (withBody ? 0 : (rule.retry?.attempts ?? 0));
    const deadline = new RequestAbort();
    const timeoutMs = rule.timeoutMs ?? this.#options.defaultTimeoutMs ?? 60_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      deadline.timeOut();
    }, timeoutMs);
    // 'close' also comes after a response that finished: only an unfinished one means the client left.
    const clientGone = () => {
      if (!(response as ServerResponse).writableFinished) deadline.abort();
    };
    // on, not once: once wraps the listener in a bound function, per request; done() takes it off either way.
    (response as ServerResponse).on("close", clientGone);
    const done = () => {
      clearTimeout(timer);
      response.off("close", clientGone);
    };
    // Written once per request (not per attempt): the client's end-to-end headers as received, then the gateway's own.
    const headers = endToEnd(request.rawHeaders, setByGateway, connectionNamed(request.headers.connection));
    const forwardedFor = request.headers["x-forwarded-for"];
    // Appended, as every proxy does: a backend that trusts one hop reads the last address, the client the gateway saw.
    headers.push("host", entry.host, "x-forwarded-for", typeof forwardedFor === "string" ? `${forwardedFor}, ${entry.client}` : entry.client, "x-forwarded-proto", context.scheme, "connection", "keep-alive");
    // A body of unknown length (HTTP/1.1 chunked, HTTP/2 without content-length) goes on chunked.
    const chunked = withBody && request.headers["content-length"] === undefined;
    if (chunked) headers.push("transfer-encoding", "chunked");
    const head = requestHead(request.method ?? "GET", target, headers);

    let lastFailure: { status: number; reason: string } = { status: 503, reason: "no backend" };
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (deadline.aborted) break;
      entry.attempts = attempt;
      const backend: PlannedBackend | undefined = this.#weights.pick(rule.backends);
      if (!backend) {
        lastFailure = { status: 503, reason: "no backend with a weight" };
        break;
      }
      entry.backend = backend.key;
      const hashHeader = pools.hashHeader(backend.key);
      const hashKey = (hashHeader && (request.headers[hashHeader] as string | undefined)) || entry.client;
      let upstream: HttpUpstream | Http2Upstream;
      // A backend that speaks HTTP/2 (gRPC) gets a stream on its endpoint's session (upstream-h2.ts).
      const http2 = pools.speaksHttp2(backend.key);
      try {
        // A request with a body goes on a fresh connection: if an idle one turned out closed, the body could not be sent again.
        const connecting = http2 ? pools.connectHttp2(backend, hashKey, deadline) : pools.connectHttp(backend, hashKey, deadline, !withBody, head);
        // An idle connection comes at once: no turn of the event loop is spent waiting for it.
        upstream = connecting instanceof Promise ? await connecting : connecting;
      } catch (error) {
        if (deadline.aborted) break;
        // Its head went with a tunnel stream's header and no answer came: it may have reached the backend, so it goes nowhere else.
        const inDoubt = error instanceof EarlyBytesInDoubt;
        lastFailure = inDoubt ? { status: 502, reason: "request in doubt: its connection failed after it went" } : error instanceof NoUpstreamError && error.reason === "no endpoints" ? { status: 503, reason: "no endpoints" } : { status: 503, reason: "no endpoint reachable" };
        if (!inDoubt && attempt < attempts && retriable(rule.retry, { failure: "connect" })) continue;
        break;
      }
      entry.endpoint = upstream.endpoint.key;
      // Without a rule timeout, the default bounds only the wait for an answer: a long download is not cut.
      const onAnswer = () => rule.timeoutMs === undefined && clearTimeout(timer);
      const retry = attempt < attempts ? rule.retry : undefined;
      const answersBefore = pools.answerMark(upstream.endpoint);
      const outcome =
        "session" in upstream
          ? await exchangeHttp2({ request, response, upstream, method: request.method ?? "GET", target, headers, withBody, deadline, perTryTimeoutMs: rule.retry?.perTryTimeoutMs, retry, onAnswer, count: this.#options.count, endpointAnswered: () => pools.endpointAnswered(upstream.endpoint), endpointFailed: (why) => pools.endpointFailed(backend, upstream.endpoint, why), endpointTimedOut: (why) => pools.endpointTimedOut(backend, upstream.endpoint, answersBefore, why) })
          : await this.#exchange(request, response, upstream, backend, head, withBody ? (chunked ? "chunked" : "length") : undefined, deadline, rule.retry?.perTryTimeoutMs, retry, onAnswer, answersBefore);
      if (outcome.kind === "answered") {
        done();
        return finish(outcome.status, outcome.reason);
      }
      if (outcome.kind === "stale") {
        // An idle connection the backend had closed: not the backend's failure, and not an attempt.
        this.#options.count("http idle connection was closed");
        attempt--;
        continue;
      }
      if (outcome.kind === "retry") {
        this.#options.count("http retried");
        lastFailure = { status: outcome.status, reason: outcome.reason };
        continue;
      }
      lastFailure = { status: outcome.status, reason: outcome.reason };
      break;
    }
    done();
    if (timedOut) return answer(504, "request timed out");
    if (response.destroyed || (response as ServerResponse).writableEnded) return finish(499, "client left");
    // A retried 5xx whose attempts ran out: the last answer's status, as the backend gave it.
    answer(lastFailure.status, lastFailure.reason);
  }

  /**
   * One attempt: the request on the upstream connection (http1-codec.ts), and the answer streamed back with
   * backpressure, unless it is to be retried. A whole answer on a connection the backend keeps open sends the
   * connection back to the idle pool at once.
   */
  #exchange(
    request: GatewayRequest,
    response: GatewayResponse,
    upstream: HttpUpstream,
    backend: PlannedBackend,
    head: string,
    body: "length" | "chunked" | undefined,
    deadline: RequestAbort,
    perTryTimeoutMs: number | undefined,
    retry: RetryPolicy | undefined,
    onAnswer: () => void,
    answersBefore: number,
  ): Promise<ExchangeOutcome> {
    return new Promise((resolve) => {
      const { stream, connection } = upstream;
      let settled = false;
      let answered = false;
      let status = 502;
      let keepAlive = false;
      let requestSent = body === undefined;
      let waitingForDrain = false;
      const settle = (result: ExchangeOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(perTry);
        deadline.onAbort(undefined);
        parser.stop();
        connection.detach();
        if (body !== undefined) {
          request.off("data", onRequestData);
          request.off("end", onRequestEnd);
        }
        upstream.release();
        resolve(result);
      };
      const cut = (reason: string) => resetStream(stream, new LeafmeshError("PROXY_FAILED", reason));
      /** The backend failed before its answer: an idle connection it had closed is stale, not a failure. */
      const failedBeforeAnswer = (why: string) => {
        if (upstream.reused && !answered) {
          cut("an idle connection the backend closed");
          return settle({ kind: "stale", status: 502, reason: "idle connection closed" });
        }
        this.#options.count("http backend failed");
        this.#options.log.debug({ backend: backend.key, endpoint: upstream.endpoint.key, err: why }, "backend request failed");
        this.#options.pools.endpointFailed(backend, upstream.endpoint, why);
        cut(why);
        settle({ kind: retriable(retry, { failure: "reset" }) ? "retry" : "failed", status: 502, reason: "backend failed" });
      };
      /** Cut mid-answer: the client must see a cut, never a short answer that looks whole. */
      const cutMidAnswer = (why: string) => {
        this.#options.count("http answer cut by backend");
        cutResponse(response);
        cut(why);
        settle({ kind: "answered", status, reason: "answer cut by backend" });
      };
      let held: Buffer | undefined;
      const writeHeld = () => {
        const chunk = held!;
        held = undefined;
        if ((response as ServerResponse).write(chunk) || waitingForDrain) return;
        waitingForDrain = true;
        stream.pause();
        (response as ServerResponse).once("drain", onResponseDrain);
      };
      const onResponseDrain = () => {
        waitingForDrain = false;
        if (!settled) stream.resume();
      };
      const parser = connection.parser;
      parser.reset({
        head: request.method === "HEAD",
        onHead: (answer) => {
          // llhttp takes any three digits; a status outside 100–599 (RFC 9110 §15) is no answer to pass on (an HTTP/2
          // client's server refuses to write it, an HTTP/1.1 client's parser to read it).
          if (answer.status < 100 || answer.status > 599) {
            this.#options.count("http backend answer malformed");
            parser.stop();
            return failedBeforeAnswer(`the backend answered status ${answer.status}`);
          }
          answered = true;
          this.#options.pools.endpointAnswered(upstream.endpoint);
          status = answer.status;
          keepAlive = answer.keepAlive;
          if (retry && retriable(retry, { status })) {
            parser.stop();
            cut("an answer to retry");
            return settle({ kind: "retry", status, reason: `backend answered ${status}` });
          }
          clearTimeout(perTry);
          onAnswer();
          if (response.destroyed) {
            parser.stop();
            cut("the client left");
            return settle({ kind: "failed", status: 499, reason: "client left" });
          }
          (response as ServerResponse).writeHead(status, endToEnd(answer.headers, hopByHop, connectionNamed(rawConnection(answer.headers))));
        },
        onBody: (chunk) => {
          // Held until the end of this read: the last piece of an answer goes with response.end(), one call
          // that writes head and body together, where write() then end() took two passes through the streams.
          if (held) writeHeld();
          held = chunk;
        },
        onEnd: (extra, trailers) => {
          // The backend is done with this request: its connection waits for the next one, unless it cannot.
          const reusable = keepAlive && extra === 0 && requestSent && !stream.destroyed;
          settle({ kind: "answered", status });
          if (extra > 0) this.#options.count("http backend sent bytes after its answer");
          if (reusable) this.#options.pools.park(connection);
          else if (!stream.destroyed) stream.destroy();
          // A chunked answer's trailer section: to a client that reads trailers; the parser used to drop it.
          if (trailers) passTrailers(request, response, trailers, this.#options.count);
          const last = held;
          held = undefined;
          if (last) (response as ServerResponse).end(last);
          else (response as ServerResponse).end();
        },
      });
      const onData = (chunk: Buffer) => {
        try {
          parser.feed(chunk);
          // What this read brought of an answer still going on is written now: a stream (server-sent events) is never held back.
          if (held && !settled) writeHeld();
        } catch (error) {
          this.#options.count("http backend answer malformed");
          if (answered) cutMidAnswer((error as Error).message);
          else failedBeforeAnswer((error as Error).message);
        }
      };
      const onEnd = () => {
        // A body that runs until the close ends here (its onEnd settles); anything else unfinished was cut.
        if (parser.finishOnEof() || settled) return;
        if (answered) cutMidAnswer("the backend closed mid-answer");
        else failedBeforeAnswer("the backend closed before its answer");
      };
      const onClose = () => {
        if (settled) return;
        if (answered) cutMidAnswer("the backend's connection closed mid-answer");
        else failedBeforeAnswer("the backend's connection closed before its answer");
      };
      const onError = (error: Error) => {
        if (settled) return;
        if (answered) cutMidAnswer(error.message);
        else failedBeforeAnswer(error.message);
      };
      const onAbort = () => {
        // A backend that let the route's deadline pass without a word (a hung process: the kernel accepts for it) may
        // have failed (upstream.ts: endpointTimedOut); one whose answer was under way has not (a long download).
        if (deadline.timedOut && !answered) this.#options.pools.endpointTimedOut(backend, upstream.endpoint, answersBefore, "no answer by the route's timeout");
        cut("the request timed out or its client left");
        settle({ kind: "failed", status: 504, reason: "request timed out" });
      };
      deadline.onAbort(onAbort);
      const perTry = perTryTimeoutMs
        ? setTimeout(() => {
            this.#options.pools.endpointTimedOut(backend, upstream.endpoint, answersBefore, "no answer by the attempt's timeout");
            cut("the attempt timed out");
            settle({ kind: retry ? "retry" : "failed", status: 504, reason: "attempt timed out" });
          }, perTryTimeoutMs)
        : undefined;
      // The request body, framed as its head says, with backpressure both ways.
      const onRequestData = (chunk: Buffer) => {
        const ok = body === "chunked" ? stream.write(chunkPrefix(chunk.length), "latin1") && stream.write(chunk) && stream.write(chunkSuffix, "latin1") : stream.write(chunk);
        if (!ok) request.pause();
      };
      const onRequestEnd = () => {
        if (body === "chunked") stream.write(lastChunk, "latin1");
        requestSent = true;
      };
      const onUpstreamDrain = () => body !== undefined && request.resume();
      connection.attach({ data: onData, end: onEnd, close: onClose, error: onError, drain: onUpstreamDrain });
      // On a new connection the head may have gone with the tunnel stream's header (upstream.ts connectHttp): the rest of it, if any.
      const unsent = upstream.unsent ? (upstream.unsent.read() as Buffer | null) : head;
      if (unsent) stream.write(unsent, "latin1");
      if (body !== undefined) {
        request.on("data", onRequestData);
        request.on("end", onRequestEnd);
      }
    });
  }
}
