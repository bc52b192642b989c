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
import { connect as netConnect, createServer, type Socket } from "node:net";
import { LeafmeshError } from "../../lib/errors.ts";
import type { HostPort } from "./nat.ts";

export async function simultaneousOpen(options: { localPort: number; remote: HostPort; timeoutMs: number }): Promise<Socket> {
  const deadline = Date.now() + options.timeoutMs;
  let lastError: Error | undefined;
  // Bounded: each try lasts at most the time left, and a failed try waits 150 ms.
  for (let attempt = 0; attempt < 100 && Date.now() < deadline; attempt++) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const socket = netConnect({ host: options.remote.host, port: options.remote.port, localPort: options.localPort, timeout: Math.max(100, deadline - Date.now()) });
        socket.once("connect", () => {
          socket.setTimeout(0);
          // As @libp2p/tcp does: Nagle plus delayed ACKs would add ~40 ms to every small yamux frame.
          socket.setNoDelay(true);
          socket.removeAllListeners("error");
          resolve(socket);
        });
        socket.once("timeout", () => socket.destroy(new LeafmeshError("TUNNEL_FAILED", "simultaneous open timed out")));
        socket.once("error", reject);
      });
    } catch (error) {
      lastError = error as Error;
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
  }
  throw new LeafmeshError("TUNNEL_FAILED", `hole punch to ${options.remote.host}:${options.remote.port} from local port ${options.localPort} failed within ${options.timeoutMs} ms`, {
    cause: lastError,
  });
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
    server.listen(options.localPort, "0.0.0.0");
  });
}

/** Dials a listening cone side, retrying until the deadline (its listener may not be up yet). */
export async function dialPunched(options: { remote: HostPort; timeoutMs: number }): Promise<Socket> {
  const deadline = Date.now() + options.timeoutMs;
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 100 && Date.now() < deadline; attempt++) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const socket = netConnect({ host: options.remote.host, port: options.remote.port, timeout: Math.max(100, deadline - Date.now()) });
        socket.once("connect", () => {
          socket.setTimeout(0);
          // As @libp2p/tcp does: Nagle plus delayed ACKs would add ~40 ms to every small yamux frame.
          socket.setNoDelay(true);
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
  throw new LeafmeshError("TUNNEL_FAILED", `dial to ${options.remote.host}:${options.remote.port} failed within ${options.timeoutMs} ms`, { cause: lastError });
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
