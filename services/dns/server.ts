/**
 * The DNS server around the pure zone: UDP and TCP (RFC 7766 framing, pipelined
 * queries) on one port, EDNS0 sizes honoured, TC when an answer does not fit a
 * UDP client, FORMERR/NOTIMP for malformed or unsupported queries, drops
 * counted by reason. Cluster answers are encoded once per catalog version and
 * question and then served as a copy with the client's id; questions outside the
 * cluster go to the forwarder.
 *
 * ```ts
 * const server = new DnsServer({ catalog: feed.reader, clusterDomain: "cluster.local", forwarder, log, stats });
 * const { port } = await server.start({ host: "127.0.0.1", port: 0 });
 * await server.stop();
 * ```
 */
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { isIPv6 } from "node:net";
import { createServer, type Server, type Socket as TcpSocket } from "node:net";
import dnsPacket, { type Answer } from "dns-packet";
import type { CatalogReader } from "../../bus/catalog.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import type { Forwarder } from "./forwarder.ts";
import type { DnsStats } from "./stats.ts";
import {
  bareResponse,
  flagAA,
  flagTC,
  isProblem,
  optRecord,
  parseQuery,
  problemResponse,
  queryName,
  rcodes,
  responseFlags,
  udpLimit,
  type ParsedQuery,
} from "./wire.ts";
import { answerFromZone, buildClusterZone, type ClusterReply, type ClusterZone, type ZoneOptions } from "./zone.ts";

export interface DnsServerOptions extends ZoneOptions {
  catalog: CatalogReader;
  forwarder?: Forwarder;
  log: Logger;
  stats: DnsStats;
  /** @default 256 — TCP clients at once; more are refused (counted). */
  maxTcpConnections?: number;
  /** @default 10_000 — RFC 7766 §6.2.3 suggests seconds: an idle or half-sent TCP client is closed. */
  tcpIdleMs?: number;
  /** @default 32 — queries of one TCP connection being answered at once; reading pauses past it. */
  tcpPipelineDepth?: number;
  /** @default 50_000 — encoded cluster answers kept per catalog version. */
  answerCacheSize?: number;
  /**
   * @default 500 — the longest a catalog change waits before answers show it.
   * A small catalog's zone is rebuilt for the next answer after any change. A
   * large one costs milliseconds to rebuild; while it changes faster than that,
   * rebuilds are spaced so they take at most a tenth of the time, and the
   * previous zone answers meanwhile (the issue asks for a change in the answers
   * within a second).
   */
  maxZoneLagMs?: number;
}

export interface ListenAddress {
  host: string;
  port: number;
}

const typeNames: Record<number, string> = { 1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 16: "TXT", 28: "AAAA", 33: "SRV", 255: "ANY" };
const classNames: Record<number, string> = { 1: "IN", 3: "CH", 4: "HS", 255: "ANY" };
const forwardMarker = Buffer.alloc(0);

/** An ExternalName answer to an address question: the CNAME, then the target's addresses (spec §2.5), fetched per query. */
interface ChaseEntry {
  reply: ClusterReply;
  target: string;
  type: "A" | "AAAA";
}
/** CNAME → CNAME inside the cluster zone is followed this far (RFC 1034 §3.6.2 warns of loops). */
const maxChaseDepth = 8;
/** A zone built faster than this is rebuilt on every change without spacing. */
const cheapZoneBuildMs = 2;

type Transport = "udp" | "tcp";

export class DnsServer {
  readonly #options: DnsServerOptions;
  readonly #log: Logger;
  readonly #stats: DnsStats;
  #udp?: Socket;
  #tcp?: Server;
  readonly #tcpClients = new Set<TcpSocket>();
  /** Encoded answers (id 0) by question bytes + flags, for #zone; ExternalName chases are kept unencoded. */
  #answers = new Map<string, Buffer | ChaseEntry>();
  #zone?: ClusterZone;
  #zoneVersion = -1;
  #zoneBuiltAt = 0;
  #zoneBuildMs = 0;
  #zoneTimer?: NodeJS.Timeout;
  #address?: ListenAddress;

