/**
 * One attempt of a request on an HTTP/1.1 upstream connection (http-proxy.ts):
 * the request on the connection (http1-codec.ts), and the answer streamed
 * back with backpressure, unless it is to be retried. A whole answer on a
 * connection the backend keeps open sends the connection back to the idle
 * pool at once.
 *
 * One object per attempt is at once the connection's listener
 * (upstream-http.ts), the response parser's callbacks and the request
 * deadline's listener: a promise and some twenty closures per request (one
 * per event it hears) were a cost of every request the gateway forwarded.
 *
 * ```ts
 * new Http1Exchange(owner, parts, { request, response, upstream, backend, body: undefined, deadline, … }).start(head);
 * // … owner.exchanged({ kind: "answered", status: 200 }) once the answer is out
 * ```
 */
import type { ServerResponse } from "node:http";
import type { RetryPolicy } from "../../bus/catalog-gateway.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import { resetStream } from "../../lib/join-streams.ts";
import type { Logger } from "../../lib/log.ts";
import { chunkPrefix, chunkSuffix, lastChunk, type ResponseHead } from "./http1-codec.ts";
import { passTrailers } from "./http-trailers.ts";
import { connectionNamed, cutResponse, endToEnd, hopByHop, rawConnection, retriable, type ExchangeOutcome, type GatewayRequest, type GatewayResponse, type RequestAbort } from "./http-message.ts";
import type { PlannedBackend } from "./plan.ts";
import type { BackendPools, HttpUpstream } from "./upstream.ts";

/** The request an exchange is an attempt of. */
export interface Http1ExchangeOwner {
  /** The answer's head is being passed on (the deadline of a route without a timeout of its own ends here). */
  answerStarted(): void;
  /** How the attempt ended; called once. */
  exchanged(outcome: ExchangeOutcome): void;
}

/** What every exchange of a forwarder shares. */
export interface Http1ExchangeParts {
  pools: BackendPools;
  log: Logger;
  count: (reason: string) => void;
}

export interface Http1Attempt {
  request: GatewayRequest;
  response: GatewayResponse;
  upstream: HttpUpstream;
  backend: PlannedBackend;
  /** How the request's body is framed, or undefined without one. */
  body: "length" | "chunked" | undefined;
  deadline: RequestAbort;
  perTryTimeoutMs: number | undefined;
  /** The policy when this attempt may be retried (not the last). */
  retry: RetryPolicy | undefined;
  /** The endpoint's answers as the request was sent (upstream.ts endpointTimedOut). */
  answersBefore: number;
}

export class Http1Exchange {
  /** The request was HEAD (the response parser's option: no body whatever the answer's headers say). */
  readonly head: boolean;
  readonly #owner: Http1ExchangeOwner;
  readonly #parts: Http1ExchangeParts;
  readonly #attempt: Http1Attempt;
  #settled = false;
  #answered = false;
  #status = 502;
  #keepAlive = false;
  #requestSent: boolean;
  #waitingForDrain = false;
  /** The last piece of the answer read, held until the end of its read (it may go with response.end()). */
  #held: Buffer | undefined;
  #perTry: NodeJS.Timeout | undefined;
  #onRequestData: ((chunk: Buffer) => void) | undefined;
  #onRequestEnd: (() => void) | undefined;
  #onResponseDrain: (() => void) | undefined;

  constructor(owner: Http1ExchangeOwner, parts: Http1ExchangeParts, attempt: Http1Attempt) {
    this.#owner = owner;
    this.#parts = parts;
    this.#attempt = attempt;
    this.head = attempt.request.method === "HEAD";
    this.#requestSent = attempt.body === undefined;
  }

