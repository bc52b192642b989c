/**
 * DNS wire format at the byte level, where the server must not trust its input:
 * the query parser (header, one question, the EDNS0 OPT record), the record
 * walker that finds TTLs and the OPT record in an upstream's response, and the
 * builders of error and truncated responses. Records the server writes itself
 * are encoded by `dns-packet`; everything read from the network is read here,
 * with every length checked, so that a malformed packet becomes an error code
 * and never an exception or a loop.
 */

export const rcodes = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
export type RcodeName = keyof typeof rcodes;

export const qtypes = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, TXT: 16, AAAA: 28, SRV: 33, OPT: 41, ANY: 255 } as const;
export const classIN = 1;

/** RFC 6891 §7: the extended rcode BADVERS, sent as 1 in the OPT record's upper rcode bits. */
const badVersExtendedRcode = 1;

/** The UDP payload size we advertise and cap clients at: the DNS Flag Day 2020 value that avoids IP fragmentation. */
export const serverUdpPayloadSize = 1232;

export const flagQR = 0x8000;
export const flagAA = 0x0400;
export const flagTC = 0x0200;
export const flagRD = 0x0100;
export const flagRA = 0x0080;
export const flagCD = 0x0010;

export interface ParsedQuery {
  id: number;
  /** The header's flags word (opcode, RD, CD, ...). */
  flags: number;
  /** Offset just past the question section: bytes 12..questionEnd are the question as asked. */
  questionEnd: number;
  qtype: number;
  qclass: number;
  /** Offset just past the question name. */
  nameEnd: number;
  /** Present when the query carried an OPT record. */
  edns?: { udpPayloadSize: number; dnssecOk: boolean; version: number };
}

/** Why a packet could not be answered normally; `drop` means no reply at all. */
export type QueryProblem =
  | { kind: "drop"; reason: "short packet" | "not a query" }
  | { kind: "reply"; rcode: number; reason: "not a standard query" | "question count" | "malformed question" | "malformed records" | "malformed edns" | "bad edns version"; id: number; flags: number; questionEnd?: number; edns?: ParsedQuery["edns"] };

const maxNameLength = 255;

/**
 * Reads a name that must not use compression (a question name: there is nothing
 * before it to point at). Returns the offset after it, or -1 when it is malformed.
 */
function readUncompressedName(buf: Uint8Array, offset: number): number {
  let total = 0;
  for (;;) {
    if (offset >= buf.length) return -1;
    const length = buf[offset];
    if (length === 0) return total + 1 > maxNameLength ? -1 : offset + 1;
    if (length > 63) return -1; // 0xC0 pointers and the obsolete 0x40/0x80 label types
    total += length + 1;
    if (total > maxNameLength) return -1;
    offset += length + 1;
  }
}

/** Skips a possibly compressed name without following pointers: a pointer ends it. */
function skipName(buf: Uint8Array, offset: number): number {
  let total = 0;
  for (;;) {
    if (offset >= buf.length) return -1;
    const length = buf[offset];
    if (length === 0) return offset + 1;
    if ((length & 0xc0) === 0xc0) return offset + 2 <= buf.length ? offset + 2 : -1;
    if (length > 63) return -1;
    total += length + 1;
    if (total > maxNameLength) return -1;
    offset += length + 1;
  }
}

/**
 * The query name in lower case without the trailing dot ("" for the root), or
 * undefined when a label holds bytes that no service name holds (a dot, a space,
 * a control byte): such a name is never the cluster's.
 */
export function queryName(buf: Uint8Array, parsed: ParsedQuery): string | undefined {
  return wireNameToLower(buf, 12, parsed.nameEnd);
}

/** Lower-cased dotted name from an uncompressed wire name; undefined when a label holds a dot or a byte outside printable ASCII. */
export function wireNameToLower(buf: Uint8Array, offset: number, end: number): string | undefined {
  let name = "";
  while (offset < end) {
    const length = buf[offset++];
    if (length === 0) break;
    if (name.length > 0) name += ".";
    for (let i = 0; i < length; i++) {
      let byte = buf[offset + i];
      if (byte <= 0x20 || byte >= 0x7f || byte === 0x2e || byte === 0x5c) return undefined;
      if (byte >= 0x41 && byte <= 0x5a) byte += 0x20;
      name += String.fromCharCode(byte);
    }
    offset += length;
  }
  return name;
}

function readUint16(buf: Uint8Array, offset: number): number {
  return (buf[offset] << 8) | buf[offset + 1];
}

/**
 * Parses a query as a server must: one question, no compression in it, at most
 * one OPT record, every length inside the packet. Other records in the answer
 * and authority sections are skipped (a QUERY has none; they are not trusted).
 */
