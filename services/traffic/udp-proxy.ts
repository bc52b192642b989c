/**
 * The UDP listener of one service port: a flow per client address:port, each with
 * its own connected socket to the chosen endpoint, so replies find their way back
 * without a lookup. The flow table is bounded (new flows beyond it are dropped and
 * counted) and idle flows expire; datagrams sent before a flow's socket is ready
 * wait in a small bounded queue. Endpoints on other nodes are reached through the
 * tunnel's dialer, one stream per flow with framed datagrams.
 */
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import type { Logger } from "../../lib/log.ts";
import type { BalancerShared, ServicePortBalancer } from "../../balance/balancer.ts";
import type { ServicePortPlan } from "./plan.ts";
import type { Counters } from "./counters.ts";
import { DatagramDecoder, datagramBacklogBytes, encodeDatagram, localShortageCode, type StreamDialer } from "../../bus/streams.ts";
import type { Duplex } from "node:stream";
import type { EndpointTarget } from "../../balance/policy.ts";

export interface UdpProxyOptions {
  balancer: ServicePortBalancer<ServicePortPlan>;
  shared: BalancerShared;
  log: Logger;
  counters: Counters;
  listenHost: string;
  /** @default 30_000 — the kernel's own UDP conntrack timeout (nf_conntrack_udp_timeout). */
  idleTimeoutMs: number;
  /** @default 4_096 — flows per service port; a UDP flood from spoofed sources cannot grow memory past it. */
  maxFlows: number;
  /** Endpoints on other nodes are reached through it (datagrams framed on a stream); directly when absent. */
  dialer?: StreamDialer;
}


/** Datagrams held per flow until its socket is connected; more are dropped. */
const pendingLimit = 16;

interface Flow {
  target: EndpointTarget;
  /** A connected UDP socket to the endpoint, or a tunnel stream carrying framed datagrams. */
  socket?: Socket;
  stream?: Duplex;
  lastActive: number;
  ready: boolean;
  pending: Buffer[];
  closed: boolean;
}

export class UdpServicePortListener {
  readonly #options: UdpProxyOptions;
  readonly #socket: Socket;
  readonly #flows = new Map<string, Flow>();
  #sweep: unknown;
  #port = 0;

