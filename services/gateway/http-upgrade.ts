/**
 * WebSocket upgrades through the gateway, from HTTP/1.1 clients on plain and
 * TLS-terminated listeners, and from HTTP/2 clients by extended CONNECT (RFC
 * 8441: the listeners announce SETTINGS_ENABLE_CONNECT_PROTOCOL, and browsers
 * then open WebSockets on their HTTP/2 connection; upgrade-clients.ts tells
 * the two kinds of client apart). The upgrade request is routed as any request is
 * (host, path, method, headers; the rule's weights, the backend's balancer, an
 * endpoint here or through the tunnel) and sent to the endpoint on a connection
 * of its own, with its Upgrade. A 101 from the backend joins the client and the
 * backend both ways (lib/join-streams.ts) for as long as both hold it. A cut on
 * either side reaches the other as a cut: a WebSocket client sees close code
 * 1006, never a clean close that nobody sent. Any other answer (403, 426) goes
 * back as the backend gave it, and the client's connection (or stream) ends after it.
 *
 * Istio's gateways and Gateway API implementations (Envoy's `upgrade_configs`)
 * pass WebSocket upgrades by default. Node-RED's editor, Grafana's live panels
 * and most dashboards at an edge site need them; before this the gateway
 * answered the upgrade as a plain request, and the page never connected.
 *
 * The rule's timeout bounds the wait for the backend's answer, not the upgraded
 * connection. That ends when a side ends it, or after the listener's idle
 * timeout, as a TCP route's connection does. One access-log line per upgrade,
 * written when it ends, with status 101 (200 for HTTP/2) and the whole duration.
 */
import type { ServerHttp2Stream } from "node:http2";
import type { Duplex } from "node:stream";
import { EarlyBytesInDoubt } from "../../lib/early-bytes.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import { joinStreams, resetStream, type JoinedStreams } from "../../lib/join-streams.ts";
import type { Logger } from "../../lib/log.ts";
import { requestHead, ResponseParser } from "./http1-codec.ts";
import { connectionNamed, describeRequest, endToEnd, setByGateway, type AccessEntry, type GatewayRequest } from "./http-message.ts";
import { http1UpgradeClient, http2UpgradeClient } from "./upgrade-clients.ts";
import type { HttpContext } from "./http-proxy.ts";
import { routeHttp, type WeightedChoice } from "./router.ts";
import { firstBytes, NoUpstreamError, type BackendPools, type Upstream } from "./upstream.ts";

export interface UpgradeDeps {
  pools: BackendPools;
  weights: WeightedChoice;
  log: Logger;
  count(reason: string): void;
  routeOutcome(route: string, status: number): void;
  access(entry: AccessEntry): void;
  /** @default 60_000 — the wait for the backend's answer when the rule has no timeout (the forwarder's default). */
  defaultTimeoutMs?: number;
}

/** Where the upgraded connection is kept: the listener resets its joins when it closes, and times out idle ones. */
export interface UpgradeContext extends HttpContext {
  joins?: Set<JoinedStreams>;
  /** @default 3_600_000 — an upgraded connection silent this long is reset (the listener's TCP idle timeout). */
  idleTimeoutMs?: number;
}

const noop = () => undefined;

/**
 * Routes a WebSocket upgrade, sends it to a backend of its rule, and joins the client with it on a 101. `client` is
 * the client's connection (a socket, or a terminated TLS socket) and `early` what it sent after the request's head;
 * or, for an HTTP/2 client's extended CONNECT (RFC 8441), its stream.
 */