export function parseQuery(buf: Uint8Array): ParsedQuery | QueryProblem {
  if (buf.length < 12) return { kind: "drop", reason: "short packet" };
  const id = readUint16(buf, 0);
  const flags = readUint16(buf, 2);
  if (flags & flagQR) return { kind: "drop", reason: "not a query" };
  const opcode = (flags >> 11) & 0xf;
  const qdcount = readUint16(buf, 4);
  if (opcode !== 0) return { kind: "reply", rcode: rcodes.NOTIMP, reason: "not a standard query", id, flags };
  if (qdcount !== 1) return { kind: "reply", rcode: rcodes.FORMERR, reason: "question count", id, flags };
  const nameEnd = readUncompressedName(buf, 12);
  if (nameEnd < 0 || nameEnd + 4 > buf.length) return { kind: "reply", rcode: rcodes.FORMERR, reason: "malformed question", id, flags };
  const questionEnd = nameEnd + 4;
  const qtype = readUint16(buf, nameEnd);
  const qclass = readUint16(buf, nameEnd + 2);
  const records = readUint16(buf, 6) + readUint16(buf, 8) + readUint16(buf, 10);
  const additionalStart = readUint16(buf, 6) + readUint16(buf, 8);
  let offset = questionEnd;
  let edns: ParsedQuery["edns"];
  for (let index = 0; index < records; index++) {
    const recordStart = offset;
    offset = skipName(buf, offset);
    if (offset < 0 || offset + 10 > buf.length) return { kind: "reply", rcode: rcodes.FORMERR, reason: "malformed records", id, flags, questionEnd };
    const type = readUint16(buf, offset);
    const rdlength = readUint16(buf, offset + 8);
    if (offset + 10 + rdlength > buf.length) return { kind: "reply", rcode: rcodes.FORMERR, reason: "malformed records", id, flags, questionEnd };
    if (type === qtypes.OPT) {
      // RFC 6891 §6.1.1: one OPT, in the additional section, owned by the root.
      if (edns || index < additionalStart || buf[recordStart] !== 0) return { kind: "reply", rcode: rcodes.FORMERR, reason: "malformed edns", id, flags, questionEnd };
      edns = {
        udpPayloadSize: readUint16(buf, offset + 2),
        version: buf[offset + 5],
        dnssecOk: (buf[offset + 6] & 0x80) !== 0,
      };
    }
    offset += 10 + rdlength;
  }
  if (edns && edns.version !== 0) return { kind: "reply", rcode: rcodes.NOERROR, reason: "bad edns version", id, flags, questionEnd, edns };
  return { id, flags, questionEnd, qtype, qclass, nameEnd, edns };
}

export function isProblem(value: ParsedQuery | QueryProblem): value is QueryProblem {
  return "kind" in value;
}

/**
 * The OPT record a server sends back to an EDNS client (RFC 6891 §6.1.2), with an extended rcode when asked,
 * and the DO bit when the query had it: RFC 3225 §3 says the DO bit of the query MUST be copied in the response.
 */
export function optRecord(extendedRcode = 0, dnssecOk = false): Uint8Array {
  const record = new Uint8Array(11);
  record[0] = 0; // root
  record[1] = 0;
  record[2] = qtypes.OPT;
  record[3] = serverUdpPayloadSize >> 8;
  record[4] = serverUdpPayloadSize & 0xff;
  record[5] = extendedRcode;
  if (dnssecOk) record[7] = 0x80;
  return record; // version 0, no options
}

/** The largest response a UDP client takes: 512 without EDNS, else its size within [512, ours]. */
export function udpLimit(edns: ParsedQuery["edns"]): number {
  if (!edns) return 512;
  return Math.max(512, Math.min(edns.udpPayloadSize, serverUdpPayloadSize));
}

/** Response flags: QR, the query's opcode, RD and CD copied, RA (we recurse by forwarding), plus extra bits and the rcode. */
export function responseFlags(queryFlags: number, extra: number, rcode: number): number {
  return flagQR | (queryFlags & (0x7800 | flagRD | flagCD)) | flagRA | extra | (rcode & 0xf);
}

/**
 * A response with no records but the question (when it is known) and OPT (when
 * the query had EDNS, with its DO bit): errors, and the truncated UDP answer that
 * sends the client to TCP.
 */
