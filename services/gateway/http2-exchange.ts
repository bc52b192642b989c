/**
 * One request to a backend that speaks HTTP/2 (upstream-h2.ts), from a client
 * of either HTTP version: a stream on the endpoint's session, the request's
 * body streamed with backpressure, the answer streamed back as it comes, and
 * its trailers (where gRPC puts grpc-status) passed on (http-trailers.ts). A
 * stream the backend resets is a failure before its answer (retried when the
 * policy names resets) and a cut after it: the client's stream is reset, never
 * ended as if whole. The deadline and a client that leaves cancel the stream.
 *
 * The outcome is http-proxy.ts's, as its HTTP/1.1 exchange gives it.
 */
import { subscribe } from "node:diagnostics_channel";
import { constants as http2, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http2";
import type { ServerResponse } from "node:http";
import type { RetryPolicy } from "../../bus/catalog-gateway.ts";
import { cutResponse, retriable, type ExchangeOutcome, type GatewayRequest, type GatewayResponse, type RequestAbort } from "./http-message.ts";
import { passTrailers, readsTrailers } from "./http-trailers.ts";
import type { Http2Upstream } from "./upstream.ts";

/** Request headers of the HTTP/1.1 form that HTTP/2 has no place for (RFC 9113 §8.2.2), or carries as a pseudo-header. */
const notInHttp2 = new Set(["host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"]);

/**
 * Streams to backends that closed before their answer's END_STREAM came (an RST_STREAM, NO_ERROR included; a session
 * that died). Node gives an RST_STREAM(NO_ERROR) the events of a real end ('end', then 'close' with rstCode 0): an
 * answer the backend stopped part-way reached the client as whole, and one it never began as an empty 200. Only the
 * moment of the close tells them apart: a real END_STREAM ends the stream's readable side before the stream closes
 * (after it, an RST_STREAM(NO_ERROR) only asks to stop the request's body, RFC 9113 §8.1: the answer is whole).
 * Node publishes that moment on this channel, as the stream closes, whoever closed it.
 */
const closedUnfinished = new WeakSet<ClientHttp2Stream>();
subscribe("http2.client.stream.close", (message) => {
  const { stream } = message as { stream: ClientHttp2Stream & { _readableState: { ended: boolean } } };
  if (!stream._readableState.ended) closedUnfinished.add(stream);
});

export interface Http2Exchange {
  request: GatewayRequest;
  response: GatewayResponse;
  upstream: Http2Upstream;
  method: string;
  target: string;
  /** The headers as the HTTP/1.1 exchange writes them ([name, value, …], Host among them). */
  headers: readonly string[];
  withBody: boolean;
  deadline: RequestAbort;
  perTryTimeoutMs: number | undefined;
  retry: RetryPolicy | undefined;
  onAnswer(): void;
  count(reason: string): void;
  /** The endpoint answered (its head came): its run of failures ends (outlier ejection). */
  endpointAnswered(): void;
  /** The endpoint failed this request before its answer (a reset, a refusal, its session gone): counted towards its ejection. */
  endpointFailed(why: string): void;
  /** No answer by a deadline: counted towards its ejection unless the endpoint answered other requests meanwhile (upstream.ts). */
  endpointTimedOut(why: string): void;
}

/** HTTP/2 request headers from the HTTP/1.1 list: names lower-cased, Host as :authority, repeats kept. */
function requestHeaders(exchange: Http2Exchange): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = { ":method": exchange.method, ":path": exchange.target, ":scheme": "http" };
  const list = exchange.headers;
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i].toLowerCase();
    if (name === "host") headers[":authority"] = list[i + 1];
    if (notInHttp2.has(name)) continue;
    const existing = headers[name];
    headers[name] = existing === undefined ? list[i + 1] : [...(Array.isArray(existing) ? existing : [String(existing)]), list[i + 1]];
  }
  // The only TE HTTP/2 allows, and the one gRPC servers look for (a client's promise to read trailers).
  if (readsTrailers(exchange.request)) headers.te = "trailers";
  return headers;
}

/** An HTTP/2 header block as a raw list for the client's answer, without pseudo-headers. */
function rawList(headers: IncomingHttpHeaders): string[] {
  const raw: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (name.charCodeAt(0) === 58 /* ":" */ || value === undefined) continue;
    if (Array.isArray(value)) for (const one of value) raw.push(name, one);
    else raw.push(name, String(value));
  }
  return raw;
}