  /** Sends the request (`head`, then its body if any) and reads the answer. */
  start(head: string): void {
    const { upstream, deadline, perTryTimeoutMs, body, request } = this.#attempt;
    const { connection, stream } = upstream;
    connection.parser.reset(this);
    deadline.onAbort(this);
    if (perTryTimeoutMs) this.#perTry = setTimeout(() => this.#perTryTimedOut(), perTryTimeoutMs);
    connection.attach(this);
    // On a new connection the head may have gone with the tunnel stream's header (upstream.ts connectHttp): the rest of it, if any.
    const unsent = upstream.unsent ? (upstream.unsent.read() as Buffer | null) : head;
    if (unsent) stream.write(unsent, "latin1");
    if (body === undefined) return;
    // The request body, framed as its head says, with backpressure both ways.
    this.#onRequestData = (chunk: Buffer) => {
      const ok = body === "chunked" ? stream.write(chunkPrefix(chunk.length), "latin1") && stream.write(chunk) && stream.write(chunkSuffix, "latin1") : stream.write(chunk);
      if (!ok) request.pause();
    };
    this.#onRequestEnd = () => {
      if (body === "chunked") stream.write(lastChunk, "latin1");
      this.#requestSent = true;
    };
    request.on("data", this.#onRequestData);
    request.on("end", this.#onRequestEnd);
  }

  // The response parser's callbacks (ResponseParserOptions).

  onHead(answer: ResponseHead): void {
    const { pools, count } = this.#parts;
    const { upstream, retry, response } = this.#attempt;
    const parser = upstream.connection.parser;
    // llhttp takes any three digits; a status outside 100–599 (RFC 9110 §15) is no answer to pass on (an HTTP/2
    // client's server refuses to write it, an HTTP/1.1 client's parser to read it).
    if (answer.status < 100 || answer.status > 599) {
      count("http backend answer malformed");
      parser.stop();
      return this.#failedBeforeAnswer(`the backend answered status ${answer.status}`);
    }
    this.#answered = true;
    pools.endpointAnswered(upstream.endpoint);
    const status = (this.#status = answer.status);
    this.#keepAlive = answer.keepAlive;
    if (retry && retriable(retry, { status })) {
      parser.stop();
      this.#cut("an answer to retry");
      return this.#settle({ kind: "retry", status, reason: `backend answered ${status}` });
    }
    clearTimeout(this.#perTry);
    this.#owner.answerStarted();
    if (response.destroyed) {
      parser.stop();
      this.#cut("the client left");
      return this.#settle({ kind: "failed", status: 499, reason: "client left" });
    }
    (response as ServerResponse).writeHead(status, endToEnd(answer.headers, hopByHop, connectionNamed(rawConnection(answer.headers))));
  }

  onBody(chunk: Buffer): void {
    // Held until the end of this read: the last piece of an answer goes with response.end(), one call that writes
    // head and body together, where write() then end() took two passes through the streams.
    if (this.#held) this.#writeHeld();
    this.#held = chunk;
  }

  onEnd(extra: number, trailers?: string[]): void {
    const { upstream, request, response } = this.#attempt;
    const { connection, stream } = upstream;
    const { pools, count } = this.#parts;
    // The backend is done with this request: its connection waits for the next one, unless it cannot.
    const reusable = this.#keepAlive && extra === 0 && this.#requestSent && !stream.destroyed;
    this.#release();
    if (extra > 0) count("http backend sent bytes after its answer");
    if (reusable) pools.park(connection);
    else if (!stream.destroyed) stream.destroy();
    // A chunked answer's trailer section: to a client that reads trailers; the parser used to drop it.
    if (trailers) passTrailers(request, response, trailers, count);
    const last = this.#held;
    this.#held = undefined;
    if (last) (response as ServerResponse).end(last);
    else (response as ServerResponse).end();
    this.#owner.exchanged({ kind: "answered", status: this.#status });
  }

  // The upstream connection's events (upstream-http.ts ConnectionListener).

  data(chunk: Buffer): void {
    try {
      this.#attempt.upstream.connection.parser.feed(chunk);
      // What this read brought of an answer still going on is written now: a stream (server-sent events) is never held back.
      if (this.#held && !this.#settled) this.#writeHeld();
    } catch (error) {
      this.#parts.count("http backend answer malformed");
      if (this.#answered) this.#cutMidAnswer((error as Error).message);
      else this.#failedBeforeAnswer((error as Error).message);
    }
  }

  end(): void {
    // A body that runs until the close ends here (its onEnd settles); anything else unfinished was cut.
    if (this.#attempt.upstream.connection.parser.finishOnEof() || this.#settled) return;
    if (this.#answered) this.#cutMidAnswer("the backend closed mid-answer");
    else this.#failedBeforeAnswer("the backend closed before its answer");
  }

  close(): void {
    if (this.#settled) return;
    if (this.#answered) this.#cutMidAnswer("the backend's connection closed mid-answer");
    else this.#failedBeforeAnswer("the backend's connection closed before its answer");
  }

  error(error: Error): void {
    if (this.#settled) return;
    if (this.#answered) this.#cutMidAnswer(error.message);
    else this.#failedBeforeAnswer(error.message);
  }

  drain(): void {
    if (this.#attempt.body !== undefined) this.#attempt.request.resume();
  }

  /** The request's deadline passed, or its client left (RequestAbort's listener). */
  requestAborted(): void {
    const { deadline, backend, upstream, answersBefore } = this.#attempt;
    // A backend that let the route's deadline pass without a word (a hung process: the kernel accepts for it) may
    // have failed (upstream.ts: endpointTimedOut); one whose answer was under way has not (a long download).
    if (deadline.timedOut && !this.#answered) this.#parts.pools.endpointTimedOut(backend, upstream.endpoint, answersBefore, "no answer by the route's timeout");
    this.#cut("the request timed out or its client left");
    this.#settle({ kind: "failed", status: 504, reason: "request timed out" });
  }

  #perTryTimedOut(): void {
    const { backend, upstream, answersBefore, retry } = this.#attempt;
    this.#parts.pools.endpointTimedOut(backend, upstream.endpoint, answersBefore, "no answer by the attempt's timeout");
    this.#cut("the attempt timed out");
    this.#settle({ kind: retry ? "retry" : "failed", status: 504, reason: "attempt timed out" });
  }

  #writeHeld(): void {
    const chunk = this.#held!;
    this.#held = undefined;
    const { response, upstream } = this.#attempt;
    if ((response as ServerResponse).write(chunk) || this.#waitingForDrain) return;
    this.#waitingForDrain = true;
    upstream.stream.pause();
    this.#onResponseDrain ??= () => {
      this.#waitingForDrain = false;
      if (!this.#settled) upstream.stream.resume();
    };
    (response as ServerResponse).once("drain", this.#onResponseDrain);
  }

  #cut(reason: string): void {
    resetStream(this.#attempt.upstream.stream, new LeafmeshError("PROXY_FAILED", reason));
  }

  /** The backend failed before its answer: an idle connection it had closed is stale, not a failure. */
  #failedBeforeAnswer(why: string): void {
    const { upstream, backend, retry } = this.#attempt;
    const { pools, log, count } = this.#parts;
    if (upstream.reused && !this.#answered) {
      this.#cut("an idle connection the backend closed");
      return this.#settle({ kind: "stale", status: 502, reason: "idle connection closed" });
    }
    count("http backend failed");
    log.debug({ backend: backend.key, endpoint: upstream.endpoint.key, err: why }, "backend request failed");
    pools.endpointFailed(backend, upstream.endpoint, why);
    this.#cut(why);
    this.#settle({ kind: retriable(retry, { failure: "reset" }) ? "retry" : "failed", status: 502, reason: "backend failed" });
  }

  /** Cut mid-answer: the client must see a cut, never a short answer that looks whole. */
  #cutMidAnswer(why: string): void {
    this.#parts.count("http answer cut by backend");
    cutResponse(this.#attempt.response);
    this.#cut(why);
    this.#settle({ kind: "answered", status: this.#status, reason: "answer cut by backend" });
  }

  /** Lets go of the connection and the request: no more callbacks, listeners or timer of this attempt. */
  #release(): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    const { upstream, deadline, request } = this.#attempt;
    clearTimeout(this.#perTry);
    deadline.onAbort(undefined);
    upstream.connection.parser.stop();
    upstream.connection.detach();
    if (this.#onRequestData) request.off("data", this.#onRequestData);
    if (this.#onRequestEnd) request.off("end", this.#onRequestEnd);
    upstream.release();
    return true;
  }

  #settle(outcome: ExchangeOutcome): void {
    if (!this.#release()) return;
    // An attempt that did not answer is taken up again (another attempt, or the gateway's own answer) on a stack of its
    // own, as it was after an await: not inside the connection's event or the parser that told it.
    if (outcome.kind === "answered") this.#owner.exchanged(outcome);
    else queueMicrotask(() => this.#owner.exchanged(outcome));
  }
}
