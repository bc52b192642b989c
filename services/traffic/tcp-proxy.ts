/**
 * The TCP listener of one service port (a socket of its own, or an address of its
 * own on the shared listener, shared-listener.ts): accept, choose an endpoint, connect (the
 * next endpoint when a connect fails), then join client and endpoint
 * (lib/join-streams.ts): backpressure end to end, so the kernel's socket buffers
 * are the only buffers; half-close passed through; a cut on either side (an RST,
 * a tunnel stream reset) reaches the other as an RST, never as a clean end; and
 * an idle timeout, which resets both. A service port without endpoints refuses at
 * once with a TCP RST.
 *
 * Every connection passes the agent's admission first (lib/admission.ts): a place
 * among the connections carried, a turn among the connects under way, within its
 * client's share; it waits in line for them, or is refused with an RST before any
 * byte, with its reason counted and logged once per burst. Only what proves the
 * endpoint bad counts towards its ejection: a refused or timed-out connect to it,
 * here or at the node that runs it; a tunnel that could not carry the stream
 * (no path, a handshake or open that took too long under load, the peer's own
 * limit) excludes the endpoint for this connection only (issue 15 item 12: the only
 * endpoint was ejected for failures the agent caused itself). The choice and the
 * attempts are endpoint-connect.ts, which the SOCKS proxy's Service connections share.
 */