export function bareResponse(query: Uint8Array, id: number, flags: number, questionEnd: number | undefined, edns: ParsedQuery["edns"] | boolean, extendedRcode = 0): Buffer {
  const withOpt = edns !== undefined && edns !== false;
  const questionLength = questionEnd === undefined ? 0 : questionEnd - 12;
  const out = Buffer.allocUnsafe(12 + questionLength + (withOpt ? 11 : 0));
  out.writeUInt16BE(id, 0);
  out.writeUInt16BE(flags, 2);
  out.writeUInt16BE(questionLength > 0 ? 1 : 0, 4);
  out.writeUInt16BE(0, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(withOpt ? 1 : 0, 10);
  if (questionLength > 0) out.set(query.subarray(12, questionEnd), 12);
  if (withOpt) out.set(optRecord(extendedRcode, typeof edns === "object" && edns.dnssecOk), 12 + questionLength);
  return out;
}

/** The response to a problem query (FORMERR, NOTIMP, BADVERS), or undefined for one to drop. */
export function problemResponse(query: Uint8Array, problem: QueryProblem): Buffer | undefined {
  if (problem.kind === "drop") return undefined;
  if (problem.reason === "bad edns version") {
    return bareResponse(query, problem.id, responseFlags(problem.flags, 0, 0), problem.questionEnd, problem.edns ?? true, badVersExtendedRcode);
  }
  return bareResponse(query, problem.id, responseFlags(problem.flags, 0, problem.rcode), problem.rcode === rcodes.FORMERR ? undefined : problem.questionEnd, false);
}

export interface WalkedRecord {
  section: "answer" | "authority" | "additional";
  start: number;
  end: number;
  type: number;
  /** Offset of the 32-bit TTL. */
  ttlOffset: number;
  ttl: number;
  rdataOffset: number;
  rdlength: number;
}

export interface WalkedResponse {
  id: number;
  flags: number;
  rcode: number;
  questionEnd: number;
  records: WalkedRecord[];
}

/** Walks an upstream's response: header, one question, every record's bounds. Undefined when malformed. */
export function walkResponse(buf: Uint8Array): WalkedResponse | undefined {
  if (buf.length < 12) return undefined;
  const flags = readUint16(buf, 2);
  if (!(flags & flagQR) || readUint16(buf, 4) !== 1) return undefined;
  const nameEnd = skipName(buf, 12);
  if (nameEnd < 0 || nameEnd + 4 > buf.length) return undefined;
  const counts = [readUint16(buf, 6), readUint16(buf, 8), readUint16(buf, 10)];
  const sections = ["answer", "authority", "additional"] as const;
  const records: WalkedRecord[] = [];
  let offset = nameEnd + 4;
  for (let section = 0; section < 3; section++) {
    for (let index = 0; index < counts[section]; index++) {
      const start = offset;
      offset = skipName(buf, offset);
      if (offset < 0 || offset + 10 > buf.length) return undefined;
      const rdlength = readUint16(buf, offset + 8);
      if (offset + 10 + rdlength > buf.length) return undefined;
      const ttl = ((buf[offset + 4] << 24) >>> 0) + (buf[offset + 5] << 16) + (buf[offset + 6] << 8) + buf[offset + 7];
      records.push({ section: sections[section], start, end: offset + 10 + rdlength, type: readUint16(buf, offset), ttlOffset: offset + 4, ttl, rdataOffset: offset + 10, rdlength });
      offset += 10 + rdlength;
    }
  }
  return { id: readUint16(buf, 0), flags, rcode: flags & 0xf, questionEnd: nameEnd + 4, records };
}

/** Case-insensitive comparison of two wire question sections (DNS 0x20 may change the case). */
export function sameQuestion(a: Uint8Array, aEnd: number, b: Uint8Array, bEnd: number): boolean {
  if (aEnd !== bEnd) return false;
  for (let i = 12; i < aEnd; i++) {
    let x = a[i];
    let y = b[i];
    if (x >= 0x41 && x <= 0x5a) x += 0x20;
    if (y >= 0x41 && y <= 0x5a) y += 0x20;
    if (x !== y) return false;
  }
  return true;
}

/** The largest DNS message a TCP frame can carry: its length is 16 bits (RFC 1035 §4.2.2). */
export const maxTcpMessage = 65_535;

/**
 * A response cut to the records that fit `limit` bytes, in order, with TC set (RFC 2181 §9): a headless
 * Service's answer over TCP may be longer than a TCP frame can say, and the client then gets what fits
 * rather than nothing. Records are cut at their boundaries, so compression pointers (which point back)
 * stay valid; an OPT record is put back at the end for an EDNS client. Undefined when the response
 * cannot be walked or not even its header and question fit.
 */
export function truncateToFit(response: Uint8Array, limit: number): Buffer | undefined {
  const walked = walkResponse(response);
  if (!walked) return undefined;
  const opt = walked.records.find((record) => record.type === qtypes.OPT);
  const room = limit - (opt ? 11 : 0);
  if (walked.questionEnd > room) return undefined;
  const kept: WalkedRecord[] = [];
  let length = walked.questionEnd;
  for (const record of walked.records) {
    if (record.type === qtypes.OPT) continue;
    const size = record.end - record.start;
    if (length + size > room) break;
    kept.push(record);
    length += size;
  }
  const out = Buffer.allocUnsafe(length + (opt ? 11 : 0));
  out.set(response.subarray(0, walked.questionEnd), 0);
  let offset = walked.questionEnd;
  for (const record of kept) {
    out.set(response.subarray(record.start, record.end), offset);
    offset += record.end - record.start;
  }
  const count = (section: WalkedRecord["section"]) => kept.filter((record) => record.section === section).length;
  out.writeUInt16BE(walked.flags | flagTC, 2);
  out.writeUInt16BE(count("answer"), 6);
  out.writeUInt16BE(count("authority"), 8);
  out.writeUInt16BE(count("additional") + (opt ? 1 : 0), 10);
  // Ours, whatever options an upstream's carried (they were for the whole message), with its extended rcode.
  if (opt) out.set(optRecord(response[opt.ttlOffset], (response[opt.ttlOffset + 2] & 0x80) !== 0), offset);
  return out;
}
