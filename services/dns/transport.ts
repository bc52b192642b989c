/**
 * DNS over UDP and TCP on one port, around a function that answers one
 * message: binding both sockets (the same port), UDP replies to the address a
 * query came from, and TCP clients per RFC 7766 (length-prefixed, pipelined,
 * backpressure both ways, idle clients closed, a client's FIN answered once its
 * answers went out). What an answer says is the answering side's (server.ts).
 *
 * A TCP client is idle from its last whole query, not its last byte: one that
 * trickles a byte now and then is closed as one that sends nothing. When all
 * places are taken, a new client takes the place of the one idle longest (RFC
 * 7766 §6.2.3 lets a server close idle connections under pressure); only when
 * none is idle is the new one refused. Before, the 256 places went to whoever
 * took them first, and a program that held them (a byte every few seconds kept
 * each alive for ever) kept every other client on the node off DNS over TCP.
 *
 * ```ts
 * const transport = new DnsTransport({ respond: (query, via) => server.respond(query, via), log, stats });
 * const { port } = await transport.start({ host: "127.0.0.1", port: 0 });
 * await transport.stop();
 * ```
 */
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { createServer, isIPv6, type Server, type Socket as TcpSocket } from "node:net";
import { LeafmeshError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import type { DnsStats } from "./stats.ts";

export type Transport = "udp" | "tcp";

/**
 * The answer to one message: bytes, nothing (drop it), or a promise of either (the question went upstream).
 * Bytes in parts (a list) go out as one message: the cluster's answer to a UDP query is the query's own
 * header and question, rewritten in place, and the encoded records after them, with no copy.
 */
export type Respond = (query: Buffer, transport: Transport) => Reply | undefined | Promise<Reply | undefined>;
export type Reply = Buffer | readonly Buffer[];

/** One UDP answer in 16 is timed (latencyMs): two clock reads per answer were a few per cent of a cluster answer's cost. */
const latencySampleMask = 15;

export interface ListenAddress {
  host: string;
  port: number;
}

export interface DnsTransportOptions {
  respond: Respond;
  log: Logger;
  stats: DnsStats;
  /** @default 256 — TCP clients at once; past it a new one takes the place of the one idle longest, or is refused (counted) when none is idle. */
  maxTcpConnections?: number;
  /** @default 10_000 — RFC 7766 §6.2.3 suggests seconds: a TCP client this long without a whole query (idle or half-sent) and with no answer pending is closed. */
  tcpIdleMs?: number;
  /** @default 32 — queries of one TCP connection being answered at once; reading pauses past it. */
  tcpPipelineDepth?: number;
}

export class DnsTransport {
  readonly #options: DnsTransportOptions;
  readonly #log: Logger;
  readonly #stats: DnsStats;
  #udp?: Socket;
  #tcp?: Server;
  /** Each TCP client, since when it is idle (its last whole query, or its connect) and how many of its answers are pending. */
  readonly #tcpClients = new Map<TcpSocket, { since: number; pending: number }>();
  #idleSweep?: NodeJS.Timeout;
  #address?: ListenAddress;
  #udpAnswers = 0;

  constructor(options: DnsTransportOptions) {
    this.#options = options;
    this.#log = options.log;
    this.#stats = options.stats;
  }

  get address(): ListenAddress | undefined {
    return this.#address;
  }

  /** TCP clients connected now (a gauge: what a leak would grow). */
  get tcpClients(): number {
    return this.#tcpClients.size;
  }

  /** Answer bytes queued in this process for TCP clients, not yet taken by the kernel: about one socket buffer's high-water mark per client that does not read. */
  get tcpBufferedBytes(): number {
    let total = 0;
    for (const client of this.#tcpClients.keys()) total += client.writableLength;
    return total;
  }

  /** Binds UDP and TCP on the same port (a free one for port 0). */
  async start(listen: ListenAddress): Promise<ListenAddress> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const family = isIPv6(listen.host) ? 6 : 4;
      const udp = createSocket({
        type: family === 6 ? "udp6" : "udp4",
        // Replies go to the IP a query came from: no name lookup (and no extra tick) per send, and no
        // isIPv6() (a regular expression) per send either: a udp6 socket's peers are IPv6 addresses.
        lookup: (address, _options, callback) => (callback as (error: null, address: string, family: number) => void)(null, address, family),
      });
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once("error", reject);
          udp.bind(listen.port, listen.host, () => {
            udp.off("error", reject);
            resolve();
          });
        });
      } catch (cause) {
        udp.close();
        throw new LeafmeshError("DNS_FAILED", `cannot listen for DNS on udp ${listen.host}:${listen.port}: ${(cause as Error).message}`, { cause });
      }
      const port = udp.address().port;
      // allowHalfOpen: a client may send its queries and FIN at once; its answers still go back (then our FIN).
      const tcp = createServer({ noDelay: true, allowHalfOpen: true }, (socket) => this.#onTcpClient(socket));
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once("error", reject);
          tcp.listen(port, listen.host, () => {
            tcp.off("error", reject);
            resolve();
          });
        });
      } catch (cause) {
        udp.close();
        lastError = cause;
        if (listen.port === 0 && (cause as NodeJS.ErrnoException).code === "EADDRINUSE") continue; // the UDP port's TCP twin was taken: try another
        throw new LeafmeshError("DNS_FAILED", `cannot listen for DNS on tcp ${listen.host}:${port}: ${(cause as Error).message}`, { cause });
      }
      tcp.on("error", (error) => this.#log.error({ err: error }, "DNS TCP server error"));
      udp.on("error", (error) => {
        if (this.#stats.drop("udp socket error")) this.#log.error({ err: error }, "DNS UDP socket error (logged once, counted always)");
      });
      udp.on("message", (message, remote) => this.#onUdp(message, remote));
      try {
        // Room for bursts: the kernel caps these at net.core.[rw]mem_max.
        udp.setRecvBufferSize(4 * 1024 * 1024);
        udp.setSendBufferSize(4 * 1024 * 1024);
      } catch (error) {
        this.#log.debug({ err: error }, "could not enlarge the UDP socket buffers");
      }
      this.#udp = udp;
      this.#tcp = tcp;
      const idleMs = this.#options.tcpIdleMs ?? 10_000;
      this.#idleSweep = setInterval(() => this.#closeIdle(idleMs), Math.max(25, Math.min(1_000, idleMs / 4))).unref();
      this.#address = { host: listen.host, port };
      return this.#address;
    }
    throw new LeafmeshError("DNS_FAILED", `no free port for DNS on ${listen.host} with both UDP and TCP`, { cause: lastError });
  }

  async stop(): Promise<void> {
    const udp = this.#udp;
    const tcp = this.#tcp;
    this.#udp = undefined;
    this.#tcp = undefined;
    clearInterval(this.#idleSweep);
    for (const client of this.#tcpClients.keys()) client.destroy();
    this.#tcpClients.clear();
    await Promise.all([
      udp ? new Promise<void>((resolve) => udp.close(() => resolve())) : undefined,
      tcp ? new Promise<void>((resolve) => tcp.close(() => resolve())) : undefined,
    ]);
  }

  #onUdp(message: Buffer, remote: RemoteInfo): void {
    const started = (this.#udpAnswers++ & latencySampleMask) === 0 ? performance.now() : -1;
    let response: ReturnType<Respond>;
    try {
      response = this.#options.respond(message, "udp");
    } catch (error) {
      this.#internalError(error);
      return;
    }
    if (response === undefined) return;
    if (!(response instanceof Promise)) {
      this.#sendUdp(response, remote, started);
      return;
    }
    response.then(
      (bytes) => bytes && this.#sendUdp(bytes, remote, started),
      (error) => this.#internalError(error),
    );
  }

  #sendUdp(bytes: Reply, remote: RemoteInfo, started: number): void {
    const udp = this.#udp;
    if (!udp) return;
    // No callback: a failed send surfaces as the socket's 'error' event, and the hot path saves a tick per reply.
    udp.send(bytes, remote.port, remote.address);
    if (started >= 0) this.#stats.latency(performance.now() - started);
  }

  /**
   * One TCP client (RFC 7766): length-prefixed queries, pipelined, answered as
   * they are ready. Reading stops while `tcpPipelineDepth` answers are pending or
   * the client does not read its answers (the socket's buffer is full), and goes
   * on after; a client's FIN is answered with ours once its pending answers went
   * out. A client that leaves or resets costs nothing more: answers still on the
   * way are dropped.
   */
  #onTcpClient(socket: TcpSocket): void {
    socket.on("error", () => socket.destroy());
    if (this.#tcpClients.size >= (this.#options.maxTcpConnections ?? 256) && !this.#closeIdlest()) {
      this.#drop("tcp connection limit");
      socket.destroy();
      return;
    }
    const client = { since: performance.now(), pending: 0 };
    this.#tcpClients.set(socket, client);
    const depth = this.#options.tcpPipelineDepth ?? 32;
    let buffered: Buffer = Buffer.alloc(0);
    let clientEnded = false;
    socket.on("close", () => this.#tcpClients.delete(socket));
    const write = (reply: Reply, started: number) => {
      if (socket.destroyed || socket.writableEnded) return;
      const bytes = Buffer.isBuffer(reply) ? reply : Buffer.concat(reply as Buffer[]);
      if (bytes.length > 65_535) {
        // The frame's length is 16 bits: such an answer cannot be sent, and must not throw in a socket's handler.
        // The client is told at once by the close, rather than left to wait for an answer that will not come.
        this.#drop("tcp answer too long");
        socket.destroy();
        return;
      }
      const frame = Buffer.allocUnsafe(2 + bytes.length);
      frame.writeUInt16BE(bytes.length, 0);
      bytes.copy(frame, 2);
      // Backpressure: past the socket's high-water mark pump() stops taking queries until 'drain'.
      socket.write(frame);
      this.#stats.latency(performance.now() - started);
    };
    const completeMessageBuffered = () => buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0);
    const pump = () => {
      while (!socket.destroyed && buffered.length >= 2 && client.pending < depth && !socket.writableNeedDrain) {
        const length = buffered.readUInt16BE(0);
        if (length < 12) {
          // Not even a header: the stream cannot be resynchronised (RFC 7766 §8).
          this.#drop("tcp short message");
          socket.destroy();
          return;
        }
        if (buffered.length < 2 + length) break; // wait for the rest, within the idle timeout
        const message = buffered.subarray(2, 2 + length);
        buffered = buffered.subarray(2 + length);
        // The query's start is also where the client's idle time starts again.
        const started = (client.since = performance.now());
        let response: ReturnType<Respond>;
        try {
          response = this.#options.respond(message, "tcp");
        } catch (error) {
          this.#internalError(error);
          continue;
        }
        if (response === undefined) continue;
        if (!(response instanceof Promise)) {
          write(response, started);
          continue;
        }
        client.pending++;
        response.then(
          (bytes) => {
            client.pending--;
            if (bytes) write(bytes, started);
            pump();
          },
          (error) => {
            client.pending--;
            this.#internalError(error);
            pump();
          },
        );
      }
      if (socket.destroyed) return;
      // Read more only while answers can go out and the pipeline has room.
      if (client.pending >= depth || socket.writableNeedDrain) socket.pause();
      else socket.resume();
      // The client sent FIN: once its last complete query is answered, so do we (a partial one is dropped).
      if (clientEnded && client.pending === 0 && !completeMessageBuffered() && !socket.writableEnded) socket.end();
    };
    socket.on("drain", pump);
    socket.once("end", () => {
      clientEnded = true;
      pump();
    });
    socket.on("data", (chunk: Buffer) => {
      // One message is at most 65,535 bytes plus its length: more than that buffered means the reader is behind, not that the client may send more.
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      pump();
      if (!socket.destroyed && buffered.length > 2 * (65_535 + 2)) {
        this.#drop("tcp buffer full");
        socket.destroy();
      }
    });
  }

  /** Closes the clients idle for `idleMs` with no answer pending (a half-sent query does not count as activity). */
  #closeIdle(idleMs: number): void {
    const now = performance.now();
    for (const [socket, client] of this.#tcpClients) {
      if (client.pending > 0 || now - client.since < idleMs) continue;
      this.#drop("tcp idle");
      socket.destroy();
      this.#tcpClients.delete(socket);
    }
  }

  /** Makes room for a new client: closes the one idle longest with no answer pending; false when every client waits for one. */
  #closeIdlest(): boolean {
    let idlest: [TcpSocket, { since: number }] | undefined;
    for (const entry of this.#tcpClients) if (entry[1].pending === 0 && (!idlest || entry[1].since < idlest[1].since)) idlest = entry;
    if (!idlest) return false;
    this.#drop("tcp idle client closed for a new one");
    idlest[0].destroy();
    this.#tcpClients.delete(idlest[0]);
    return true;
  }

  #drop(reason: string): void {
    if (this.#stats.drop(reason)) this.#log.warn({ reason }, "DNS packet refused or dropped (logged once per reason, counted always)");
  }

  #internalError(error: unknown): void {
    this.#stats.answers.error++;
    if (this.#stats.drop("internal error")) this.#log.error({ err: error }, "DNS query failed inside the server (logged once)");
  }
}
