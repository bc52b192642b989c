/**
 * The UDP listener of one service port: a flow per client address:port, each with
 * its own connected socket to the chosen endpoint, so replies find their way back
 * without a lookup. The flow table is bounded (new flows beyond it are dropped and
 * counted) and idle flows expire; datagrams sent before a flow's socket is ready
 * wait in a small bounded queue. Endpoints on other nodes are reached through the
 * tunnel's dialer, one stream per flow with framed datagrams.
 *
 * A service port with an IPv6 cluster IP has a second socket for it, on
 * bus/ipv6-listeners.ts's address (the same port where it is free): a flow's
 * replies leave by the socket its client came in by. Where that address is not
 * there (no interception, IPv6 off on the host) there is no second socket.
 */
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { isIPv6 } from "node:net";
import { ipv6ListenerAddress } from "../../bus/ipv6-listeners.ts";
import type { Logger } from "../../lib/log.ts";
import type { BalancerShared, ServicePortBalancer } from "../../balance/balancer.ts";
import type { ServicePortPlan } from "./plan.ts";
import type { Counters } from "./counters.ts";
import { DatagramDecoder, datagramBacklogBytes, encodeDatagram, localShortageCode, localTrafficPolicyCode, type StreamDialer } from "../../bus/streams.ts";
import { localOnlyRefusal } from "./endpoint-connect.ts";
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
  /** The listener socket the client came in by (IPv4 or IPv6): replies leave by it. */
  front: Socket;
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
  /** IPv6 cluster IPs' datagrams, on ipv6ListenerAddress: absent where that address is not there. */
  #socket6?: Socket;
  readonly #flows = new Map<string, Flow>();
  readonly #warned = new Set<string>();
  #sweep: unknown;
  #port = 0;
  #port6 = 0;

  constructor(options: UdpProxyOptions) {
    this.#options = options;
    this.#socket = createSocket({ type: "udp4" });
    this.#watch(this.#socket);
  }

  /** Takes the socket's datagrams, and counts its errors (a reply's failed send) from now on. */
  #watch(socket: Socket): void {
    const options = this.#options;
    socket.on("message", (message, remote) => this.#onMessage(socket, message, remote));
    // Replies are sent without a callback: a failed send (a client gone, EPERM from a firewall) comes here, once per datagram.
    const warned = this.#warned;
    socket.on("error", (error: NodeJS.ErrnoException) => {
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

  /** The IPv6 socket's port on ipv6ListenerAddress, 0 when there is none. */
  get port6(): number {
    return this.#port6;
  }

  get flows(): number {
    return this.#flows.size;
  }

  async listen(port = 0): Promise<number> {
    await bindSocket(this.#socket, port, this.#options.listenHost);
    this.#port = this.#socket.address().port;
    await this.listen6();
    const clock = this.#options.shared.clock;
    this.#sweep = clock.setInterval(() => this.expireIdle(), Math.max(100, Math.min(5_000, this.#options.idleTimeoutMs / 2)));
    return this.#port;
  }

  /**
   * The IPv6 socket, when the service port has an IPv6 cluster IP (a socket per family of every UDP port would halve
   * the UDP ports an agent holds at its file limit) and it is not open yet: on the IPv4 port where it is free; none
   * where ipv6ListenerAddress is not assigned (EADDRNOTAVAIL) or IPv6 is off. The actor calls it again when a plan
   * gains an IPv6 cluster IP.
   */
  async listen6(): Promise<void> {
    if (this.#socket6 || this.#port === 0 || !this.#options.balancer.plan.clusterIPs.some((ip) => ip.includes(":"))) return;
    for (const port of [this.#port, 0]) {
      // Watched once bound: a bind that fails (no such address here) is no listener error, IPv4 serves the port.
      const socket = createSocket({ type: "udp6", ipv6Only: true });
      try {
        await bindSocket(socket, port, ipv6ListenerAddress);
        this.#watch(socket);
        this.#socket6 = socket;
        this.#port6 = socket.address().port;
        return;
      } catch (error) {
        socket.close();
        if ((error as NodeJS.ErrnoException).code !== "EADDRINUSE") return;
      }
    }
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
  retainEndpoints(keys: ReadonlySet<string>): this {
    for (const [key, flow] of this.#flows) {
      if (keys.has(flow.target.key)) continue;
      this.#options.counters.count("udp flow closed: endpoint removed");
      this.#closeFlow(key, flow);
    }
    return this;
  }

  async close(): Promise<void> {
    this.#options.shared.clock.clearInterval(this.#sweep);
    for (const [key, flow] of this.#flows) this.#closeFlow(key, flow);
    const sockets = [this.#socket, this.#socket6].filter((socket): socket is Socket => socket !== undefined);
    await Promise.all(sockets.map((socket) => new Promise<void>((resolve) => socket.close(() => resolve()))));
  }

  #onMessage(front: Socket, message: Buffer, remote: RemoteInfo): void {
    const { counters, balancer, shared } = this.#options;
    const key = `${remote.address}:${remote.port}`;
    let flow = this.#flows.get(key);
    if (!flow) {
      if (this.#flows.size >= this.#options.maxFlows) return counters.count("udp dropped: flow table full");
      const refusal = shared.admit?.(balancer.plan);
      if (refusal) return counters.count(`udp dropped: ${refusal}`);
      const target = balancer.choose(remote.address, new Set());
      if (!target) return counters.count("udp dropped: no endpoints");
      flow = this.#openFlow(key, front, remote, target);
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

  #openFlow(key: string, front: Socket, remote: RemoteInfo, target: EndpointTarget): Flow {
    const { counters, shared, dialer } = this.#options;
    const flow: Flow = { target, front, lastActive: shared.clock.monotonic(), ready: false, pending: [], closed: false };
    this.#flows.set(key, flow);
    shared.active.set(target.key, (shared.active.get(target.key) ?? 0) + 1);
    counters.count("udp flows");
    const reply = (datagram: Buffer) => {
      flow.lastActive = shared.clock.monotonic();
      shared.outliers.success(target.key);
      front.send(datagram, remote.port, remote.address);
    };
    const fail = (reason: string, error?: unknown) => {
      counters.count(reason);
      // The endpoint's node has the Service as internalTrafficPolicy Local where this node's catalog does not (yet): said, then as any refusal (endpoint-connect.ts).
      if ((error as { targetCode?: unknown } | undefined)?.targetCode === localTrafficPolicyCode) counters.count(`${reason}: ${localOnlyRefusal}`);
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
    // An IPv6 endpoint address (an EndpointSlice of addressType IPv6) needs a udp6 socket; either family behind either cluster IP.
    const socket = createSocket({ type: isIPv6(target.host) ? "udp6" : "udp4" });
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

function bindSocket(socket: Socket, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(port, host, () => {
      socket.off("error", reject);
      resolve();
    });
  });
}
