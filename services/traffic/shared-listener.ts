/**
 * One TCP listener for every TCP service port of the node. The proxier DNATs each
 * service port's cluster IP to a loopback address of its own on one shared port
 * (127.128.0.0/9 holds 8 million), and the socket bound to that port takes them
 * all: the accepted socket's `localAddress` names the service port. Node can
 * neither set `IP_TRANSPARENT` (tproxy) nor read `SO_ORIGINAL_DST`; it needs
 * neither. One listen() instead of one per service port: a fresh agent at 10,000
 * services skipped ~0.3 s of socket/bind/listen calls and their handles, and the
 * catalog size no longer meets the agent's open files (docs/limits.md, wall 3).
 *
 * The socket is bound to 0.0.0.0 (a socket bound to one loopback address takes
 * only that address). A connection to any address that is not a registered
 * service port's (the node's own addresses from the network, an address freed
 * by a removed service) is reset before a byte is read, and counted. From the
 * network, 127.0.0.0/8 itself is a martian, or dropped by the proxier's
 * localnet guard where interception turned route_localnet on.
 *
 * IPv6 cluster IPs come to a second socket on [::] (IPv6 only), on the same
 * port where it is free: each service port's IPv6 address is the one of
 * bus/ipv6-listeners.ts with its index, and names it the same way. Where the host
 * has no IPv6 the second socket is not there, and IPv4 is served as before.
 *
 * Addresses are handed out in order and not reused until the 8 million have
 * gone round: a rule the proxier has not yet replaced never leads a client to
 * another service that took a freed address.
 *
 * ```ts
 * const front = new SharedTcpListener({ counters, log });
 * await front.listen(picker);                       // one port from listener-ports.ts
 * const address = front.register((socket) => ...);  // "127.128.0.1"
 * front.unregister(address);
 * ```
 */
import { createServer, type Server, type Socket } from "node:net";
import { ipv6ServiceAddress, ipv6ServiceIndex } from "../../bus/ipv6-listeners.ts";
import type { Logger } from "../../lib/log.ts";
import type { Counters } from "./counters.ts";
import { listenOnPickedPort, type ListenerPortPicker } from "./listener-ports.ts";
import { stripMappedPrefix } from "./tcp-proxy.ts";

/** 127.128.0.0/9: away from 127.0.0.1, 127.0.0.53 (systemd-resolved) and 127.0.1.1 (Debian's host name). */
const base = (127 << 24) | (128 << 16);
const size = 1 << 23;

/** The i-th service address (0 ≤ i < 2^23 - 1; 127.255.255.255, the broadcast, is never handed out). */
export function serviceAddress(index: number): string {
  const value = base + index;
  return `127.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
}

/** The index of a 127.128.0.0/9 service address, or undefined for any other address. */
function serviceIndex(address: string): number | undefined {
  const parts = address.split(".").map(Number);
  if (parts.length !== 4 || parts[0] !== 127 || parts[1] < 128) return undefined;
  return (((parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0) - (base & 0xffffff);
}

export type AcceptHandler = (socket: Socket) => void;

export interface SharedTcpListenerOptions {
  counters: Counters;
  log: Logger;
}

export class SharedTcpListener {
  readonly #options: SharedTcpListenerOptions;
  readonly #server: Server;
  /** IPv6 cluster IPs' connections ([::], IPv6 only): absent until listen, and where the host has no IPv6. */
  #server6?: Server;
  #port6 = 0;
  readonly #handlers = new Map<string, AcceptHandler>();
  #next = 1;
  #port = 0;

  constructor(options: SharedTcpListenerOptions) {
    this.#options = options;
    this.#server = this.#createServer(() => this.#port);
  }

  #createServer(port: () => number): Server {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) => this.#accept(socket));
    // After listen, errors are accept failures (EMFILE when out of fds): count them, keep serving; unhandled they would end the agent.
    server.on("error", (error: NodeJS.ErrnoException) => {
      if (port() !== 0) this.#options.counters.count(`tcp accept failed: ${error.code ?? "error"}`);
    });
    return server;
  }

  get port(): number {
    return this.#port;
  }

  /** The port of the IPv6 socket, 0 when there is none (no IPv6 on the host). */
  get port6(): number {
    return this.#port6;
  }

  /** The IPv6 address (bus/ipv6-listeners.ts) of the service port registered at `address`, when there is an IPv6 socket. */
  host6(address: string): string | undefined {
    if (this.#port6 === 0) return undefined;
    const index = serviceIndex(address);
    return index === undefined ? undefined : ipv6ServiceAddress(index);
  }

  /** Binds one port from the picker (listener-ports.ts: a taken one is skipped; after a run of them the kernel picks). */
  async listen(picker: Pick<ListenerPortPicker, "next">): Promise<number> {
    await listenOnPickedPort(picker, (port) =>
      new Promise<void>((resolve, reject) => {
        this.#server.once("error", reject);
        this.#server.listen({ port, host: "0.0.0.0", backlog: 4096 }, () => {
          this.#server.off("error", reject);
          resolve();
        });
      }),
    );
    const address = this.#server.address();
    this.#port = typeof address === "object" && address ? address.port : 0;
    await this.#listen6();
    this.#options.log.debug({ port: this.#port, port6: this.#port6 }, "shared TCP listener open");
    return this.#port;
  }

  /** The IPv6 socket, on the IPv4 socket's port where it is free, else one the kernel picks; none where IPv6 is off. */
  async #listen6(): Promise<void> {
    const server = this.#createServer(() => this.#port6);
    const listen = (port: number) =>
      new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ port, host: "::", ipv6Only: true, backlog: 4096 }, () => {
          server.off("error", reject);
          resolve();
        });
      });
    try {
      await listen(this.#port).catch((error: NodeJS.ErrnoException) => {
        if (error.code === "EADDRINUSE") return listen(0);
        throw error;
      });
    } catch (error) {
      // EAFNOSUPPORT, EADDRNOTAVAIL: IPv6 is off here (disable_ipv6, ipv6.disable=1). IPv4 goes on alone.
      this.#options.log.info({ err: error }, "no IPv6 socket for the shared TCP listener: IPv6 cluster IPs are not served here");
      return;
    }
    const address = server.address();
    this.#port6 = typeof address === "object" && address ? address.port : 0;
    this.#server6 = server;
  }

  /** A new service address whose connections go to `handler`. */
  register(handler: AcceptHandler): string {
    for (let tries = 0; tries < size; tries++) {
      const index = this.#next;
      this.#next = this.#next + 1 >= size - 1 ? 1 : this.#next + 1;
      const address = serviceAddress(index);
      if (this.#handlers.has(address)) continue;
      this.#handlers.set(address, handler);
      return address;
    }
    throw new Error("every service address of 127.128.0.0/9 is in use");
  }

  unregister(address: string): void {
    this.#handlers.delete(address);
  }

  /** Stops accepting; connections already handed over are their handlers'. */
  close(): Promise<void> {
    this.#handlers.clear();
    const closing = [this.#server, this.#server6].filter((server): server is Server => server?.listening === true);
    return Promise.all(closing.map((server) => new Promise<void>((resolve) => server.close(() => resolve())))).then(() => undefined);
  }

  #accept(socket: Socket): void {
    const local = stripMappedPrefix(socket.localAddress);
    const index6 = ipv6ServiceIndex(local);
    const handler = this.#handlers.get(index6 === undefined ? local : serviceAddress(index6));
    if (handler) return handler(socket);
    socket.on("error", () => undefined);
    this.#options.counters.count("tcp refused: not a service address");
    socket.resetAndDestroy();
  }
}
