/**
 * The stream contract between the actors: the one thing handed across in-process
 * (docs/architecture.md) is a dialer that opens a byte stream to a target as seen from
 * another node. The tunnel implements it; traffic and the SOCKS proxy use it.
 * UDP rides such a stream as framed datagrams, written here once for both ends
 * (traffic frames a flow's datagrams, the tunnel's far end unframes them).
 *
 * ```ts
 * const stream = await dialer.openStream("edge-b", { host: "10.0.0.5", port: 53, protocol: "UDP" });
 * stream.write(encodeDatagram(query));
 * const decoder = new DatagramDecoder();
 * stream.on("data", (chunk) => decoder.push(chunk).forEach(reply));
 * ```
 */
import type { Duplex } from "node:stream";
import { LeafmeshError } from "../lib/errors.ts";
import { resetStream } from "../lib/join-streams.ts";
import type { EarlyBytes } from "../lib/early-bytes.ts";

export type StreamProtocol = "TCP" | "UDP";

/** Where a stream goes, as seen from the node that serves it. */
export interface StreamTarget {
  host: string;
  port: number;
  protocol: StreamProtocol;
}

export interface StreamDialer {
  /**
   * A byte stream to `target` as seen from `node`. For TCP the stream is the
   * connection (end() half-closes; a reset arrives as an error); for UDP it carries
   * one flow's datagrams, each framed by `encodeDatagram`. Rejects when the node
   * cannot be reached or refuses. `signal` gives the open up (its client hung up): it leaves
   * the queue of opens at once, a stream half-opened is reset, and the promise rejects.
   */
  openStream(node: string, target: StreamTarget, options?: StreamOpenOptions): Promise<Duplex>;
}

export interface StreamOpenOptions {
  signal?: AbortSignal;
  /**
   * A TCP client's first bytes, sent with the target header where the far node reads them (lib/early-bytes.ts).
   * After a failed open, `early.inDoubt` says they may have reached the target: reset the client, try nothing else.
   */
  early?: EarlyBytes;
}

/** A new connection to a Service port, asked of the node's cluster-IP path (the traffic actor) by the SOCKS proxy. */
export interface ServicePortRequest {
  namespace: string;
  service: string;
  /** The Service's TCP port. */
  port: number;
  /** The client's address: session affinity and consistent hashing key on it, as on a cluster-IP client's. */
  clientIp: string;
}

/** What the cluster-IP path did with it: a connection to the endpoint it chose, or why it refused (a reason to show an operator). */
export type ServicePortConnection = { kind: "connected"; stream: Duplex; endpoint: string; node?: string; release(): void } | { kind: "refused"; reason: string };

/**
 * The second thing handed across in-process: the traffic actor opens a Service port for the SOCKS proxy exactly as for
 * a client of the node's cluster IP (its plan and balancer: policy, affinity, site locality, outlier ejection, partition
 * policy, internalTrafficPolicy, terminating endpoints; its connect attempts), so that the two cannot answer differently.
 */
export interface ServicePortDialer {
  /** `release` is called once when the connection ends (least-connections counts it till then). Rejects when `signal` gives the open up. */
  openServicePort(request: ServicePortRequest, options?: { signal?: AbortSignal }): Promise<ServicePortConnection>;
}

/**
 * The code a serving node gives with its refusal (the tunnel's status header) when it
 * refuses a stream for its own limits (streams per peer), not because the target is
 * unreachable: the opener's error then carries it as `targetCode`. A proxy must not
 * hold such a refusal against the endpoint (outlier ejection).
 */
export const overCapacityCode = "OVER_CAPACITY";

/**
 * The code a serving node gives when the stream's target is an endpoint that only Services with
 * internalTrafficPolicy Local lead to: it serves it to clients on its own node only (services/traffic/local-only.ts).
 * The opener's catalog is behind, or the opener ignores the policy (a leafmesh before 2026-12-06).
 */
export const localTrafficPolicyCode = "LOCAL_TRAFFIC_POLICY";

/**
 * Connect errors of the dialling node's own resources: out of file descriptors (EMFILE, ENFILE: an agent under a
 * low `ulimit -n` facing a burst of clients), buffers or memory, or local ports (EADDRNOTAVAIL). Any endpoint would
 * have failed the same: an agent that counted them against the endpoint ejected every healthy one in turn, and
 * said "endpoint ejected" where its own limit was the cause.
 */
export const localResourceCodes: ReadonlySet<string> = new Set(["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM", "EADDRNOTAVAIL"]);