import { createServer, type Server, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { LeafmeshError } from "../../lib/errors.ts";
import { joinStreams, resetStream, type JoinedStreams } from "../../lib/join-streams.ts";
import { AdmissionRefused, type Admission, type AdmissionTicket } from "../../lib/admission.ts";
import type { BurstLog } from "../../lib/burst-log.ts";
import type { Logger } from "../../lib/log.ts";
import type { ServicePortBalancer, BalancerShared } from "../../balance/balancer.ts";
import type { ServicePortPlan } from "./plan.ts";
import type { StreamDialer } from "../../bus/streams.ts";
import { connectToEndpoint, releaseEndpoint } from "./endpoint-connect.ts";
import type { EndpointTarget } from "../../balance/policy.ts";
import type { Counters } from "./counters.ts";
import type { SharedTcpListener } from "./shared-listener.ts";

export interface TcpProxyOptions {
  balancer: ServicePortBalancer<ServicePortPlan>;
  shared: BalancerShared;
  log: Logger;
  counters: Counters;
  listenHost: string;
  dialer?: StreamDialer;
  /** The agent's admission, shared by all its TCP listeners (traffic/capacity.ts has the defaults). */
  admission: Admission;
  /** Refusals at the door, logged once per burst. */
  refusals: BurstLog;
  /** @default 3_000 — a LAN endpoint answers a SYN in milliseconds; 3 s covers one SYN retransmit (1 s) and then moves on. */
  connectTimeoutMs: number;
  /** @default 10_000 — a tunnel stream to a node not yet reached waits for its path (a hole punch, then a relay fallback). */
  remoteConnectTimeoutMs: number;
  /** @default 3_600_000 — like Envoy's TCP proxy idle timeout: long-lived but silent connections (a DB pool) survive an hour. */
  idleTimeoutMs: number;
  /** @default 4 — endpoints tried per connection before it is refused. */
  maxAttempts: number;
  /** The node's one TCP listener (shared-listener.ts): this service port takes a loopback address of its own on it instead of a socket. */
  front?: SharedTcpListener;
}

/** A service port's connections: joined ones with their two streams, and connects under way (aborted when their client leaves or the listener closes). */
interface Connections {
  joined: Map<JoinedStreams, readonly [client: Socket, upstream: Duplex]>;
  connecting: Map<AbortController, Socket>;
}

export const stripMappedPrefix = (address: string | undefined) => (address?.startsWith("::ffff:") ? address.slice(7) : (address ?? ""));

export class TcpServicePortListener {
  readonly #options: TcpProxyOptions;
  /** Its own socket, or none on the shared listener (options.front). */
  readonly #server?: Server;
  #host: string;
  /**
   * Its connections, made at the first one: most of a large catalog's service ports never see one on a
   * given node, and three empty Sets each were 4.5 MiB of an agent's heap at 10,000 services.
   */
  #live?: Connections;
  #port = 0;
  #closed = false;
  #serverClosed: Promise<void> = Promise.resolve();

  constructor(options: TcpProxyOptions) {
    this.#options = options;
    this.#host = options.listenHost;
    if (options.front) return;
    this.#server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client) => void this.#accept(client));
    // After listen, errors are accept failures (EMFILE when out of fds): count them, keep serving; unhandled they would end the agent.
    this.#server.on("error", (error: NodeJS.ErrnoException) => {
      if (this.#port === 0) return; // listen errors reject listen() instead
      options.counters.count(`tcp accept failed: ${error.code ?? "error"}`);
    });
  }

  get port(): number {
    return this.#port;
  }

  /** The address it takes connections on: listenHost, or its own loopback address on the shared listener. */
  get host(): string {
    return this.#host;
  }

  get connections(): number {
    return this.#live?.joined.size ?? 0;
  }

  /** Bytes queued in this process, not yet taken by the kernel: stays near one chunk per stream under backpressure. */
  get bufferedBytes(): number {
    let total = 0;
    for (const [client, upstream] of this.#live?.joined.values() ?? []) total += client.writableLength + upstream.writableLength;
    return total;
  }

  /** Listens on `port` of listenHost, or (on the shared listener, `port` unused) takes an address of its own there. */
  async listen(port = 0): Promise<number> {
    const server = this.#server;
    if (!server) {
      this.#host = this.#options.front!.register((client) => void this.#accept(client));
      this.#port = this.#options.front!.port;
      return this.#port;
    }
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ port, host: this.#options.listenHost, backlog: 4096 }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const address = server.address();
    this.#port = typeof address === "object" && address ? address.port : 0;
    return this.#port;
  }

  /**
   * Stops accepting and resets every open connection. With `keepConnections` (the Service left the catalog, or its
   * port was renamed) the joined connections go on until they end, as established connections outlive a deleted
   * Service under kube-proxy (conntrack); a later close() resets what is left (the agent stopping).
   */
  async close(options: { keepConnections?: boolean } = {}): Promise<void> {
    const server = this.#server;
    if (!this.#closed) {
      this.#closed = true;
      if (!server && this.#port !== 0) this.#options.front!.unregister(this.#host);
      // A server's close completes once its last connection ends: with connections kept, that is not awaited.
      this.#serverClosed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    }
    // A connection still waiting for its turn or its endpoint is not established: reset, never left hanging (paused,
    // it would hold the server's close, and the agent's stop, for ever).
    for (const [controller, client] of this.#live?.connecting ?? []) {
      this.#options.counters.count("tcp reset: listener closed while connecting");
      controller.abort();
      client.resetAndDestroy();
    }
    if (options.keepConnections) return;
    // Made only where a join takes it: an agent stopping closes one listener per service port (10,000 error objects
    // with their stacks, ~80 ms, at 10,000 services), nearly all of them without a connection.
    if (this.#live?.joined.size) {
      const stopping = new LeafmeshError("NOT_RUNNING", `the proxy listener of ${this.#options.balancer.plan.key} closed`);
      for (const join of this.#live.joined.keys()) join.reset(stopping);
    }
    await this.#serverClosed;
  }

  async #accept(client: Socket): Promise<void> {
    const { balancer, counters, shared } = this.#options;
    const clientIp = stripMappedPrefix(client.remoteAddress);
    client.on("error", () => undefined); // an RST from a client is ordinary; a cut is counted where the join ends
    if (!balancer.hasEndpoints) {
      counters.count("tcp refused: no endpoints");
      client.resetAndDestroy();
      return;
    }
    const refusal = shared.admit?.(balancer.plan);
    if (refusal) {
      counters.count(`tcp refused: ${refusal}`);
      client.resetAndDestroy();
      return;
    }
    // A client that leaves while it waits or its endpoint is being dialled abandons both (a blackholed endpoint would hold it for the connect timeout).
    const abandon = new AbortController();
    const live = (this.#live ??= { joined: new Map(), connecting: new Map() });
    live.connecting.set(abandon, client);
    const onClientGone = () => abandon.abort();
    client.once("close", onClientGone);
    let ticket: AdmissionTicket;
    try {
      ticket = await this.#options.admission.admit(clientIp, abandon.signal);
    } catch (error) {
      live.connecting.delete(abandon);
      client.off("close", onClientGone);
      const reason = error instanceof AdmissionRefused ? error.reason : "admission failed";
      if (reason === "client left while queued") {
        if (!this.#closed) counters.count("tcp client left while queued"); // else reset and counted by close()
        return;
      }
      counters.count(`tcp refused: ${reason}`);
      this.#options.refusals.note(`tcp ${reason}`, { client: clientIp, service: balancer.plan.key, ...this.#options.admission.counts });
      client.resetAndDestroy();
      return;
    }
    let joined = false;
    try {
      // The client's first bytes go with a tunnel stream's header (lib/early-bytes.ts): connectToEndpoint settles them.
      const outcome = await connectToEndpoint(this.#options, balancer, clientIp, abandon.signal, "tcp", client);
      if (outcome.kind === "client left") {
        // Not the endpoint's fault: no failure counted against it (a listener that closed counted its reset).
        if (!this.#closed) counters.count("tcp client left before connect");
        return;
      }
      if (outcome.kind === "early bytes in doubt") {
        // They may have reached that endpoint: sent to another one they could act twice. The client reads a reset.
        client.resetAndDestroy();
        return;
      }
      if (outcome.kind === "connected") {
        const { upstream, target } = outcome;
        if (client.destroyed) {
          // Gone just as its tunnel stream opened (the abort gives up an open still under way): the stream is reset, never left open.
          releaseEndpoint(shared, target);
          counters.count("tcp client left before connect");
          resetStream(upstream, new LeafmeshError("PROXY_FAILED", "the client left before the connection was made"));
          return;
        }
        counters.count("tcp connections");
        ticket.opened();
        this.#splice(live, client, upstream, target, ticket);
        joined = true;
        return;
      }
    } finally {
      live.connecting.delete(abandon);
      client.off("close", onClientGone);
      if (!joined) ticket.release();
    }
    counters.count("tcp refused: no endpoint reachable");
    client.resetAndDestroy();
  }

  #splice(live: Connections, client: Socket, upstream: Duplex, target: EndpointTarget, ticket: AdmissionTicket): void {
    const { idleTimeoutMs, counters } = this.#options;
    const join = joinStreams(client, upstream, {
      onClose: (outcome) => {
        live.joined.delete(join);
        releaseEndpoint(this.#options.shared, target);
        ticket.release();
        if (outcome.complete) return;
        counters.count(outcome.cutBy === "a" ? "tcp stream reset: client" : outcome.cutBy === "b" ? "tcp stream reset: endpoint" : "tcp stream reset: proxy");
        const code = (outcome.error as NodeJS.ErrnoException | undefined)?.code;
        if (outcome.cutBy && code !== "ECONNRESET" && code !== "EPIPE" && code !== "ERR_STREAM_PREMATURE_CLOSE") counters.count("tcp stream error");
      },
    });
    live.joined.set(join, [client, upstream]);
    // Every byte either way passes the client socket: its idle timer is the connection's.
    client.setTimeout(idleTimeoutMs, () => {
      counters.count("tcp idle timeout");
      join.reset(new LeafmeshError("PROXY_FAILED", `connection idle for ${idleTimeoutMs} ms`));
    });
  }
}