export function exchangeHttp2(exchange: Http2Exchange): Promise<ExchangeOutcome> {
  const { request, upstream, deadline, retry, count } = exchange;
  const response = exchange.response as ServerResponse;
  return new Promise((resolve) => {
    let stream: ClientHttp2Stream;
    try {
      stream = upstream.session.request(requestHeaders(exchange), { endStream: !exchange.withBody });
    } catch (error) {
      upstream.release();
      const { session } = upstream;
      // Stream identifiers used up (2^31 streams on one session): nobody's failure, a new session takes it.
      if ((error as { code?: unknown }).code === "ERR_HTTP2_OUT_OF_STREAMS") {
        session.close();
        return resolve({ kind: "stale", status: 502, reason: "session out of streams" });
      }
      if (session.closed || session.destroyed) {
        // A kept session closed between its pick and this request (a GOAWAY): nothing was sent, a new session takes it.
        // A new one that closed at once is the endpoint's failure: taken for stale, it was made again without end.
        if (upstream.reused) return resolve({ kind: "stale", status: 502, reason: "session closed" });
        count("http backend failed");
        exchange.endpointFailed(`its new HTTP/2 session closed at once: ${(error as Error).message}`);
        return resolve({ kind: retriable(retry, { failure: "refused-stream" }) ? "retry" : "failed", status: 502, reason: "backend closed its session" });
      }
      // The session is sound: what Node's HTTP/2 refuses is the request's own header list (a field it allows once,
      // such as User-Agent or Content-Type, repeated). The client's request, not the endpoint's failure: answered 400;
      // held against the endpoint, three such requests ejected a healthy one.
      return resolve({ kind: "failed", status: 400, reason: `request not sendable over HTTP/2: ${(error as Error).message}` });
    }
    let settled = false;
    let answered = false;
    let status = 502;
    let trailers: IncomingHttpHeaders | undefined;
    const settle = (outcome: ExchangeOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(perTry);
      deadline.onAbort(undefined);
      request.off("data", onRequestData);
      request.off("end", onRequestEnd);
      upstream.release();
      resolve(outcome);
    };
    const cancel = () => {
      if (!stream.closed) stream.close(http2.NGHTTP2_CANCEL);
    };
    stream.on("error", () => undefined); // 'close' follows, with the stream's code
    stream.on("response", (headers) => {
      if (settled) return; // cancelled (the deadline, the client) before the backend answered
      status = Number(headers[":status"]);
      // nghttp2 takes any three digits; Node's servers throw on a final status outside 200–599, and thrown here, in
      // the stream's event, it ended the agent: a backend that said `:status: 600` killed the gateway's process.
      if (!Number.isInteger(status) || status < 200 || status > 599) return notPassable(`the backend answered status ${String(headers[":status"])}`);
      answered = true;
      exchange.endpointAnswered();
      if (retry && retriable(retry, { status })) {
        cancel();
        return settle({ kind: "retry", status, reason: `backend answered ${status}` });
      }
      clearTimeout(perTry);
      exchange.onAnswer();
      if (response.destroyed) {
        cancel();
        return settle({ kind: "failed", status: 499, reason: "client left" });
      }
      try {
        response.writeHead(status, rawList(headers));
      } catch (error) {
        // Whatever else of the backend's head the client's side refuses: nothing was written, so a 502, not a crash.
        return notPassable(`the backend's answer cannot be passed on: ${(error as Error).message}`);
      }
      for (const chunk of early.splice(0)) write(chunk);
    });
    /** A head the gateway cannot pass on: the backend's failure, answered (and counted) 502 `backend answer malformed`, nothing sent yet. */
    const notPassable = (why: string) => {
      exchange.endpointFailed(why);
      cancel();
      settle({ kind: "failed", status: 502, reason: "backend answer malformed" });
    };
    // Node emits 'response' on the next tick, but a DATA frame that came in the same read as the HEADERS is pushed
    // at once: on a tunnel stream (a JS stream, whole reads) the body's first bytes come before the answer's head.
    const early: Buffer[] = [];
    const write = (chunk: Buffer) => {
      if (settled || response.write(chunk)) return;
      stream.pause();
      response.once("drain", () => stream.resume());
    };
    stream.on("data", (chunk: Buffer) => (answered ? write(chunk) : early.push(chunk)));
    stream.on("trailers", (received) => (trailers = received));
    stream.on("end", () => {
      // Node ends the stream's reading side too when its session dies under it (the backend's connection closed,
      // its session destroyed: 'close' follows with its code, CANCEL) and when the backend resets it, NO_ERROR
      // included: then the answer is a cut, or no answer at all, never an end ('close' says which).
      if (settled || !answered || stream.rstCode !== http2.NGHTTP2_NO_ERROR || closedUnfinished.has(stream)) return;
      settle({ kind: "answered", status });
      if (trailers) passTrailers(request, exchange.response, rawList(trailers), count);
      response.end();
    });
    stream.on("close", () => {
      if (settled) return;
      if (answered) {
        count("http answer cut by backend");
        cutResponse(exchange.response);
        return settle({ kind: "answered", status, reason: "answer cut by backend" });
      }
      count("http backend failed");
      // RFC 9113 §8.7: a stream refused (REFUSED_STREAM, or left out by a GOAWAY) was not processed, and is safe to
      // send again: Istio's default retry condition `refused-stream` names it.
      const refused = stream.rstCode === http2.NGHTTP2_REFUSED_STREAM;
      exchange.endpointFailed(`the backend ${refused ? "refused the stream" : "reset the stream"} before its answer (code ${stream.rstCode})`);
      settle({ kind: retriable(retry, { failure: refused ? "refused-stream" : "reset" }) ? "retry" : "failed", status: 502, reason: "backend failed" });
    });
    deadline.onAbort(() => {
      // No answer by the route's deadline may be the endpoint's failure (upstream.ts: endpointTimedOut); a client that left is not.
      if (deadline.timedOut && !answered) {
        exchange.endpointTimedOut("no answer by the route's timeout");
        upstream.suspect();
      }
      cancel();
      settle({ kind: "failed", status: 504, reason: "request timed out" });
    });
    const perTry = exchange.perTryTimeoutMs
      ? setTimeout(() => {
          exchange.endpointTimedOut("no answer by the attempt's timeout");
          upstream.suspect();
          cancel();
          settle({ kind: retry ? "retry" : "failed", status: 504, reason: "attempt timed out" });
        }, exchange.perTryTimeoutMs)
      : undefined;
    const onRequestData = (chunk: Buffer) => {
      if (stream.write(chunk)) return;
      request.pause();
      stream.once("drain", () => request.resume());
    };
    const onRequestEnd = () => stream.end();
    if (exchange.withBody) {
      request.on("data", onRequestData);
      request.on("end", onRequestEnd);
    }
  });
}
