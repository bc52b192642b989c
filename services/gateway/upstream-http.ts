/**
 * A kept-alive HTTP/1.1 connection to one backend endpoint (a socket, or a
 * tunnel stream to another node) and the idle pool it waits in between
 * requests. The connection's listeners and its response parser are made once,
 * with the connection: a request borrows them (`attach`), and gives them back
 * (`detach`) when its answer is read. Adding and removing five listeners, a
 * parser, and a timer per idle spell, for every request, was a fifth of the
 * gateway's own work per request in bench/gateway.
 *
 * While idle a connection answers nothing: bytes from it mean the backend is
 * out of step (counted, closed); its end, close or error takes it out of the
 * pool. One sweep a pool, not a timer a connection, ends those idle too long.
 *
 * ```ts
 * const idle = new IdleConnections({ count });
 * const connection = idle.take("10.0.0.7:8080") ?? new HttpConnection(socket, "10.0.0.7:8080", idle);
 * connection.attach({ data, end, close, error, drain }); connection.parser.reset({ head: false, onHead, onBody, onEnd });
 * // … the answer is read …
 * connection.detach(); idle.park(connection);
 * ```
 */
import type { Duplex } from "node:stream";
import { ResponseParser } from "./http1-codec.ts";

/** What a request hears of its upstream connection while it holds it. */
export interface ConnectionListener {
  data(chunk: Buffer): void;
  end(): void;
  close(): void;
  error(error: Error): void;
  drain(): void;
}

/** Idle HTTP connections kept per endpoint: enough for a burst of concurrent requests, few enough to hold little. */
const maxIdlePerEndpoint = 32;
/** @default 15_000 — an idle connection is closed by the gateway first, well before backends' usual 60 s keep-alive. */
const defaultIdleMs = 15_000;

/** Where an idle connection reports what it heard while nobody held it. */
interface IdleHome {
  leave(connection: HttpConnection): void;
  count(reason: string): void;
}

export class HttpConnection {
  readonly stream: Duplex;
  readonly endpoint: string;
  /** Reset for each request (ResponseParser.reset), made once. */
  readonly parser = new ResponseParser({ head: false, onHead: () => undefined, onBody: () => undefined, onEnd: () => undefined });
  /** When it was parked (performance.now()); -1 while a request holds it or once it left the pool. */
  idleSince = -1;
  readonly #home: IdleHome;
  #listener: ConnectionListener | undefined;

  constructor(stream: Duplex, endpoint: string, home: IdleHome) {
    this.stream = stream;
    this.endpoint = endpoint;
    this.#home = home;
    stream.on("data", (chunk: Buffer) => {
      if (this.#listener) return this.#listener.data(chunk);
      // Bytes from an idle backend answer nothing: the connection is out of step and is dropped.
      home.count("idle backend connection sent data");
      this.#drop();
    });
    stream.on("end", () => (this.#listener ? this.#listener.end() : this.#drop()));
    stream.on("close", () => (this.#listener ? this.#listener.close() : this.#drop()));
    stream.on("error", (error: Error) => (this.#listener ? this.#listener.error(error) : this.#drop()));
    stream.on("drain", () => this.#listener?.drain());
  }

  /** Whether it can carry another request. */
  get usable(): boolean {
    return !this.stream.destroyed && this.stream.writable && !this.stream.readableEnded;
  }

  attach(listener: ConnectionListener): void {
    this.#listener = listener;
  }

  detach(): void {
    this.#listener = undefined;
  }

  #drop(): void {
    this.#home.leave(this);
    if (!this.stream.destroyed) this.stream.destroy();
  }
}

export interface IdleConnectionsOptions {
  count(reason: string): void;
  /** @default 15_000 */
  idleMs?: number;
}

/** Idle connections by endpoint, most recently parked last (taken first: the one least likely closed by its backend). */
export class IdleConnections implements IdleHome {
  readonly #byEndpoint = new Map<string, HttpConnection[]>();
  readonly #options: IdleConnectionsOptions;
  readonly #idleMs: number;
  #sweep: NodeJS.Timeout | undefined;

  constructor(options: IdleConnectionsOptions) {
    this.#options = options;
    this.#idleMs = options.idleMs ?? defaultIdleMs;
  }

  count(reason: string): void {
    this.#options.count(reason);
  }

  /** Keeps a connection whose request ended cleanly for the next request to its endpoint; one that cannot is closed. */
  park(connection: HttpConnection): void {
    if (!connection.usable) return void connection.stream.destroy();
    let idle = this.#byEndpoint.get(connection.endpoint);
    if (!idle) this.#byEndpoint.set(connection.endpoint, (idle = []));
    if (idle.length >= maxIdlePerEndpoint) return void connection.stream.end();
    if (connection.stream.isPaused()) connection.stream.resume();
    connection.idleSince = performance.now();
    idle.push(connection);
    if (!this.#sweep) {
      // A third of the idle time: a connection is ended between idleMs and 4/3 of it after its last request.
      this.#sweep = setInterval(() => this.#sweepIdle(), Math.max(1, Math.round(this.#idleMs / 3)));
      this.#sweep.unref();
    }
  }

  /** An idle connection to the endpoint that can carry a request, or undefined. */
  take(endpoint: string): HttpConnection | undefined {
    const idle = this.#byEndpoint.get(endpoint);
    if (!idle) return undefined;
    let connection: HttpConnection | undefined;
    while ((connection = idle.pop())) {
      connection.idleSince = -1;
      if (connection.usable) break;
      connection.stream.destroy();
    }
    if (idle.length === 0) this.#forget(endpoint);
    return connection;
  }

  leave(connection: HttpConnection): void {
    if (connection.idleSince < 0) return;
    connection.idleSince = -1;
    const idle = this.#byEndpoint.get(connection.endpoint);
    const at = idle?.indexOf(connection) ?? -1;
    if (at < 0) return;
    idle!.splice(at, 1);
    if (idle!.length === 0) this.#forget(connection.endpoint);
  }

  /** How many wait, for status and tests. */
  get size(): number {
    let size = 0;
    for (const idle of this.#byEndpoint.values()) size += idle.length;
    return size;
  }

  /** Ends every idle connection (the gateway stops). */
  closeAll(): void {
    const all = [...this.#byEndpoint.values()].flat();
    this.#byEndpoint.clear();
    this.#stopSweep();
    for (const connection of all) {
      connection.idleSince = -1;
      connection.stream.end();
    }
  }

  #sweepIdle(): void {
    const before = performance.now() - this.#idleMs;
    for (const [endpoint, idle] of this.#byEndpoint) {
      // Oldest first: parked in order, so the stale ones are a prefix.
      let stale = 0;
      while (stale < idle.length && idle[stale].idleSince <= before) stale++;
      if (stale === 0) continue;
      for (const connection of idle.splice(0, stale)) {
        connection.idleSince = -1;
        connection.stream.end();
      }
      if (idle.length === 0) this.#forget(endpoint);
    }
  }

  #forget(endpoint: string): void {
    this.#byEndpoint.delete(endpoint);
    if (this.#byEndpoint.size === 0) this.#stopSweep();
  }

  #stopSweep(): void {
    clearInterval(this.#sweep);
    this.#sweep = undefined;
  }
}
