/**
 * The cluster zone's answers as bytes: a question's key in the server's answer
 * cache, and the encoding of a reply (the question as asked, the records, OPT).
 * The server (server.ts) encodes each answer once and sends copies of it.
 *
 * ```ts
 * const bytes = encodeReply(query, parsed, answerFromZone(zone, name, "A", "IN")!);
 * cache.set(answerKey(query, parsed), bytes);
 * ```
 */
import dnsPacket from "dns-packet";
import { flagAA, optRecord, rcodes, responseFlags, type ParsedQuery } from "./wire.ts";
import type { ClusterReply } from "./zone.ts";

/**
 * The answer cache's key: RD and CD (copied into the answer), EDNS and DO (its OPT record), the
 * question's type and class, and its name in lower case. Names compare without case (RFC 4343),
 * and a resolver using DNS 0x20 (unbound's use-caps-for-id) asks every name in a new random case:
 * keyed by the bytes as asked, each of its questions was a miss and a new entry. Only ASCII is
 * folded where it matters: a byte above 0x7f folds as Latin-1, and such a name is never the
 * cluster's (it is forwarded, and the forwarder keys it byte by byte).
 */
export function answerKey(query: Buffer, parsed: ParsedQuery): string {
  const ednsCode = parsed.edns ? (parsed.edns.dnssecOk ? 2 : 1) : 0;
  return String.fromCharCode((parsed.flags >> 4) & 0x11, ednsCode, parsed.qtype, parsed.qclass) + query.toString("latin1", 12, parsed.nameEnd).toLowerCase();
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
