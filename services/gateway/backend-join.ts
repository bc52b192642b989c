/**
 * A TCP connection of a gateway port joined with a backend of its route: a TCPRoute's, a TLS passthrough's
 * (TLSRoute: the ClientHello read to route it goes first), or a terminated TLS connection's. The backend's
 * balancer picks the endpoint (upstream.ts); one on another node is reached through a tunnel stream that carries
 * the client's first bytes with its header (lib/early-bytes.ts), so on a WAN the ClientHello or first request is at
 * the backend one round trip sooner. A stream that failed after they went resets the client and tries no other
 * endpoint: they may have reached the first one. Every refusal resets the client (RST) and is counted.
 *
 * ```ts
 * joinBackend(deps, socket, route, { kind: "tcp", port: 443, client: "198.51.100.7", durationMs: 0, complete: false }, clientHello);
 * ```
 */
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { EarlyBytesInDoubt } from "../../lib/early-bytes.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import { joinStreams, resetStream, type JoinedStreams } from "../../lib/join-streams.ts";
import type { PlannedL4Route } from "./plan.ts";
import type { WeightedChoice } from "./router.ts";
import type { BackendPools } from "./upstream.ts";

/** One line of the access log for a TCP or TLS connection. */
export interface ConnectionEntry {
  kind: "tcp" | "tls-passthrough" | "tls-terminate";
  port: number;
  client: string;
  serverName?: string;
  route?: string;
  backend?: string;
  endpoint?: string;
  durationMs: number;
  /** Whether both directions ended cleanly. */
  complete: boolean;
  reason?: string;
}

export interface BackendJoinDeps {
  pools: BackendPools;
  count: (reason: string) => void;
  routeOutcome: (route: string, status: number) => void;
  access: (entry: ConnectionEntry) => void;
  /** The listener's: its backends' weights, and its open joins (reset when it closes). */
  weights: WeightedChoice;
  joins: Set<JoinedStreams>;
  /** @default 3_600_000 — see ListenerDeps. */
  idleTimeoutMs?: number;
}

/** `client` joined with a backend of `route`; `early`: bytes read from it already (to route it), sent first. */
export function joinBackend(deps: BackendJoinDeps, client: Duplex, route: PlannedL4Route, entry: ConnectionEntry, early: Buffer): void {
  const { pools, count, routeOutcome, access, weights, joins } = deps;
  const started = performance.now();
  entry.route = route.route.name;
  const finish = (complete: boolean, reason?: string) => {
    entry.durationMs = Math.round(performance.now() - started);
    entry.complete = complete;
    if (reason) entry.reason = reason;
    routeOutcome(route.route.name, complete ? 200 : 502);
    access(entry);
  };
  const backend = weights.pick(route.backends);
  if (!backend) {
    count(`${entry.kind} refused: no backend with a weight`);
    finish(false, "no backend with a weight");
    return resetStream(client, new LeafmeshError("PROXY_FAILED", "no backend"));
  }
  entry.backend = backend.key;
  const abandon = new AbortController();
  const onGone = () => abandon.abort();
  client.once("close", onGone);
  client.pause();
  // The bytes read to route it (a ClientHello) are the client's again, to go with a tunnel stream's header first.
  if (early.length > 0) client.unshift(early);
  pools.connect(backend, entry.client, abandon, client).then(
    (upstream) => {
      client.off("close", onGone);
      entry.endpoint = upstream.endpoint.key;
      if (client.destroyed) {
        upstream.release();
        count(`${entry.kind} client left before connect`);
        finish(false, "client left before connect");
        return resetStream(upstream.stream, new LeafmeshError("PROXY_FAILED", "the client left before the connection was made"));
      }
      count(`${entry.kind} connections`);
      const join = joinStreams(client, upstream.stream, {
        onClose: (outcome) => {
          joins.delete(join);
          upstream.release();
          if (!outcome.complete) count(`${entry.kind} cut by ${outcome.cutBy === "a" ? "client" : outcome.cutBy === "b" ? "backend" : "gateway"}`);
          finish(outcome.complete, outcome.complete ? undefined : outcome.error?.message);
        },
      });
      joins.add(join);
      const idleMs = deps.idleTimeoutMs ?? 3_600_000;
      if ("setTimeout" in client && typeof client.setTimeout === "function") {
        (client as Socket).setTimeout(idleMs, () => {
          count(`${entry.kind} idle timeout`);
          join.reset(new LeafmeshError("PROXY_FAILED", `idle for ${idleMs} ms`));
        });
      }
      client.resume();
    },
    (error: unknown) => {
      client.off("close", onGone);
      if (abandon.signal.aborted) {
        count(`${entry.kind} client left before connect`);
        return finish(false, "client left before connect");
      }
      const reason = error instanceof Error ? error.message : String(error);
      // EarlyBytesInDoubt: its first bytes may have reached the endpoint, so it is reset and tried nowhere else (upstream.ts).
      count(`${entry.kind} ${error instanceof EarlyBytesInDoubt ? "reset: early bytes in doubt" : `refused: ${/no endpoints/.test(reason) ? "no endpoints" : "no endpoint reachable"}`}`);
      finish(false, reason);
      resetStream(client, new LeafmeshError("PROXY_FAILED", reason));
    },
  );
}
