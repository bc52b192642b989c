/**
 * GET from a nats-server's monitoring port (`/healthz`, `/varz`, `/leafz`) with
 * node:http (taken as lib/node-http.ts does), not `fetch`. Node's fetch is undici, loaded on first use with its
 * own HTTP parser compiled from WebAssembly: in a bare Node 24 process three
 * fetches cost ~120 ms of CPU and ~26 MiB of RSS where node:http costs ~20 ms and
 * nothing a process does not already hold. Every agent polls its own server's
 * monitor (supervisor health, fabric monitor), so every agent paid both, at
 * start, where the catalog load is CPU-bound too.
 *
 * ```ts
 * const health = await monitorGet("http://127.0.0.1:8222/healthz", 1_000); // { status: 200, body: "…" } | undefined
 * const leafz = await monitorJson<{ leafs?: unknown[] }>("http://127.0.0.1:8222/leafz", 2_000);
 * ```
 */
import { http } from "../lib/node-http.ts";

/**
 * The monitor's base URL for a listen address: an IPv6 host in brackets, a wildcard (0.0.0.0, ::) reached on
 * loopback. `http://::1:8222` is no URL: a server listening on ::1 never became ready, as nothing could ask it.
 */
export function monitorBase(monitor: { host: string; port: number }): string {
  const host = monitor.host === "0.0.0.0" ? "127.0.0.1" : monitor.host === "::" ? "[::1]" : monitor.host.includes(":") ? `[${monitor.host}]` : monitor.host;
  return `http://${host}:${monitor.port}`;
}

/** @default 64 MiB — a monitor answer larger than this is refused (leafz with subscriptions grows with the nodes). */
const maxBodyBytes = 64 * 1024 * 1024;

/** The status and body, or undefined when nothing answered in time (refused, reset, timed out, too large). */
export function monitorGet(url: string, timeoutMs: number): Promise<{ status: number; body: string } | undefined> {
  return new Promise((resolve) => {
    // A promise settles once: whichever of the answer, an error or the deadline comes first wins.
    const fail = () => resolve(undefined);
    try {
      const request = http.get(url, { signal: AbortSignal.timeout(timeoutMs) }, (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size <= maxBodyBytes) chunks.push(chunk);
          else {
            request.destroy();
            fail();
          }
        });
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
        response.on("error", fail);
      });
      request.on("error", fail);
    } catch {
      fail(); // a URL node:http cannot request
    }
  });
}

/** The JSON body of a 2xx answer, or undefined (no answer, another status, not JSON). */
export async function monitorJson<T>(url: string, timeoutMs: number): Promise<T | undefined> {
  const answer = await monitorGet(url, timeoutMs);
  if (!answer || answer.status < 200 || answer.status >= 300) return undefined;
  try {
    return JSON.parse(answer.body) as T;
  } catch {
    return undefined;
  }
}