  constructor(options: DnsServerOptions) {
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

  /** Binds UDP and TCP on the same port (a free one for port 0). */
  async start(listen: ListenAddress): Promise<ListenAddress> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const udp = createSocket({
        type: isIPv6(listen.host) ? "udp6" : "udp4",
        // Replies go to the IP a query came from: no name lookup (and no extra tick) per send.
        lookup: (address, _options, callback) => (callback as (error: null, address: string, family: number) => void)(null, address, isIPv6(address) ? 6 : 4),
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
      tcp.maxConnections = this.#options.maxTcpConnections ?? 256;
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
      tcp.on("drop", () => this.#drop("tcp connection limit"));
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
    if (this.#zoneTimer) clearTimeout(this.#zoneTimer);
    this.#zoneTimer = undefined;
    for (const client of this.#tcpClients) client.destroy();
    this.#tcpClients.clear();
    await Promise.all([
      udp ? new Promise<void>((resolve) => udp.close(() => resolve())) : undefined,
      tcp ? new Promise<void>((resolve) => tcp.close(() => resolve())) : undefined,
    ]);
  }

  /**
   * The response to one DNS message (undefined: drop it). Synchronous for the
   * cluster zone and errors, a promise when the question goes upstream.
   */
  respond(query: Buffer, transport: Transport): Buffer | undefined | Promise<Buffer | undefined> {
    const stats = this.#stats;
    stats.queries++;
    if (transport === "udp") stats.udp++;
    else stats.tcp++;
    const parsed = parseQuery(query);
    if (isProblem(parsed)) {
      this.#drop(parsed.reason);
      const response = problemResponse(query, parsed);
      if (response && parsed.kind === "reply") stats.countRcode(parsed.rcode);
      return response;
    }
    if (this.#options.catalog.version !== this.#zoneVersion) this.#refreshZone();
    const ednsCode = parsed.edns ? (parsed.edns.dnssecOk ? 2 : 1) : 0;
    const key = String.fromCharCode((parsed.flags >> 4) & 0x11, ednsCode) + query.toString("latin1", 12, parsed.questionEnd);
    let template = this.#answers.get(key);
    if (template === undefined) {
      template = this.#encodeClusterAnswer(query, parsed);
      if (this.#answers.size >= (this.#options.answerCacheSize ?? 50_000)) this.#answers.clear();
      this.#answers.set(key, template);
    }
    if ("target" in template) return this.#chase(query, parsed, template, transport);
    if (template !== forwardMarker) {
      stats.answers.cluster++;
      stats.countRcode(template[3] & 0xf);
      return this.#fit(template, query, parsed, transport, true);
    }
    return this.#forward(query, parsed, transport);
  }

  /**
   * Rebuilds the zone now, or (when the last build was recent and costly) in a
   * moment: real elapsed time, because this guards the CPU, not a protocol timer.
   */
  #refreshZone(): void {
    const now = performance.now();
    const spacing = Math.min(this.#options.maxZoneLagMs ?? 500, this.#zoneBuildMs * 10);
    // A cheap build (a small catalog) always runs, so the very next answer shows the change.
    if (this.#zone && this.#zoneBuildMs >= cheapZoneBuildMs && now - this.#zoneBuiltAt < spacing) {
      this.#zoneTimer ??= setTimeout(() => {
        this.#zoneTimer = undefined;
        if (this.#options.catalog.version !== this.#zoneVersion) this.#refreshZone();
      }, spacing - (now - this.#zoneBuiltAt) + 1).unref();
      return;
    }
    const version = this.#options.catalog.version;
    this.#zone = buildClusterZone(this.#options.catalog, this.#options);
    this.#zoneVersion = version;
    this.#zoneBuiltAt = performance.now();
    this.#zoneBuildMs = this.#zoneBuiltAt - now;
    this.#answers = new Map();
  }

  /** A copy of the encoded answer with the client's id, or the truncated answer when it does not fit a UDP client. */
  #fit(response: Buffer, query: Buffer, parsed: ParsedQuery, transport: Transport, copy: boolean): Buffer {
    if (transport === "udp" && response.length > udpLimit(parsed.edns)) {
      this.#stats.truncated++;
      // RFC 2181 §9 and RFC 7766 §5: say TC and let the client ask again over TCP.
      return bareResponse(query, parsed.id, response.readUInt16BE(2) | flagTC, parsed.questionEnd, parsed.edns !== undefined);
    }
    const out = copy ? Buffer.allocUnsafe(response.length) : response;
    if (copy) response.copy(out);
    out[0] = parsed.id >> 8;
    out[1] = parsed.id & 0xff;
    return out;
  }

  /** The encoded cluster answer (id 0), an ExternalName to chase, or the forward marker when the question is not the cluster's. */
  #encodeClusterAnswer(query: Buffer, parsed: ParsedQuery): Buffer | ChaseEntry {
    const name = queryName(query, parsed);
    if (name === undefined) return forwardMarker;
    const zone = this.#zone!;
    const type = typeNames[parsed.qtype] ?? `TYPE${parsed.qtype}`;
    const klass = classNames[parsed.qclass] ?? `CLASS${parsed.qclass}`;
    const reply = answerFromZone(zone, name, type, klass);
    if (!reply) return forwardMarker;
    const alias = reply.answers[0];
    if ((type === "A" || type === "AAAA") && reply.answers.length === 1 && alias.type === "CNAME") return { reply, target: alias.data, type };
    return encodeReply(query, parsed, reply);
  }

  /**
   * An ExternalName asked for addresses: the CNAME plus the target's records, from
   * the cluster zone when the target is in it, else through the forwarder (and
   * its cache), as a recursive server answers: stub resolvers such as glibc's do
   * not follow a bare CNAME themselves. Without an answer for the target, the
   * CNAME alone.
   */
  async #chase(query: Buffer, parsed: ParsedQuery, entry: ChaseEntry, transport: Transport): Promise<Buffer | undefined> {
    const stats = this.#stats;
    stats.answers.cluster++;
    const answers: Answer[] = [...entry.reply.answers];
    let authorities: Answer[] = [];
    let rcode: ClusterReply["rcode"] = "NOERROR";
    let target = entry.target;
    for (let depth = 0; depth < maxChaseDepth; depth++) {
      const inZone = answerFromZone(this.#zone!, target, entry.type, "IN");
      if (inZone) {
        answers.push(...inZone.answers);
        rcode = inZone.rcode;
        authorities = inZone.answers.length === 0 ? inZone.authorities : [];
        const next = inZone.answers.length === 1 && inZone.answers[0].type === "CNAME" ? inZone.answers[0].data : undefined;
        if (next === undefined) break;
        target = next;
        continue;
      }
      const upstream = await this.#resolveUpstream(target, entry.type);
      if (upstream) {
        answers.push(...upstream.answers);
        authorities = upstream.answers.length === 0 ? upstream.authorities : [];
        rcode = upstream.rcode;
      }
      break;
    }
    let response: Buffer;
    try {
      response = encodeReply(query, parsed, { rcode, authoritative: true, answers, authorities, additionals: [] });
    } catch (error) {
      // a record type dns-packet cannot write back: the alias alone
      this.#internalError(error);
      response = encodeReply(query, parsed, entry.reply);
    }
    stats.countRcode(response[3] & 0xf);
    return this.#fit(response, query, parsed, transport, false);
  }

  /** One question for the forwarder (cache, upstreams), decoded; undefined when nothing usable came back. */
  async #resolveUpstream(name: string, type: "A" | "AAAA"): Promise<{ rcode: ClusterReply["rcode"]; answers: Answer[]; authorities: Answer[] } | undefined> {
    const forwarder = this.#options.forwarder;
    if (!forwarder || forwarder.upstreams.length === 0) return undefined;
    const query = dnsPacket.encode({ type: "query", id: 0, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type, class: "IN" }] });
    const parsed = parseQuery(query);
    if (isProblem(parsed)) return undefined;
    const result = await forwarder.resolve(query, parsed);
    if (!result.response) return undefined;
    const decoded = dnsPacket.decode(result.response) as { rcode?: string; answers?: Answer[]; authorities?: Answer[] };
    const rcode = decoded.rcode === "NXDOMAIN" ? "NXDOMAIN" : decoded.rcode === "NOERROR" ? "NOERROR" : undefined;
    if (!rcode) return undefined;
    return { rcode, answers: decoded.answers ?? [], authorities: decoded.authorities ?? [] };
  }

  async #forward(query: Buffer, parsed: ParsedQuery, transport: Transport): Promise<Buffer | undefined> {
    const stats = this.#stats;
    const forwarder = this.#options.forwarder;
    if (!forwarder || forwarder.upstreams.length === 0) {
      this.#drop("no upstream");
      stats.countRcode(rcodes.REFUSED);
      return bareResponse(query, parsed.id, responseFlags(parsed.flags, 0, rcodes.REFUSED), parsed.questionEnd, parsed.edns !== undefined);
    }
    let result;
    try {
      result = await forwarder.resolve(query, parsed);
    } catch (error) {
      stats.answers.error++;
      this.#log.error({ err: error }, "forwarding failed unexpectedly");
      result = { source: "failed" as const, response: undefined };
    }
    if (!result.response) {
      stats.answers.servfail++;
      stats.countRcode(rcodes.SERVFAIL);
      return bareResponse(query, parsed.id, responseFlags(parsed.flags, 0, rcodes.SERVFAIL), parsed.questionEnd, parsed.edns !== undefined);
    }
    if (result.source === "upstream") stats.answers.forwarded++;
    else if (result.source === "cache") stats.answers.cache++;
    else stats.answers.stale++;
    stats.countRcode(result.response[3] & 0xf);
    return this.#fit(result.response, query, parsed, transport, false);
  }

  #onUdp(message: Buffer, remote: RemoteInfo): void {
    const started = performance.now();
    let response: ReturnType<DnsServer["respond"]>;
    try {
      response = this.respond(message, "udp");
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

  #sendUdp(bytes: Buffer, remote: RemoteInfo, started: number): void {
    const udp = this.#udp;
    if (!udp) return;
    // No callback: a failed send surfaces as the socket's 'error' event, and the hot path saves a tick per reply.
    udp.send(bytes, remote.port, remote.address);
    this.#stats.latency(performance.now() - started);
  }

  /** Answer bytes queued in this process for TCP clients, not yet taken by the kernel: about one socket buffer's high-water mark per client that does not read. */
  get tcpBufferedBytes(): number {
    let total = 0;
    for (const client of this.#tcpClients) total += client.writableLength;
    return total;
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
    this.#tcpClients.add(socket);
    const depth = this.#options.tcpPipelineDepth ?? 32;
    let buffered: Buffer = Buffer.alloc(0);
    let pending = 0;
    let clientEnded = false;
    socket.setTimeout(this.#options.tcpIdleMs ?? 10_000, () => {
      this.#drop("tcp idle");
      socket.destroy();
    });
    socket.on("error", () => socket.destroy());
    socket.on("close", () => this.#tcpClients.delete(socket));
    const write = (bytes: Buffer, started: number) => {
      if (socket.destroyed || socket.writableEnded) return;
      const frame = Buffer.allocUnsafe(2 + bytes.length);
      frame.writeUInt16BE(bytes.length, 0);
      bytes.copy(frame, 2);
      // Backpressure: past the socket's high-water mark pump() stops taking queries until 'drain'.
      socket.write(frame);
      this.#stats.latency(performance.now() - started);
    };
    const completeMessageBuffered = () => buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0);
    const pump = () => {
      while (!socket.destroyed && buffered.length >= 2 && pending < depth && !socket.writableNeedDrain) {
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
        const started = performance.now();
        let response: ReturnType<DnsServer["respond"]>;
        try {
          response = this.respond(message, "tcp");
        } catch (error) {
          this.#internalError(error);
          continue;
        }
        if (response === undefined) continue;
        if (!(response instanceof Promise)) {
          write(response, started);
          continue;
        }
        pending++;
        response.then(
          (bytes) => {
            pending--;
            if (bytes) write(bytes, started);
            pump();
          },
          (error) => {
            pending--;
            this.#internalError(error);
            pump();
          },
        );
      }
      if (socket.destroyed) return;
      // Read more only while answers can go out and the pipeline has room.
      if (pending >= depth || socket.writableNeedDrain) socket.pause();
      else socket.resume();
      // The client sent FIN: once its last complete query is answered, so do we (a partial one is dropped).
      if (clientEnded && pending === 0 && !completeMessageBuffered() && !socket.writableEnded) socket.end();
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

  #drop(reason: string): void {
    if (this.#stats.drop(reason)) this.#log.warn({ reason }, "DNS packet refused or dropped (logged once per reason, counted always)");
  }

  #internalError(error: unknown): void {
    this.#stats.answers.error++;
    if (this.#stats.drop("internal error")) this.#log.error({ err: error }, "DNS query failed inside the server (logged once)");
  }
}

/** Header, the question as asked, the records (dns-packet), and OPT for an EDNS client. */
export function encodeReply(query: Uint8Array, parsed: ParsedQuery, reply: ClusterReply): Buffer {
  const records = dnsPacket.encode({ type: "response", id: 0, flags: 0, questions: [], answers: reply.answers, authorities: reply.authorities, additionals: reply.additionals });
  const questionLength = parsed.questionEnd - 12;
  const opt = parsed.edns ? optRecord() : undefined;
  const out = Buffer.allocUnsafe(records.length + questionLength + (opt ? opt.length : 0));
  out.writeUInt16BE(0, 0);
  out.writeUInt16BE(responseFlags(parsed.flags, flagAA, rcodes[reply.rcode]), 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(reply.answers.length, 6);
  out.writeUInt16BE(reply.authorities.length, 8);
  out.writeUInt16BE(reply.additionals.length + (opt ? 1 : 0), 10);
  out.set(query.subarray(12, parsed.questionEnd), 12);
  records.copy(out, 12 + questionLength, 12);
  if (opt) out.set(opt, 12 + questionLength + records.length - 12);
  return out;
}
