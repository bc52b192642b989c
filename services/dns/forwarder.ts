/**
 * Forwarding of every question outside the cluster zone to upstream servers, in
 * order, with a timeout per upstream and failover to the next; a cache that
 * honours TTLs (RFC 1035 §3.2.1), caches negative answers for the SOA minimum
 * (RFC 2308 §5), and serves an expired answer (RFC 8767) when every upstream
 * fails. Identical questions in flight share one upstream exchange.
 *
 * One exchange with one upstream is upstream-exchange.ts. Upstream responses are kept as bytes and handed back with the client's id and
 * question and the remaining TTLs written in place: names are never re-encoded.
 *
 * ```ts
 * const forwarder = new Forwarder({ upstreams: [{ host: "127.0.0.1", port: 5353 }], clock });
 * const result = await forwarder.resolve(queryBytes, parsed); // { response, source: "upstream" | "cache" | "stale" }
 * ```
 */
import { isIPv6 } from "node:net";
import { systemClock, type Clock } from "../../lib/clock.ts";
import { describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { exchangeWithUpstream, UpstreamFailure, type Upstream } from "./upstream-exchange.ts";
import { copyRecords, recordLayout, unaskedDnssecRecord, type RecordLayout } from "./forwarded-records.ts";
import { flagRD, flagTC, optRecord, qtypes, rcodes, walkResponse, type ParsedQuery, type WalkedRecord, type WalkedResponse } from "./wire.ts";

export type { Upstream } from "./upstream-exchange.ts";

export interface ForwarderOptions {
  upstreams: Upstream[];
  clock?: Clock;
  log?: Logger;
  /** @default 2_000 — glibc's resolver waits 5 s per server; 2 s leaves room to fail over inside a client's own timeout. */
  timeoutMs?: number;
  /** @default 10_000 — entries (questions); the oldest unused goes first. */
  cacheSize?: number;
  /** @default 3_600 — seconds; an upstream's day-long TTL does not pin a changed record. */
  maxTtl?: number;
  /** @default 86_400_000 — RFC 8767 §5 suggests 1 to 3 days of serving stale while upstreams are down. */
  staleMaxMs?: number;
  /** @default 30 — seconds, the TTL of a stale answer (RFC 8767 §4). */
  staleTtl?: number;
  /** @default 1_024 — questions waiting on upstreams; past it a question gets SERVFAIL (counted). */
  maxInFlight?: number;
}

/** `loop`: the question is one this forwarder itself is asking an upstream right now, come back (answer SERVFAIL). */
export type ForwardSource = "upstream" | "cache" | "stale" | "failed" | "loop";

export interface ForwardResult {
  /** A complete response for the client (its id, its question), or undefined: answer SERVFAIL. */
  response?: Buffer;
  source: ForwardSource;
}

interface CacheEntry {
  bytes: Buffer;
  walked: WalkedResponse;
  storedAt: number;
  expiresAt: number;
}

export interface ForwarderCounters {
  upstreamQueries: number;
  upstreamFailures: Record<string, number>;
  cacheHits: number;
  cacheMisses: number;
  staleServed: number;
  cacheEntries: number;
}

export class Forwarder {
  #upstreams: Upstream[];
  readonly #clock: Clock;
  readonly #log?: Logger;
  readonly #timeoutMs: number;
  readonly #cacheSize: number;
  readonly #maxTtl: number;
  readonly #staleMaxMs: number;
  readonly #staleTtl: number;
  readonly #maxInFlight: number;
  readonly #cache = new Map<string, CacheEntry>();
  readonly #inFlight = new Map<string, Promise<Buffer | undefined>>();
  /** The questions (exact bytes, in the case we chose) we are asking upstreams now, with the upstream asked. */
  readonly #asking = new Map<string, string>();
  readonly #loggedFailures = new Set<string>();
  readonly counters: ForwarderCounters = { upstreamQueries: 0, upstreamFailures: {}, cacheHits: 0, cacheMisses: 0, staleServed: 0, cacheEntries: 0 };
  #closed = false;

  constructor(options: ForwarderOptions) {
    this.#upstreams = options.upstreams;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.log;
    this.#timeoutMs = options.timeoutMs ?? 2_000;
    this.#cacheSize = options.cacheSize ?? 10_000;
    this.#maxTtl = options.maxTtl ?? 3_600;
    this.#staleMaxMs = options.staleMaxMs ?? 86_400_000;
    this.#staleTtl = options.staleTtl ?? 30;
    this.#maxInFlight = options.maxInFlight ?? 1_024;
  }

  get upstreams(): readonly Upstream[] {
    return this.#upstreams;
  }

  /** The upstreams from now on (resolv.conf changed: resolv-watch.ts); questions on their way finish with the old ones, the cache stays. */
  setUpstreams(upstreams: Upstream[]): void {
    this.#upstreams = upstreams;
  }

  /** Answers a parsed query from the cache or the upstreams. */
  async resolve(query: Uint8Array, parsed: ParsedQuery): Promise<ForwardResult> {
    const key = cacheKey(query, parsed);
    const now = this.#clock.monotonic();
    const cached = this.#cache.get(key);
    if (cached && cached.expiresAt > now) {
      this.counters.cacheHits++;
      this.#touch(key, cached);
      return { response: this.#forClient(cached, query, parsed, undefined, Math.floor((now - cached.storedAt) / 1000)), source: "cache" };
    }
    this.counters.cacheMisses++;
    if (this.#asking.size > 0) {
      const upstream = this.#asking.get(exactQuestion(query, parsed));
      if (upstream !== undefined) {
        // Our own question, in the case we gave it, back from a resolver that forwards its zone to us while
        // being our upstream: waiting on our exchange would wait for ourselves until the timeout (docs/dns.md).
        this.#fail("loop", upstream, "sent this agent's own question back to it: it forwards that zone to the agent while being the agent's upstream; answered SERVFAIL");
        return { source: "loop" };
      }
    }
    let pending = this.#inFlight.get(key);
    if (!pending) {
      if (this.#inFlight.size >= this.#maxInFlight) {
        this.#fail("in-flight limit", "in-flight limit", "too many questions in flight");
        return this.#staleOr(key, query, parsed);
      }
      pending = this.#exchangeAll(query, parsed).finally(() => this.#inFlight.delete(key));
      this.#inFlight.set(key, pending);
    }
    const bytes = await pending;
    if (!bytes) return this.#staleOr(key, query, parsed);
    const walked = walkResponse(bytes);
    if (!walked) return this.#staleOr(key, query, parsed);
    const ttl = this.#cacheTtl(bytes, walked);
    const storedAt = this.#clock.monotonic();
    const entry: CacheEntry = { bytes, walked, storedAt, expiresAt: storedAt + ttl * 1000 };
    if (ttl > 0) this.#store(key, entry);
    return { response: this.#forClient(entry, query, parsed, undefined, 0), source: "upstream" };
  }

  close(): void {
    this.#closed = true;
    this.#cache.clear();
  }

  #staleOr(key: string, query: Uint8Array, parsed: ParsedQuery): ForwardResult {
    const entry = this.#cache.get(key);
    const now = this.#clock.monotonic();
    if (entry && now - entry.expiresAt <= this.#staleMaxMs) {
      this.counters.staleServed++;
      return { response: this.#forClient(entry, query, parsed, this.#staleTtl, 0), source: "stale" };
    }
    return { source: "failed" };
  }

  /**
   * The cache lifetime of a response: the smallest TTL of its records, or for a
   * negative answer (NXDOMAIN, NODATA) min(SOA TTL, SOA minimum); SERVFAIL and
   * the like, and negative answers without an SOA, are not cached.
   */
  #cacheTtl(bytes: Buffer, walked: WalkedResponse): number {
    const answers = walked.records.filter((record) => record.section === "answer");
    if (walked.rcode === rcodes.NOERROR && answers.length > 0) {
      let ttl = this.#maxTtl;
      for (const record of walked.records) if (record.type !== qtypes.OPT) ttl = Math.min(ttl, record.ttl);
      return ttl;
    }
    if (walked.rcode !== rcodes.NOERROR && walked.rcode !== rcodes.NXDOMAIN) return 0;
    const soa = walked.records.find((record) => record.section === "authority" && record.type === qtypes.SOA && record.rdlength >= 20);
    if (!soa) return 0;
    const minimum = bytes.readUInt32BE(soa.rdataOffset + soa.rdlength - 4);
    return Math.min(soa.ttl, minimum, this.#maxTtl);
  }

  #store(key: string, entry: CacheEntry): void {
    this.#cache.delete(key);
    this.#cache.set(key, entry);
    while (this.#cache.size > this.#cacheSize) {
      const oldest = this.#cache.keys().next().value as string;
      this.#cache.delete(oldest);
    }
    this.counters.cacheEntries = this.#cache.size;
  }

  #touch(key: string, entry: CacheEntry): void {
    this.#cache.delete(key);
    this.#cache.set(key, entry);
  }

  /**
   * The stored response rewritten for this client: its id, its question (its
   * case), each TTL lowered by the time spent in the cache (or set to `fixedTtl`),
   * and our own OPT record for a client that sent one, none for one that did not.
   * The upstream's OPT was the answer to our query, not to this client's (RFC 6891
   * §6.1.1: OPT is hop by hop): its payload size, its DO bit, and options meant for
   * us, such as a COOKIE or padding, are not passed on. Ours says our payload size
   * and the client's DO bit (RFC 3225 §3). A client without DO gets no RRSIG, NSEC or
   * NSEC3 it did not ask for, even from an upstream that sent them to our query
   * without DO (forwarded-records.ts).
   */
  #forClient(entry: CacheEntry, query: Uint8Array, parsed: ParsedQuery, fixedTtl: number | undefined, elapsedSeconds: number): Buffer {
    const { bytes, walked } = entry;
    const questionLength = parsed.questionEnd - 12;
    const opt = parsed.edns ? optRecord(0, parsed.edns.dnssecOk) : undefined;
    // RFC 8767 §4: a stale record goes out with the stale TTL, whatever it had.
    const ttlOf = (record: WalkedRecord) => fixedTtl ?? Math.max(0, record.ttl - elapsedSeconds);
    const build = (layout: RecordLayout): Buffer | undefined => {
      const out = Buffer.allocUnsafe(12 + questionLength + layout.length + (opt ? opt.length : 0));
      bytes.copy(out, 0, 0, 12);
      out.writeUInt16BE(parsed.id, 0);
      // keep the upstream's rcode and AA/AD bits; the client's RD and CD bits
      out.writeUInt16BE((walked.flags & ~(flagRD | flagTC | 0x0010)) | (parsed.flags & (flagRD | 0x0010)), 2);
      out.writeUInt16BE(layout.counts.answer, 6);
      out.writeUInt16BE(layout.counts.authority, 8);
      out.writeUInt16BE(layout.counts.additional + (opt ? 1 : 0), 10);
      // The question has the same length in any case: records keep their offsets up to the first one left out.
      out.set(query.subarray(12, parsed.questionEnd), 12);
      const end = copyRecords(bytes, layout, out, 12 + questionLength, ttlOf);
      if (end === undefined) return undefined;
      if (opt) out.set(opt, end);
      return out;
    };
    const withoutOpt = (record: WalkedRecord) => record.type !== qtypes.OPT;
    if (!parsed.edns?.dnssecOk) {
      const stripped = build(recordLayout(walked, (record) => withoutOpt(record) && !unaskedDnssecRecord(record, parsed.qtype)));
      if (stripped) return stripped;
      // A kept record's name points into a DNSSEC record: without it the name would be lost.
      this.#fail("dnssec records kept", "a cached answer", "sent DNSSEC records to a query without DO, with a name pointing into them; passed on as sent");
    }
    return build(recordLayout(walked, withoutOpt))!;
  }

  /**
   * The first usable answer of the upstreams in order; undefined when every one failed (then stale or SERVFAIL).
   * Each is asked the question in a case of our own (ownCase), remembered while we wait, so that our
   * question coming back to us through a forwarding loop is told from a client's.
   */
  async #exchangeAll(query: Uint8Array, parsed: ParsedQuery): Promise<Buffer | undefined> {
    const ours = ownCase(query, parsed);
    const tag = ours ? exactQuestion(ours, parsed) : undefined;
    try {
      for (const upstream of this.#upstreams) {
        if (this.#closed) return undefined;
        this.counters.upstreamQueries++;
        const name = `${upstream.host}:${upstream.port}`;
        if (tag !== undefined) this.#asking.set(tag, name);
        try {
          const response = await exchangeWithUpstream(upstream, ours ?? query, parsed, { clock: this.#clock, timeoutMs: this.#timeoutMs });
          const rcode = response[3] & 0xf;
          // An upstream that fails or refuses is no answer: the next one may know.
          if (rcode === rcodes.SERVFAIL || rcode === rcodes.REFUSED || rcode === rcodes.NOTIMP || rcode === rcodes.FORMERR) {
            this.#fail(`rcode ${rcode}`, name, `answered rcode ${rcode}`);
            continue;
          }
          // An extended rcode (RFC 6891 §6.1.3: BADVERS, BADCOOKIE) is the upstream's word on our query,
          // not an answer: the client gets our OPT, without it, so its header rcode alone would lie.
          const extended = extendedRcode(response);
          if (extended !== 0) {
            this.#fail(`extended rcode ${extended}`, name, `answered extended rcode ${(extended << 4) | rcode}`);
            continue;
          }
          return response;
        } catch (error) {
          const failure = error instanceof UpstreamFailure ? error : new UpstreamFailure("error", describeError(error));
          this.#fail(failure.label, name, failure.message);
        }
      }
      return undefined;
    } finally {
      if (tag !== undefined) this.#asking.delete(tag);
    }
  }

  /** Counted by `label` (a failure's kind, never its message text), logged once per upstream and label. */
  #fail(label: string, upstream: string, reason: string): void {
    this.counters.upstreamFailures[label] = (this.counters.upstreamFailures[label] ?? 0) + 1;
    const once = `${label}:${upstream}`;
    if (this.#loggedFailures.has(once)) return;
    this.#loggedFailures.add(once);
    this.#log?.warn({ upstream, reason }, "upstream DNS failed (logged once per upstream and reason)");
  }
}

/**
 * The cache key: lower-case question (name, type, class), the CD bit, which changes what a validating
 * upstream returns, and the DO bit, which we pass on: a signed zone's answer to DO holds its RRSIGs, one
 * without DO none, and a client with DO must not get the one without (its validator would call it bogus).
 */
function cacheKey(query: Uint8Array, parsed: ParsedQuery): string {
  let key = (parsed.flags & 0x0010 ? "cd:" : "") + (parsed.edns?.dnssecOk ? "do:" : "");
  for (let i = 12; i < parsed.questionEnd; i++) {
    let byte = query[i];
    if (byte >= 0x41 && byte <= 0x5a) byte += 0x20;
    key += String.fromCharCode(byte);
  }
  return key;
}

/** The upper 8 bits of the rcode in a response's OPT record; 0 without OPT (or when it cannot be walked). */
function extendedRcode(response: Buffer): number {
  const opt = walkResponse(response)?.records.find((record) => record.type === qtypes.OPT);
  return opt ? response[opt.ttlOffset] : 0;
}

/** The question's bytes as they are (case kept), as a string key. */
function exactQuestion(query: Uint8Array, parsed: ParsedQuery): string {
  return Buffer.from(query.buffer, query.byteOffset + 12, parsed.questionEnd - 12).toString("latin1");
}

/**
 * The query with its question's letters in a random case of our own (DNS 0x20's trick, here as our
 * mark): mixed, so neither all lower nor all upper case as stub resolvers ask, and not the client's;
 * undefined for a name with fewer than two letters. A resolver that forwards the question back to
 * us keeps that case (dnsmasq; unbound without use-caps-for-id): a question in exactly our case, while
 * we ask it, is ours. A client asking the same name meanwhile joins our exchange as before, unless
 * it picked our very case (a client of its own 0x20: one chance in 2^letters).
 */
function ownCase(query: Uint8Array, parsed: ParsedQuery): Uint8Array | undefined {
  const letters: number[] = [];
  // a length byte is below 64, never a letter
  for (let i = 12; i < parsed.nameEnd; i++) if ((query[i] | 0x20) >= 0x61 && (query[i] | 0x20) <= 0x7a) letters.push(i);
  if (letters.length < 2) return undefined;
  const ours = Uint8Array.from(query.subarray(0, parsed.questionEnd));
  for (;;) {
    let upper = 0;
    let differs = false;
    for (const i of letters) {
      const capital = Math.random() < 0.5;
      ours[i] = capital ? query[i] & ~0x20 : query[i] | 0x20;
      if (capital) upper++;
      if (ours[i] !== query[i]) differs = true;
    }
    if (differs && upper > 0 && upper < letters.length) return ours;
  }
}

/** `H`, `H:P`, `[v6]:P` or a bare IPv6 address; port 53 when none is given. */
export function parseUpstream(text: string): Upstream {
  const trimmed = text.trim();
  const bracketed = trimmed.match(/^\[([^\]]+)\](?::(\d+))?$/);
  if (bracketed) return { host: bracketed[1], port: bracketed[2] ? Number(bracketed[2]) : 53 };
  if (isIPv6(trimmed)) return { host: trimmed, port: 53 };
  const [host, port] = trimmed.split(":");
  const number = port === undefined ? 53 : Number(port);
  if (!host || !Number.isInteger(number) || number < 1 || number > 65535) throw new Error(`'${text}' is not an upstream (expected HOST, HOST:PORT or [IPv6]:PORT)`);
  return { host, port: number };
}

/** The `nameserver` lines of a resolv.conf, in order (IPv6 zone ids removed). */
export function upstreamsFromResolvConf(text: string): Upstream[] {
  const upstreams: Upstream[] = [];
  for (const line of text.split("\n")) {
    const match = line.trim().match(/^nameserver\s+(\S+)/);
    if (match) upstreams.push({ host: match[1].replace(/%.*$/, ""), port: 53 });
  }
  return upstreams;
}
