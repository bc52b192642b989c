/**
 * The cluster zone's answers as bytes: the server's answer cache (by question,
 * without case), the encoding of a reply (the question as asked, the records,
 * OPT), and the UDP answer written around a query's own header and question.
 * The server (server.ts) encodes each answer once and sends it many times.
 *
 * ```ts
 * const cache = new AnswerCache<EncodedAnswer>(50_000);
 * cache.set(query, parsed, new EncodedAnswer(encodeReply(query, parsed, reply), parsed.questionEnd), name);
 * udp.send(cache.get(query, parsed)!.around(query, parsed.questionEnd), port, address);
 * ```
 */
import dnsPacket from "dns-packet";
import { flagAA, optRecord, rcodes, responseFlags, type ParsedQuery } from "./wire.ts";
import type { ClusterReply } from "./zone.ts";

/** An encoded cluster answer (id 0, the question in the case of its first asker) and its records after the question. */
export class EncodedAnswer {
  readonly bytes: Buffer;
  readonly #records: Buffer;

  constructor(bytes: Buffer, questionEnd: number) {
    this.bytes = bytes;
    this.#records = bytes.subarray(questionEnd);
  }

  /**
   * The UDP answer to `query`, made of the query itself: its header gets the answer's flags and counts
   * in place (its id stays), its question stays as asked (its case, RFC 4343), the records follow; sent
   * as one datagram from the two parts, so nothing is allocated or copied but the header's 10 bytes.
   * The query's bytes are the caller's to overwrite (a UDP message of its own).
   */
  around(query: Buffer, questionEnd: number): Buffer[] {
    const bytes = this.bytes;
    for (let i = 2; i < 12; i++) query[i] = bytes[i];
    return [questionEnd === query.length ? query : query.subarray(0, questionEnd), this.#records];
  }
}

/** RD and CD (copied into an answer), EDNS and DO (its OPT record): what else than the question selects an answer. */
function flagsCode(parsed: ParsedQuery): number {
  return ((parsed.flags >> 4) & 0x11) | (parsed.edns ? (parsed.edns.dnssecOk ? 0x200 : 0x100) : 0);
}

/**
 * The answer cache's key: a 30-bit FNV-1a hash (a small integer for the Map) of flagsCode, the name
 * in lower case and the type and class. Names compare without case (RFC 4343), and a resolver using
 * DNS 0x20 (unbound's use-caps-for-id) asks every name in a new random case: keyed by the bytes as
 * asked, each of its questions was a miss and a new entry. Only A-Z fold (a length byte is below 64).
 * Hashed in JavaScript: a string key (latin1 toString, lower-casing, concatenation, then the
 * string's hash) cost several times the whole lookup.
 */
function answerKey(query: Uint8Array, parsed: ParsedQuery): number {
  let hash = Math.imul(2166136261 ^ flagsCode(parsed), 16777619);
  const nameEnd = parsed.nameEnd;
  for (let i = 12; i < nameEnd; i++) {
    const byte = query[i];
    hash = Math.imul(hash ^ (byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte), 16777619);
  }
  for (let i = nameEnd; i < parsed.questionEnd; i++) hash = Math.imul(hash ^ query[i], 16777619);
  return hash & 0x3fffffff;
}

interface Slot<T> {
  /** The question (name in lower case, type, class) and flagsCode: two questions of one hash are told apart. */
  question: Uint8Array;
  code: number;
  value: T;
}

/**
 * Answers by question, without case, for the current zone, with the keys of each name so that a
 * changed name drops its answers (any type, any flags). Past `limit` entries it starts again empty.
 * Two questions of one hash take turns in its slot (each a miss for the other): rare at 30 bits.
 */
export class AnswerCache<T> {
  readonly #limit: number;
  #slots = new Map<number, Slot<T>>();
  #keysByName = new Map<string, number[]>();

  constructor(limit: number) {
    this.#limit = limit;
  }

  get size(): number {
    return this.#slots.size;
  }

  get(query: Uint8Array, parsed: ParsedQuery): T | undefined {
    const slot = this.#slots.get(answerKey(query, parsed));
    if (slot === undefined || slot.code !== flagsCode(parsed)) return undefined;
    const question = slot.question;
    const nameEnd = parsed.nameEnd;
    if (question.length !== parsed.questionEnd - 12) return undefined;
    for (let i = 12; i < nameEnd; i++) {
      const byte = query[i];
      if ((byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte) !== question[i - 12]) return undefined;
    }
    for (let i = nameEnd; i < parsed.questionEnd; i++) if (query[i] !== question[i - 12]) return undefined;
    return slot.value;
  }

  /** Keeps `value` for this question; `name` (lower case) is the name whose change drops it. */
  set(query: Uint8Array, parsed: ParsedQuery, value: T, name: string | undefined): void {
    if (this.#slots.size >= this.#limit) this.clear();
    // a copy: on a Buffer (the server's query) slice() is a view, and folding it would lower-case the
    // client's own question, which the answer then echoes (each first question of a name lost its case)
    const question = Uint8Array.prototype.slice.call(query, 12, parsed.questionEnd);
    for (let i = 0; i < parsed.nameEnd - 12; i++) if (question[i] >= 0x41 && question[i] <= 0x5a) question[i] |= 0x20;
    const key = answerKey(query, parsed);
    this.#slots.set(key, { question, code: flagsCode(parsed), value });
    if (name === undefined) return;
    const keys = this.#keysByName.get(name);
    if (keys) keys.push(key);
    else this.#keysByName.set(name, [key]);
  }

  /** Drops the answers to every question about `name` (lower case). */
  dropName(name: string): void {
    const keys = this.#keysByName.get(name);
    if (!keys) return;
    for (const key of keys) this.#slots.delete(key);
    this.#keysByName.delete(name);
  }

  clear(): void {
    this.#slots = new Map();
    this.#keysByName = new Map();
  }
}

/** Header, the question as asked, the records (dns-packet), and OPT for an EDNS client. */
export function encodeReply(query: Uint8Array, parsed: ParsedQuery, reply: ClusterReply): Buffer {
  const records = dnsPacket.encode({ type: "response", id: 0, flags: 0, questions: [], answers: reply.answers, authorities: reply.authorities, additionals: reply.additionals });
  const questionLength = parsed.questionEnd - 12;
  const opt = parsed.edns ? optRecord(0, parsed.edns.dnssecOk) : undefined;
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
