/**
 * TCP hole punching, the socket part. The plan and the addresses are agreed
 * through the fabric (the tunnel actor's `tunnel-punch` request); this file only
 * opens the socket:
 *
 * - `simultaneousOpen`: both sides connect from their agreed local port to the
 *   other's mapped address at about the same time. Each SYN opens its own NAT's
 *   mapping; the other's SYN then matches it and the kernel completes a TCP
 *   simultaneous open (RFC 793 §3.4). SYNs dropped before the peer's mapping
 *   exists are retried by the kernel (1 s) and by the loop here.
 * - `acceptOnce`: the cone side of a cone/symmetric pair listens on its mapped
 *   port; the symmetric side dials it (its own mapping is unpredictable).
 *
 * Why not @libp2p/dcutr: it dials from ephemeral ports and (utils.js) only
 * punches addresses outside private and documentation ranges — neither holds in
 * the lab or behind carrier-grade NAT.
 *
 * ```ts
 * const socket = await simultaneousOpen({ localPort: 40001, remote: { host: "198.18.64.12", port: 40002 }, timeoutMs: 8_000 });
 * ```
 */
import { connect as netConnect, createServer, isIPv6, type Socket } from "node:net";
import { LeafmeshError } from "../../lib/errors.ts";
import type { HostPort } from "./nat.ts";
import { keepTunnelConnectionAlive } from "./tcp-liveness.ts";

/**
 * How a simultaneous open is retried. A router that drops unsolicited SYNs lets the kernel's own
 * retransmission (1 s) finish the job, so a try lasts long and a failed one waits `retryMs`. A
 * router that answers with an RST (OpenWrt's REJECT, a plain Linux stack) refuses each SYN that
 * arrives before its own host's SYN has opened the mapping, and the RST closes our NAT's entry as
 * well (conntrack): the two SYNs must cross within about one round trip between the routers. So a
 * refused try is retried at once (after `refusedRetryMs`), in a bounded burst, until two cross; a
 * TTL-limited first SYN would avoid it, but Node cannot set a TCP socket's TTL.
 */
export const punchSchedule = {
  /** @default 150 — after a try that timed out or failed otherwise. */
  retryMs: 150,
  /** @default 1 — after a try an RST (or ICMP) refused: the next SYN goes out within the millisecond. */
  refusedRetryMs: 1,
  /** @default 3_000 — at most this many tries in one punch (about 3 s of a refused burst). */
  maxAttempts: 3_000,
} as const;

const refusals = new Set(["ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ENETUNREACH"]);

export async function simultaneousOpen(options: { localPort: number; remote: HostPort; timeoutMs: number }): Promise<Socket> {
  const deadline = performance.now() + options.timeoutMs;
  let lastError: Error | undefined;
  let refused = 0;
  let tries = 0;
  // Bounded: each try lasts at most the time left, and at most maxAttempts tries.
  for (let attempt = 0; attempt < punchSchedule.maxAttempts && performance.now() < deadline; attempt++) {
    tries++;
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const socket = netConnect({ host: options.remote.host, port: options.remote.port, localPort: options.localPort, timeout: Math.max(100, deadline - performance.now()) });
        socket.once("connect", () => {
          socket.setTimeout(0);
          // As @libp2p/tcp does: Nagle plus delayed ACKs would add ~40 ms to every small yamux frame.
          socket.setNoDelay(true);
          keepTunnelConnectionAlive(socket); // a punched path gone silent is noticed (tcp-liveness.ts)
          socket.removeAllListeners("error");
          resolve(socket);
        });
        socket.once("timeout", () => socket.destroy(new LeafmeshError("TUNNEL_FAILED", "simultaneous open timed out")));
        socket.once("error", reject);
      });
    } catch (error) {
      lastError = error as Error;
      const wasRefused = refusals.has((error as NodeJS.ErrnoException).code ?? "");
      if (wasRefused) refused++;
      await new Promise((resolve) => setTimeout(resolve, wasRefused ? punchSchedule.refusedRetryMs : punchSchedule.retryMs));
    }
  }
  // Said for `status --why`: how many tries went out and what met them (a router's RST or ICMP, or silence).
  const lastCode = (lastError as NodeJS.ErrnoException | undefined)?.code;
  throw new LeafmeshError(
    "TUNNEL_FAILED",
    `hole punch to ${options.remote.host}:${options.remote.port} from local port ${options.localPort} failed within ${options.timeoutMs} ms: ${tries} connect ${tries === 1 ? "try" : "tries"} (SYNs) sent, ${refused > 0 ? `${refused} refused by a router (RST or ICMP)` : "none answered (dropped)"}${lastCode ? `, last ${lastCode}` : ""}`,
    { cause: lastError },
  );
}

/** Listens on `localPort` for one connection from `fromHost`; closes the listener after. */
export function acceptOnce(options: { localPort: number; fromHost: string; timeoutMs: number }): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => {
      const from = (socket.remoteAddress ?? "").replace(/^::ffff:/, "");
      if (from !== options.fromHost) {
        socket.destroy();
        return;
      }
      clearTimeout(timer);
      server.close();
      socket.setNoDelay(true);
      keepTunnelConnectionAlive(socket); // a punched path gone silent is noticed (tcp-liveness.ts)
      resolve(socket);
    });
    const timer = setTimeout(() => {
      server.close();
      reject(new LeafmeshError("TUNNEL_FAILED", `no punched connection from ${options.fromHost} on port ${options.localPort} within ${options.timeoutMs} ms`));
    }, options.timeoutMs);
    server.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    server.listen(options.localPort, isIPv6(options.fromHost) ? "::" : "0.0.0.0");
  });
}

/** Dials a listening cone side, retrying until the deadline (its listener may not be up yet). */
export async function dialPunched(options: { remote: HostPort; timeoutMs: number }): Promise<Socket> {
  const deadline = performance.now() + options.timeoutMs;
  let lastError: Error | undefined;
  let tries = 0;
  for (let attempt = 0; attempt < 100 && performance.now() < deadline; attempt++) {
    tries++;
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const socket = netConnect({ host: options.remote.host, port: options.remote.port, timeout: Math.max(100, deadline - performance.now()) });
        socket.once("connect", () => {
          socket.setTimeout(0);
          // As @libp2p/tcp does: Nagle plus delayed ACKs would add ~40 ms to every small yamux frame.
          socket.setNoDelay(true);
          keepTunnelConnectionAlive(socket); // a punched path gone silent is noticed (tcp-liveness.ts)
          socket.removeAllListeners("error");
          resolve(socket);
        });
        socket.once("timeout", () => socket.destroy(new LeafmeshError("TUNNEL_FAILED", "dial timed out")));
        socket.once("error", reject);
      });
    } catch (error) {
      lastError = error as Error;
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
  }
  const lastCode = (lastError as NodeJS.ErrnoException | undefined)?.code;
  throw new LeafmeshError("TUNNEL_FAILED", `dial to ${options.remote.host}:${options.remote.port} failed within ${options.timeoutMs} ms: ${tries} tries${lastCode ? `, last ${lastCode}` : ""}`, { cause: lastError });
}

/**
 * A restricted-cone NAT admits inbound traffic only from addresses its host
 * contacted: one outbound SYN towards the peer's address opens it for that address.
 */
export function primeRestrictedCone(peerHost: string): void {
  const socket = netConnect({ host: peerHost, port: 9, timeout: 500 });
  socket.on("error", () => undefined);
  socket.once("timeout", () => socket.destroy());
  socket.once("connect", () => socket.destroy());
}
