/**
 * The DNS server around the cluster zone: what each message is answered with.
 * EDNS0 sizes honoured, TC when an answer does not fit a UDP client,
 * FORMERR/NOTIMP for malformed or unsupported queries, drops counted by reason.
 * Cluster answers are encoded once per question and served as a copy with the
 * client's id; a catalog change (the feed's batch) updates the zone one Service
 * at a time and drops the cached answers of the names it touched, nothing else.
 * Questions outside the cluster go to the forwarder. The sockets (UDP, TCP per
 * RFC 7766) are transport.ts's.
 *
 * ```ts
 * const server = new DnsServer({ catalog: feed.reader, clusterDomain: "cluster.local", forwarder, log, stats });
 * const { port } = await server.start({ host: "127.0.0.1", port: 0 });
 * await server.stop();
 * ```
 */
import { isIP } from "node:net";
import dnsPacket, { type Answer } from "dns-packet";
import type { CatalogFeed } from "../../bus/catalog-feed.ts";
import type { CatalogReader } from "../../bus/catalog.ts";
import type { Logger } from "../../lib/log.ts";
import type { Forwarder } from "./forwarder.ts";
import type { DnsStats } from "./stats.ts";
import { DnsTransport, type DnsTransportOptions, type ListenAddress, type Reply, type Transport } from "./transport.ts";
import {
  bareResponse,
  flagTC,
  isProblem,
  maxTcpMessage,
  parseQuery,
  problemResponse,
  queryName,
  rcodes,
  responseFlags,
  truncateToFit,
  udpLimit,
  type ParsedQuery,
} from "./wire.ts";
import { AnswerCache, EncodedAnswer, encodeReply } from "./answers.ts";
import { answerFromZone, ZoneIndex, type ClusterReply, type ZoneOptions } from "./zone.ts";

export type { ListenAddress } from "./transport.ts";

export interface DnsServerOptions extends ZoneOptions, Omit<DnsTransportOptions, "respond"> {
  catalog: CatalogReader;
  /**
   * The catalog's change batches. Given, the zone follows each batch one Service at a time and only the
   * touched names' answers are encoded again: a change shows in the next answer at any catalog size.
   * Absent (tests, tools), the zone is derived again for each catalog version, spaced by maxZoneLagMs.
   */
  feed?: Pick<CatalogFeed, "onChange">;
  forwarder?: Forwarder;
  /** @default 50_000 — encoded answers kept; past it the cache starts again empty. */
  answerCacheSize?: number;
  /**
   * @default 500 — without a feed, the longest a catalog change waits before answers show it.
   * A small catalog's zone is rebuilt for the next answer after any change. A
   * large one costs milliseconds to rebuild; while it changes faster than that,
   * rebuilds are spaced so they take at most a tenth of the time, and the
   * previous zone answers meanwhile (the issue asks for a change in the answers
   * within a second).
   */
  maxZoneLagMs?: number;
}

const typeNames: Record<number, string> = { 1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 16: "TXT", 28: "AAAA", 33: "SRV", 255: "ANY" };
const classNames: Record<number, string> = { 1: "IN", 3: "CH", 4: "HS", 255: "ANY" };
/** The cached answer of a question that is not the cluster's: forward it. */
const forwardMarker = { forward: true } as const;

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

export class DnsServer {
  readonly #options: DnsServerOptions;
  readonly #log: Logger;
  readonly #stats: DnsStats;
  readonly #transport: DnsTransport;
  /**
   * Encoded answers (id 0) by question without case (answers.ts), for the current zone; ExternalName
   * chases are kept unencoded. An answer goes out with the client's id and its question as asked.
   */
  readonly #answers: AnswerCache<EncodedAnswer | ChaseEntry | typeof forwardMarker>;
  readonly #index: ZoneIndex;
  #zoneBuilt = false;
  #zoneVersion = -1;
  #zoneBuiltAt = 0;
  #zoneBuildMs = 0;
  #zoneTimer?: NodeJS.Timeout;
  #unfollow?: () => void;

  constructor(options: DnsServerOptions) {
    this.#options = options;
    this.#log = options.log;
    this.#stats = options.stats;
    this.#index = new ZoneIndex(options);
    this.#answers = new AnswerCache(options.answerCacheSize ?? 50_000);
    this.#transport = new DnsTransport({ ...options, respond: (query, transport) => this.respond(query, transport) });
  }