/** Whether a failed `openStream` was the target's own fault: its node answered that it could not connect to it (not a tunnel failure, not a limit, not that node's own resources). */
export function isTargetRefusal(error: unknown): boolean {
  const refusal = error as { code?: unknown; targetCode?: unknown } | null;
  return refusal?.code === "TUNNEL_TARGET_REFUSED" && refusal.targetCode !== overCapacityCode && !isLocalShortage(error);
}

/**
 * Whether a failed connect to an endpoint proves the endpoint bad (outlier ejection): for an endpoint on another
 * node, only that node's answer that the target refused (isTargetRefusal); for one dialled from here, anything
 * but this node's own resources running out.
 */
export function endpointAtFault(error: unknown, remote: boolean): boolean {
  if (isLocalShortage(error)) return false;
  return remote ? isTargetRefusal(error) : true;
}

/** The code of a connect that failed for a node's own resources (this node's, or, in a refusal, the serving node's): EMFILE, ...; undefined for any other failure. */
export function localShortageCode(error: unknown): string | undefined {
  const failed = error as { code?: unknown; targetCode?: unknown } | null;
  const code = failed?.code === "TUNNEL_TARGET_REFUSED" ? failed.targetCode : failed?.code;
  return typeof code === "string" && localResourceCodes.has(code) ? code : undefined;
}

export function isLocalShortage(error: unknown): boolean {
  return localShortageCode(error) !== undefined;
}

/**
 * UDP over a stream (`protocol: "UDP"`): each datagram is one frame, a 2-byte
 * big-endian length then the payload (a UDP payload is at most 65,507 bytes, so
 * the length always fits).
 */
/**
 * Bytes of framed datagrams a UDP-over-stream end may hold unsent in the tunnel stream's write
 * buffer; past it, datagrams are dropped and counted (UDP drops rather than queues: a late
 * datagram is worth less than a fresh one, and a stalled stream must not grow memory without end).
 * @default 262_144 — 64 full-size (4 KiB) DNS/QUIC-sized datagrams, a few ms at the relay's rates.
 */
export const datagramBacklogBytes = 256 * 1024;

export function encodeDatagram(payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(2 + payload.length);
  frame.writeUInt16BE(payload.length, 0);
  frame.set(payload, 2);
  return frame;
}

/** Splits a byte stream back into datagrams; holds at most one partial frame (≤ 65,537 bytes). */
export class DatagramDecoder {
  #pending: Buffer = Buffer.alloc(0);

  /** Feeds bytes; returns the complete datagrams they finish. */
  push(chunk: Buffer): Buffer[] {
    let buffer = this.#pending.length > 0 ? Buffer.concat([this.#pending, chunk]) : chunk;
    const datagrams: Buffer[] = [];
    while (buffer.length >= 2) {
      const length = buffer.readUInt16BE(0);
      if (buffer.length < 2 + length) break;
      datagrams.push(buffer.subarray(2, 2 + length));
      buffer = buffer.subarray(2 + length);
    }
    this.#pending = Buffer.from(buffer);
    return datagrams;
  }
}

/**
 * A stream to `target` on `node`, given up after `timeoutMs` or when `signal` aborts (the client
 * that wanted it left). A stream that arrives after it was given up is reset at once, so the far
 * end does not take it for a finished one. The remote twin of lib/connect-tcp.ts, for the
 * cluster-IP proxy and the gateway; `what` names the connection in errors.
 */
export function openStreamWithin(dialer: StreamDialer, node: string, target: StreamTarget, options: { timeoutMs: number; signal: AbortSignal; what: string; early?: EarlyBytes }): Promise<Duplex> {
  const { timeoutMs, signal, what, early } = options;
  const opening = dialer.openStream(node, target, { signal, early });
  return new Promise((resolve, reject) => {
    let givenUp = false;
    const giveUp = (error: unknown) => {
      givenUp = true;
      // An open given up takes no more of the client; what went already may reach the target (early.inDoubt).
      early?.unanswered();
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
      reject(error);
    };
    const timer = setTimeout(() => giveUp(new LeafmeshError("PROXY_FAILED", `tunnel stream to ${node} for ${what} not open after ${timeoutMs} ms`)), timeoutMs);
    const abort = () => giveUp(new LeafmeshError("PROXY_FAILED", `tunnel stream to ${node} for ${what} abandoned: the client left`));
    signal.addEventListener("abort", abort, { once: true });
    opening.then(
      (stream) => {
        if (givenUp) resetStream(stream, new LeafmeshError("PROXY_FAILED", `tunnel stream to ${node} for ${what} no longer wanted`));
        else {
          clearTimeout(timer);
          signal.removeEventListener("abort", abort);
          resolve(stream);
        }
      },
      (error: unknown) => {
        if (!givenUp) giveUp(error);
      },
    );
  });
}
