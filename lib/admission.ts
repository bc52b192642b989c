/**
 * Admission at the door of a proxy (the cluster-IP proxy, the SOCKS proxy): how
 * many connections one process carries, how many of their upstream connects or
 * tunnel stream opens run at once, how many one client may hold, and a bounded
 * queue for the rest. A connection is admitted whole or refused before its first
 * byte with a reason; once admitted it is never failed for the proxy's own load.
 *
 * Why a queue and two limits: 2,000 downloads started at once through one agent
 * made 2,000 TLS handshakes and stream opens at once; the agent's event loop fell
 * behind its own timers (handshake and header timeouts), streams it had accepted
 * failed, and the endpoint was ejected for failures the agent caused (issue 15
 * item 12). With a few dozen opens at a time each finishes in milliseconds, and
 * the rest wait their turn at the cost of an accepted, paused socket.
 *
 * Pure but for the clock (handed in): the proxy calls `admit` on accept,
 * `opened` when its upstream is connected and `release` when the connection ends.
 *
 * ```ts
 * const admission = new Admission({ clock, limits: { maxConnections: 2048, maxOpening: 64, maxPerClient: 1024, maxWaiting: 4096, waitTimeoutMs: 30_000 } });
 * const ticket = await admission.admit(clientIp, abortWhenClientLeaves); // or throws AdmissionRefused (err.reason)
 * ticket.opened(); ... ticket.release();
 * ```
 */
import type { Clock } from "./clock.ts";
import { LeafmeshError } from "./errors.ts";

export interface AdmissionLimits {
  /** Connections carried at once (opening and open): bounds the memory of the streams (each costs its socket buffers and, through the tunnel, a TLS session). */
  maxConnections: number;
  /** Upstream connects or tunnel stream opens under way at once: each is a handshake's CPU, which all at once starves the event loop of its timers. */
  maxOpening: number;
  /** Connections one client may hold, carried and waiting together: one client cannot take every place. */
  maxPerClient: number;
  /** Connections waiting for a place; beyond, refused at once. A waiting connection costs an accepted, paused socket. */
  maxWaiting: number;
  /** How long a connection may wait for a place before it is refused. */
  waitTimeoutMs: number;
}

/** Why a connection was refused at the door: the counters' reason labels. */
export type AdmissionRefusal = "client over its limit" | "queue full" | "queue timeout" | "client left while queued" | "closed";

export class AdmissionRefused extends LeafmeshError {
  readonly reason: AdmissionRefusal;

  constructor(reason: AdmissionRefusal, message: string) {
    super("OVER_CAPACITY", message);
    this.reason = reason;
  }
}

/** A connection's place: `opened` frees its opening slot, `release` everything it holds (both idempotent). */
export interface AdmissionTicket {
  opened(): void;
  release(): void;
}

interface Waiter {
  client: string;
  grant: (ticket: AdmissionTicket) => void;
  refuse: (error: AdmissionRefused) => void;
  timer: unknown;
  onAbort?: () => void;
  signal?: AbortSignal;
}

export class Admission {
  readonly limits: AdmissionLimits;
  readonly #clock: Clock;
  readonly #perClient = new Map<string, number>();
  readonly #waiting: Waiter[] = [];
  #connections = 0;
  #opening = 0;
  #closed = false;

  constructor(options: { clock: Clock; limits: AdmissionLimits }) {
    this.#clock = options.clock;
    this.limits = options.limits;
  }

  /** Carried connections, opens under way, connections waiting: gauges for stats. */
  get counts(): { connections: number; opening: number; waiting: number; clients: number } {
    return { connections: this.#connections, opening: this.#opening, waiting: this.#waiting.length, clients: this.#perClient.size };
  }

  /**
   * A place for a connection from `client`: at once when there is one, else after a wait
   * in line (first come, first served). Rejects with AdmissionRefused; `signal` aborts the
   * wait (the client left).
   */
  admit(client: string, signal?: AbortSignal): Promise<AdmissionTicket> {
    const { maxPerClient, maxWaiting, waitTimeoutMs } = this.limits;
    if (this.#closed) return Promise.reject(new AdmissionRefused("closed", "the proxy is stopping"));
    const held = this.#perClient.get(client) ?? 0;
    if (held >= maxPerClient) return Promise.reject(new AdmissionRefused("client over its limit", `client ${client} holds ${held} connections, its limit`));
    if (this.#waiting.length === 0 && this.#hasRoom()) {
      this.#perClient.set(client, held + 1);
      return Promise.resolve(this.#take(client));
    }
    if (this.#waiting.length >= maxWaiting) return Promise.reject(new AdmissionRefused("queue full", `${maxWaiting} connections already wait for a place`));
    this.#perClient.set(client, held + 1);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { client, grant: resolve, refuse: reject, timer: undefined, signal };
      const leave = (error: AdmissionRefused) => {
        const index = this.#waiting.indexOf(waiter);
        if (index < 0) return;
        this.#waiting.splice(index, 1);
        this.#settle(waiter);
        this.#dropClient(client);
        reject(error);
      };
      waiter.timer = this.#clock.setTimeout(() => leave(new AdmissionRefused("queue timeout", `no place within ${waitTimeoutMs} ms`)), waitTimeoutMs);
      if (signal) {
        waiter.onAbort = () => leave(new AdmissionRefused("client left while queued", "the client left while waiting for a place"));
        signal.addEventListener("abort", waiter.onAbort, { once: true });
      }
      this.#waiting.push(waiter);
    });
  }

  /** Refuses every waiting connection; later admits are refused too (places already given keep working until released). */
  close(): void {
    this.#closed = true;
    for (const waiter of this.#waiting.splice(0)) {
      this.#settle(waiter);
      this.#dropClient(waiter.client);
      waiter.refuse(new AdmissionRefused("closed", "the proxy is stopping"));
    }
  }

  #hasRoom(): boolean {
    return this.#connections < this.limits.maxConnections && this.#opening < this.limits.maxOpening;
  }

  #take(client: string): AdmissionTicket {
    this.#connections++;
    this.#opening++;
    let opening = true;
    let held = true;
    const opened = () => {
      if (!opening) return;
      opening = false;
      this.#opening--;
      this.#pump();
    };
    return {
      opened,
      release: () => {
        if (!held) return;
        held = false;
        if (opening) {
          opening = false;
          this.#opening--;
        }
        this.#connections--;
        this.#dropClient(client);
        this.#pump();
      },
    };
  }

  #pump(): void {
    while (this.#waiting.length > 0 && this.#hasRoom()) {
      const waiter = this.#waiting.shift()!;
      this.#settle(waiter);
      waiter.grant(this.#take(waiter.client));
    }
  }

  #settle(waiter: Waiter): void {
    this.#clock.clearTimeout(waiter.timer);
    if (waiter.onAbort) waiter.signal?.removeEventListener("abort", waiter.onAbort);
  }

  #dropClient(client: string): void {
    const held = (this.#perClient.get(client) ?? 1) - 1;
    if (held <= 0) this.#perClient.delete(client);
    else this.#perClient.set(client, held);
  }
}