  get address(): ListenAddress | undefined {
    return this.#transport.address;
  }

  /** TCP clients connected now (a gauge: what a leak would grow). */
  get tcpClients(): number {
    return this.#transport.tcpClients;
  }

  /** Answer bytes queued in this process for TCP clients, not yet taken by the kernel. */
  get tcpBufferedBytes(): number {
    return this.#transport.tcpBufferedBytes;
  }

  /** Binds UDP and TCP on the same port (a free one for port 0) and follows the feed's changes. */
  async start(listen: ListenAddress): Promise<ListenAddress> {
    const address = await this.#transport.start(listen);
    // The apex NS record names this server; a wildcard bind has no one address to name.
    const specific = isIP(address.host) !== 0 && address.host !== "0.0.0.0" && address.host !== "::";
    this.#index.setNameserverAddresses(specific ? [address.host] : []);
    this.#answers.clear();
    this.#unfollow ??= this.#options.feed?.onChange((keys) => this.#applyChanges(keys));
    return address;
  }

  async stop(): Promise<void> {
    this.#unfollow?.();
    this.#unfollow = undefined;
    if (this.#zoneTimer) clearTimeout(this.#zoneTimer);
    this.#zoneTimer = undefined;
    await this.#transport.stop();
  }

  /**
   * The response to one DNS message (undefined: drop it). Synchronous for the
   * cluster zone and errors, a promise when the question goes upstream.
   */
  respond(query: Buffer, transport: Transport): Reply | undefined | Promise<Reply | undefined> {
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
    if (!this.#zoneBuilt || (!this.#options.feed && this.#options.catalog.version !== this.#zoneVersion)) this.#refreshZone();
    let template = this.#answers.get(query, parsed);
    if (template !== undefined) stats.answerCache.hits++;
    else {
      stats.answerCache.misses++;
      const name = queryName(query, parsed);
      template = name === undefined ? forwardMarker : this.#encodeClusterAnswer(query, parsed, name);
      this.#answers.set(query, parsed, template, name);
    }
    if (template instanceof EncodedAnswer) {
      stats.answers.cluster++;
      stats.countRcode(template.bytes[3] & 0xf);
      // The query's own bytes carry its id and its question's case: over UDP the answer is written around them.
      if (transport === "udp" && template.bytes.length <= udpLimit(parsed.edns)) return template.around(query, parsed.questionEnd);
      return this.#fit(template.bytes, query, parsed, transport, true);
    }
    if ("target" in template) return this.#chase(query, parsed, template, transport);
    return this.#forward(query, parsed, transport);
  }

  /**
   * Derives the whole zone now, or (without a feed, when the last build was recent and costly) in a
   * moment: real elapsed time, because this guards the CPU, not a protocol timer.
   */
  #refreshZone(): void {
    const now = performance.now();
    const spacing = Math.min(this.#options.maxZoneLagMs ?? 500, this.#zoneBuildMs * 10);
    // A cheap build (a small catalog) always runs, so the very next answer shows the change.
    if (this.#zoneBuilt && this.#zoneBuildMs >= cheapZoneBuildMs && now - this.#zoneBuiltAt < spacing) {
      this.#zoneTimer ??= setTimeout(() => {
        this.#zoneTimer = undefined;
        if (this.#options.catalog.version !== this.#zoneVersion) this.#refreshZone();
      }, spacing - (now - this.#zoneBuiltAt) + 1).unref();
      return;
    }
    const version = this.#options.catalog.version;
    this.#index.rebuild(this.#options.catalog);
    this.#zoneBuilt = true;
    this.#zoneVersion = version;
    this.#zoneBuiltAt = performance.now();
    this.#zoneBuildMs = this.#zoneBuiltAt - now;
    this.#answers.clear();
  }

  /**
   * A batch of changed catalog keys: the touched Services' records are derived again and the
   * cached answers of every name whose records changed are dropped (other names keep theirs; a
   * cached negative answer elsewhere keeps the SOA serial it was encoded with, which only says
   * how old it is). Before the first question nothing is built: the first question builds all.
   */
  #applyChanges(keys: readonly string[]): void {
    if (!this.#zoneBuilt) return;
    const changed = this.#index.apply(this.#options.catalog, keys);
    this.#zoneVersion = this.#options.catalog.version;
    for (const name of changed) this.#answers.dropName(name);
  }

  /** A copy of the encoded answer with the client's id, or the truncated answer when it does not fit a UDP client or a TCP frame. */
  #fit(response: Buffer, query: Buffer, parsed: ParsedQuery, transport: Transport, copy: boolean): Buffer {
    if (transport === "udp" && response.length > udpLimit(parsed.edns)) {
      this.#stats.truncated++;
      // RFC 2181 §9 and RFC 7766 §5: say TC and let the client ask again over TCP.
      return bareResponse(query, parsed.id, response.readUInt16BE(2) | flagTC, parsed.questionEnd, parsed.edns);
    }
    if (response.length > maxTcpMessage) {
      // Longer than a TCP frame can say (a headless Service of a few thousand endpoints): what fits, with TC.
      this.#stats.truncated++;
      const cut = truncateToFit(response, maxTcpMessage) ?? bareResponse(query, parsed.id, response.readUInt16BE(2) | flagTC, parsed.questionEnd, parsed.edns);
      cut.writeUInt16BE(parsed.id, 0);
      query.copy(cut, 12, 12, parsed.questionEnd);
      return cut;
    }
    if (!copy) {
      response[0] = parsed.id >> 8;
      response[1] = parsed.id & 0xff;
      return response;
    }
    const out = Buffer.allocUnsafe(response.length);
    response.copy(out);
    out[0] = parsed.id >> 8;
    out[1] = parsed.id & 0xff;
    // The question as this client asked it: a resolver using DNS 0x20 checks the case it chose (RFC 4343 §4.1, RFC 1035 §7.3).
    query.copy(out, 12, 12, parsed.questionEnd);
    return out;
  }

  /** The encoded cluster answer (id 0), an ExternalName to chase, or the forward marker when the question is not the cluster's. */
  #encodeClusterAnswer(query: Buffer, parsed: ParsedQuery, name: string): EncodedAnswer | ChaseEntry | typeof forwardMarker {
    const zone = this.#index.zone;
    const type = typeNames[parsed.qtype] ?? `TYPE${parsed.qtype}`;
    const klass = classNames[parsed.qclass] ?? `CLASS${parsed.qclass}`;
    const reply = answerFromZone(zone, name, type, klass);
    if (!reply) return forwardMarker;
    const alias = reply.answers[0];
    if ((type === "A" || type === "AAAA") && reply.answers.length === 1 && alias.type === "CNAME") return { reply, target: alias.data, type };
    return new EncodedAnswer(encodeReply(query, parsed, reply), parsed.questionEnd);
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
      const inZone = answerFromZone(this.#index.zone, target, entry.type, "IN");
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
    let decoded: { rcode?: string; answers?: Answer[]; authorities?: Answer[] };
    try {
      decoded = dnsPacket.decode(result.response) as typeof decoded;
    } catch {
      // Framed well enough to be forwarded, yet records dns-packet cannot read (a name pointer loop): nothing usable.
      return undefined;
    }
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
      return bareResponse(query, parsed.id, responseFlags(parsed.flags, 0, rcodes.REFUSED), parsed.questionEnd, parsed.edns);
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
      return bareResponse(query, parsed.id, responseFlags(parsed.flags, 0, rcodes.SERVFAIL), parsed.questionEnd, parsed.edns);
    }
    if (result.source === "upstream") stats.answers.forwarded++;
    else if (result.source === "cache") stats.answers.cache++;
    else stats.answers.stale++;
    stats.countRcode(result.response[3] & 0xf);
    return this.#fit(result.response, query, parsed, transport, false);
  }

  #drop(reason: string): void {
    if (this.#stats.drop(reason)) this.#log.warn({ reason }, "DNS packet refused or dropped (logged once per reason, counted always)");
  }

  #internalError(error: unknown): void {
    this.#stats.answers.error++;
    if (this.#stats.drop("internal error")) this.#log.error({ err: error }, "DNS query failed inside the server (logged once)");
  }
}
