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

export type AcceptHandler = (socket: Socket) => void;

export interface SharedTcpListenerOptions {
  counters: Counters;
  log: Logger;
}

export class SharedTcpListener {
  readonly #options: SharedTcpListenerOptions;
  readonly #server: Server;
  readonly #handlers = new Map<string, AcceptHandler>();
  #next = 1;
  #port = 0;

  constructor(options: SharedTcpListenerOptions) {
    this.#options = options;
    this.#server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) => this.#accept(socket));
    // After listen, errors are accept failures (EMFILE when out of fds): count them, keep serving; unhandled they would end the agent.
    this.#server.on("error", (error: NodeJS.ErrnoException) => {
      if (this.#port !== 0) options.counters.count(`tcp accept failed: ${error.code ?? "error"}`);
    });
  }

  get port(): number {
    return this.#port;
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
    this.#options.log.debug({ port: this.#port }, "shared TCP listener open");
    return this.#port;
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
    if (!this.#server.listening) return Promise.resolve();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  #accept(socket: Socket): void {
    const handler = socket.localAddress === undefined ? undefined : this.#handlers.get(stripMappedPrefix(socket.localAddress));
    if (handler) return handler(socket);
    socket.on("error", () => undefined);
    this.#options.counters.count("tcp refused: not a service address");
    socket.resetAndDestroy();
  }
}