  constructor(options: UdpProxyOptions) {
    this.#options = options;
    this.#socket = createSocket({ type: "udp4" });
    this.#socket.on("message", (message, remote) => this.#onMessage(message, remote));
    // Replies are sent without a callback: a failed send (a client gone, EPERM from a firewall) comes here, once per datagram.
    const warned = new Set<string>();
    this.#socket.on("error", (error: NodeJS.ErrnoException) => {
      const reason = `udp listener error: ${error.code ?? "error"}`;
      options.counters.count(reason);
      if (warned.has(reason)) return;
      warned.add(reason);
      options.log.warn({ err: error, service: options.balancer.plan.key }, "udp listener error (logged once per reason, counted always)");
    });
  }

  get port(): number {
    return this.#port;
  }

  get flows(): number {
    return this.#flows.size;
  }

  async listen(port = 0): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.#socket.once("error", reject);
      this.#socket.bind(port, this.#options.listenHost, () => {
        this.#socket.off("error", reject);
        resolve();
      });
    });
    this.#port = this.#socket.address().port;
    const clock = this.#options.shared.clock;
    this.#sweep = clock.setInterval(() => this.expireIdle(), Math.max(100, Math.min(5_000, this.#options.idleTimeoutMs / 2)));
    return this.#port;
  }

  /** Closes flows idle for longer than the timeout (run by a timer; public for tests with a manual clock). */
  expireIdle(): void {
    const now = this.#options.shared.clock.monotonic();
    for (const [key, flow] of this.#flows) {
      if (now - flow.lastActive > this.#options.idleTimeoutMs) {
        this.#options.counters.count("udp flow expired");
        this.#closeFlow(key, flow);
      }
    }
  }

  /**
   * Closes flows to endpoints that left the service: a client that keeps sending
   * would otherwise keep a flow to a vanished endpoint alive forever (kube-proxy
   * clears UDP conntrack entries for the same reason).
   */
  retainEndpoints(keys: ReadonlySet<string>): void {
    for (const [key, flow] of this.#flows) {
      if (keys.has(flow.target.key)) continue;
      this.#options.counters.count("udp flow closed: endpoint removed");
      this.#closeFlow(key, flow);
    }
  }

  async close(): Promise<void> {
    this.#options.shared.clock.clearInterval(this.#sweep);
    for (const [key, flow] of this.#flows) this.#closeFlow(key, flow);
    await new Promise<void>((resolve) => this.#socket.close(() => resolve()));
  }

  #onMessage(message: Buffer, remote: RemoteInfo): void {
    const { counters, balancer, shared } = this.#options;
    const key = `${remote.address}:${remote.port}`;
    let flow = this.#flows.get(key);
    if (!flow) {
      if (this.#flows.size >= this.#options.maxFlows) return counters.count("udp dropped: flow table full");
      const refusal = shared.admit?.(balancer.plan);
      if (refusal) return counters.count(`udp dropped: ${refusal}`);
      const target = balancer.choose(remote.address, new Set());
      if (!target) return counters.count("udp dropped: no endpoints");
      flow = this.#openFlow(key, remote, target);
    }
    flow.lastActive = shared.clock.monotonic();
    if (flow.ready) this.#send(flow, message);
    else if (flow.pending.length < pendingLimit) flow.pending.push(message);
    else counters.count("udp dropped: flow not ready");
  }

  #send(flow: Flow, message: Buffer): void {
    if (flow.socket) return flow.socket.send(message);
    if (flow.stream!.writableLength > datagramBacklogBytes) return this.#options.counters.count("udp dropped: tunnel backlog");
    flow.stream!.write(encodeDatagram(message));
  }

  #openFlow(key: string, remote: RemoteInfo, target: EndpointTarget): Flow {
    const { counters, shared, dialer } = this.#options;
    const flow: Flow = { target, lastActive: shared.clock.monotonic(), ready: false, pending: [], closed: false };
    this.#flows.set(key, flow);
    shared.active.set(target.key, (shared.active.get(target.key) ?? 0) + 1);
    counters.count("udp flows");
    const reply = (datagram: Buffer) => {
      flow.lastActive = shared.clock.monotonic();
      shared.outliers.success(target.key);
      this.#socket.send(datagram, remote.port, remote.address);
    };
    const fail = (reason: string, error?: unknown) => {
      counters.count(reason);
      // This node's own shortage (EMFILE: no descriptor for the flow's socket) is no mark against the endpoint.
      const shortage = localShortageCode(error);
      if (shortage) counters.count(`udp flow failed: ${shortage}`);
      else if (shared.outliers.failure(target.key)) counters.count("endpoint ejected");
      this.#closeFlow(key, flow);
    };
    const flush = () => {
      flow.ready = true;
      for (const message of flow.pending.splice(0)) this.#send(flow, message);
    };
    if (dialer && target.nodeName && target.nodeName !== shared.node) {
      dialer.openStream(target.nodeName, { host: target.host, port: target.port, protocol: "UDP" }).then(
        (stream) => {
          if (flow.closed) return void stream.destroy();
          flow.stream = stream;
          const decoder = new DatagramDecoder();
          stream.on("data", (chunk: Buffer) => {
            for (const datagram of decoder.push(chunk)) reply(datagram);
          });
          stream.on("error", () => fail("udp tunnel stream error"));
          stream.on("close", () => this.#closeFlow(key, flow));
          flush();
        },
        (error: unknown) => fail("udp tunnel open failed", error),
      );
      return flow;
    }
    const socket = createSocket({ type: "udp4" });
    flow.socket = socket;
    socket.on("message", reply);
    // ECONNREFUSED: the endpoint answered with ICMP port unreachable.
    socket.on("error", (error: NodeJS.ErrnoException) => fail(error.code === "ECONNREFUSED" ? "udp endpoint refused" : "udp flow error", error));
    socket.connect(target.port, target.host, flush);
    return flow;
  }

  #closeFlow(key: string, flow: Flow): void {
    if (flow.closed) return;
    flow.closed = true;
    if (this.#flows.get(key) === flow) this.#flows.delete(key);
    const active = this.#options.shared.active;
    const next = (active.get(flow.target.key) ?? 1) - 1;
    if (next <= 0) active.delete(flow.target.key);
    else active.set(flow.target.key, next);
    flow.stream?.destroy();
    try {
      flow.socket?.close();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ERR_SOCKET_DGRAM_NOT_RUNNING") throw error;
    }
  }
}