export async function forwardUpgrade(deps: UpgradeDeps, request: GatewayRequest, client: Duplex, early: Buffer, context: UpgradeContext): Promise<void> {
  const started = performance.now();
  const side = request.httpVersionMajor === 2 ? http2UpgradeClient(client as ServerHttp2Stream) : http1UpgradeClient(client, String(request.headers.upgrade));
  client.on("error", noop);
  client.pause();
  const { view, entry, target } = describeRequest(request, context);
  // An extended CONNECT is routed as the GET it stands for (RFC 8441 §4); its access-log line says CONNECT.
  view.method = "GET";
  const finish = (status: number, reason?: string) => {
    entry.status = status;
    entry.durationMs = Math.round((performance.now() - started) * 10) / 10;
    if (reason) entry.reason = reason;
    if (entry.route) deps.routeOutcome(entry.route, status);
    deps.access(entry);
  };
  const refuse = (status: number, reason: string) => {
    deps.count(`http ${reason}`);
    side.refuse(status, reason);
    finish(status, reason);
  };
  const decision = routeHttp(context.hosts, view);
  if (decision.kind === "no host") return refuse(404, "no route for the host");
  if (decision.kind === "no route") return refuse(404, "no route for the request");
  // A WebSocket to a route that redirects to https: told where, as any request is (browsers follow for ws:// too).
  if (decision.kind === "redirect") {
    deps.count("http redirected to https");
    side.refuse(301, "redirected to https", { location: `https://${decision.host}${target}` });
    return finish(301, "redirected to https");
  }
  const rule = decision.entry.rule;
  entry.route = rule.route.name;
  entry.attempts = 1;
  const backend = deps.weights.pick(rule.backends);
  if (!backend) return refuse(503, "no backend with a weight");
  entry.backend = backend.key;

  const abort = new AbortController();
  const timeoutMs = rule.timeoutMs ?? deps.defaultTimeoutMs ?? 60_000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    abort.abort();
  }, timeoutMs);
  const onGone = () => abort.abort();
  client.once("close", onGone);
  const hashHeader = deps.pools.hashHeader(backend.key);
  const hashKey = (hashHeader && (request.headers[hashHeader] as string | undefined)) || entry.client;

  const headers = endToEnd(request.rawHeaders, setByGateway, connectionNamed(request.headers.connection));
  const forwardedFor = request.headers["x-forwarded-for"];
  headers.push("host", entry.host, "x-forwarded-for", typeof forwardedFor === "string" ? `${forwardedFor}, ${entry.client}` : entry.client, "x-forwarded-proto", context.scheme, ...side.backendHeaders);
  // The upgrade request (and what the client sent behind it) goes with a remote endpoint's tunnel stream header.
  const first = firstBytes(requestHead("GET", target, headers), early);
  let upstream: Upstream;
  try {
    upstream = await deps.pools.connect(backend, hashKey, abort, first);
  } catch (error) {
    clearTimeout(timer);
    client.off("close", onGone);
    if (timedOut) return refuse(504, "request timed out");
    if (client.destroyed) return finish(499, "client left");
    // It may have reached the endpoint (upstream.ts): not sent to another one.
    if (error instanceof EarlyBytesInDoubt) return refuse(502, "upgrade in doubt: its connection failed after it went");
    return refuse(503, error instanceof NoUpstreamError && error.reason === "no endpoints" ? "no endpoints" : "no endpoint reachable");
  }
  entry.endpoint = upstream.endpoint.key;
  const { stream } = upstream;
  stream.on("error", noop);
  if (client.destroyed || timedOut) {
    clearTimeout(timer);
    client.off("close", onGone);
    upstream.release();
    resetStream(stream, new LeafmeshError("PROXY_FAILED", timedOut ? "the upgrade timed out" : "the client left before its upgrade was sent"));
    return timedOut && !client.destroyed ? refuse(504, "request timed out") : finish(499, "client left");
  }

  const unsent = first.read() as Buffer | null;
  if (unsent) stream.write(unsent);

  let settled = false;
  let answered = false;
  const settle = () => {
    settled = true;
    clearTimeout(timer);
    client.off("close", onGone);
    stream.off("data", onData);
    stream.off("end", onEnd);
    stream.off("close", onEnd);
    abort.signal.removeEventListener("abort", onAbort);
  };
  /** The backend failed or the deadline passed: before an answer the client is told, after one it is cut. */
  const fail = (status: number, reason: string) => {
    if (settled) return;
    settle();
    upstream.release();
    resetStream(stream, new LeafmeshError("PROXY_FAILED", reason));
    if (client.destroyed) return finish(499, "client left");
    if (answered) {
      deps.count("http answer cut by backend");
      side.cut(new LeafmeshError("PROXY_FAILED", reason));
      return finish(status, reason);
    }
    refuse(status, reason);
  };
  const onAbort = () => fail(timedOut ? 504 : 499, timedOut ? "request timed out" : "client left");
  abort.signal.addEventListener("abort", onAbort);

  const parser = new ResponseParser({
    head: false,
    // Refused (403, 426, a redirect): passed back as it is, and the connection closes after it.
    onHead: (answer) => {
      if (!side.passHead(answer)) {
        deps.count("http backend answer malformed");
        parser.stop();
        return fail(502, `the backend's answer ${answer.status} cannot be passed on`);
      }
      answered = true;
      entry.status = answer.status;
    },
    onBody: (chunk) => {
      if (!client.write(chunk)) {
        stream.pause();
        client.once("drain", () => stream.resume());
      }
    },
    onEnd: () => {
      settle();
      upstream.release();
      stream.destroy();
      side.end();
      deps.count("http upgrade refused by backend");
      finish(entry.status);
    },
    onSwitch: (answer, rest) => {
      const refused = side.switched(answer, rest);
      if (refused) {
        deps.count("http backend answer malformed");
        return fail(502, refused);
      }
      settle();
      deps.count("http upgraded");
      const join = joinStreams(side.joinable(), stream, {
        onClose: (outcome) => {
          context.joins?.delete(join);
          upstream.release();
          if (!outcome.complete) deps.count(`http upgraded connection cut by ${outcome.cutBy === "a" ? "client" : "backend"}`);
          finish(side.switchedStatus, outcome.complete ? undefined : outcome.error?.message);
        },
      });
      context.joins?.add(join);
      const idleMs = context.idleTimeoutMs ?? 3_600_000;
      side.idle(idleMs, () => {
        deps.count("http upgraded connection idle timeout");
        join.reset(new LeafmeshError("PROXY_FAILED", `idle for ${idleMs} ms`));
      });
      stream.resume();
      client.resume();
    },
  });
  const onData = (chunk: Buffer) => {
    try {
      parser.feed(chunk);
    } catch (error) {
      deps.count("http backend answer malformed");
      fail(502, (error as Error).message);
    }
  };
  const onEnd = () => {
    if (settled) return;
    if (parser.finishOnEof()) return;
    deps.count("http backend failed");
    fail(502, answered ? "the backend closed mid-answer" : "backend failed");
  };
  stream.on("data", onData);
  stream.on("end", onEnd);
  stream.on("close", onEnd);
}
