/**
 * Orders upstream URLs by measured round-trip time, nearest first. The leaf
 * remote is rendered in this order with `dont_randomize`, so a leaf attaches to
 * the nearest hub (or site server) it is given and fails over down the list.
 * RTT here is the TCP connect time, the best of a few tries: what a leaf
 * connection's handshake costs too.
 *
 * ```ts
 * const ordered = await orderByRtt(["nats-leaf://far:7422", "nats-leaf://near:7422"]);
 * ordered[0].url; // "nats-leaf://near:7422"
 * ```
 */
import { connect } from "node:net";

export interface MeasuredUpstream {
  url: string;
  /** Undefined when unreachable: such URLs go last, in the order given. */
  rttMs?: number;
}

export async function measureTcpRtt(host: string, port: number, tries = 3, timeoutMs = 1_000): Promise<number | undefined> {
  let best: number | undefined;
  for (let attempt = 0; attempt < tries; attempt++) {
    const started = performance.now();
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect({ host, port, timeout: timeoutMs });
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("timeout", () => {
        socket.destroy();
        resolve(false);
      });
      socket.once("error", () => resolve(false));
    });
    if (!ok) continue;
    const rtt = performance.now() - started;
    best = best === undefined ? rtt : Math.min(best, rtt);
  }
  return best === undefined ? undefined : Math.round(best * 1000) / 1000;
}

export async function orderByRtt(urls: string[]): Promise<MeasuredUpstream[]> {
  return orderMeasured(await measureUpstreams(urls));
}

/** Each URL's TCP connect time, in the order given (`leafmesh netcheck` shows them). */
export function measureUpstreams(urls: string[]): Promise<MeasuredUpstream[]> {
  return Promise.all(
    urls.map(async (url) => {
      const parsed = new URL(url);
      const rttMs = await measureTcpRtt(parsed.hostname.replace(/^\[|\]$/g, ""), Number(parsed.port));
      return rttMs === undefined ? { url } : { url, rttMs };
    }),
  );
}

/** Pure: nearest first, unreachable last; see orderByRtt. */
export function orderMeasured(upstreams: MeasuredUpstream[]): MeasuredUpstream[] {
  const measured = upstreams.map((upstream, index) => ({ ...upstream, index }));
  // Upstreams within 25% + 1 ms of the nearest count as equally near: among them the
  // operator's order stands (jitter must not reshuffle a list that was ordered on purpose).
  const best = Math.min(...measured.map((upstream) => upstream.rttMs ?? Infinity));
  const near = (rtt: number | undefined) => rtt !== undefined && rtt <= best * 1.25 + 1;
  measured.sort((a, b) => {
    const rank = (upstream: typeof a) => (near(upstream.rttMs) ? 0 : upstream.rttMs === undefined ? 2 : 1);
    return rank(a) - rank(b) || (rank(a) === 1 ? a.rttMs! - b.rttMs! : 0) || a.index - b.index;
  });
  return measured.map(({ url, rttMs }) => ({ url, rttMs }));
}
