/**
 * The records of an upstream's response as one client gets them: without the upstream's OPT (hop by hop,
 * RFC 6891 §6.1.1) and, for a client that did not set DO, without the DNSSEC records it did not ask for
 * (RFC 3225 §3, RFC 4035 §3.2.1). Records are copied as bytes, never re-encoded; a compression pointer in
 * a kept record that points past a removed one is moved with the bytes it points at.
 *
 * ```ts
 * const layout = recordLayout(walked, (record) => record.type !== qtypes.OPT);
 * const end = copyRecords(bytes, layout, out, 12 + questionLength, (record) => record.ttl);
 * ```
 */
import { qtypes, type WalkedRecord, type WalkedResponse } from "./wire.ts";

/** The DNSSEC records that authenticate an answer (RRSIG, NSEC, NSEC3, and RFC 2535's SIG and NXT). */
const dnssecProofTypes = new Set([24, 30, 46, 47, 50]);

/**
 * True for a record a client without DO must not get: a DNSSEC proof record, unless it is what the
 * question asked for (an explicit RRSIG or NSEC question, or ANY: RFC 3225 §3).
 */
export function unaskedDnssecRecord(record: WalkedRecord, qtype: number): boolean {
  return dnssecProofTypes.has(record.type) && qtype !== qtypes.ANY && !(record.section === "answer" && record.type === qtype);
}

export interface RecordLayout {
  kept: WalkedRecord[];
  /** The records left out, in message order. */
  removed: WalkedRecord[];
  /** Bytes of the kept records. */
  length: number;
  counts: { answer: number; authority: number; additional: number };
}

export function recordLayout(walked: WalkedResponse, keep: (record: WalkedRecord) => boolean): RecordLayout {
  const layout: RecordLayout = { kept: [], removed: [], length: 0, counts: { answer: 0, authority: 0, additional: 0 } };
  for (const record of walked.records) {
    if (!keep(record)) {
      layout.removed.push(record);
      continue;
    }
    layout.kept.push(record);
    layout.length += record.end - record.start;
    layout.counts[record.section]++;
  }
  return layout;
}

/**
 * Offsets of the names in a record's RDATA that a server may compress: those of RFC 1035's types
 * (RFC 3597 §4), and SRV's target, which some servers compress although RFC 2782 says not to.
 */
function rdataNames(bytes: Uint8Array, record: WalkedRecord): number[] {
  const at = record.rdataOffset;
  switch (record.type) {
    case qtypes.NS:
    case qtypes.CNAME:
    case qtypes.PTR:
    case 3: // MD
    case 4: // MF
    case 7: // MB
    case 8: // MG
    case 9: // MR
      return [at];
    case 15: // MX
      return [at + 2];
    case qtypes.SRV:
      return [at + 6];
    case qtypes.SOA:
    case 14: {
      // SOA's MNAME then RNAME, MINFO's RMAILBX then EMAILBX
      const second = nameEnd(bytes, at, record.end);
      return second < 0 ? [at] : [at, second];
    }
    default:
      return [];
  }
}

/** The offset after a name at `offset` (a pointer ends it), or -1 when it runs past `limit`. */
function nameEnd(bytes: Uint8Array, offset: number, limit: number): number {
  while (offset < limit) {
    const length = bytes[offset];
    if (length === 0) return offset + 1;
    if ((length & 0xc0) === 0xc0) return offset + 2 <= limit ? offset + 2 : -1;
    if (length > 63) return -1;
    offset += length + 1;
  }
  return -1;
}

/** Where the pointer at `offset` (if the name there ends in one) sits; -1 when it ends without one. */
function pointerOf(bytes: Uint8Array, offset: number, limit: number): number {
  const end = nameEnd(bytes, offset, limit);
  return end >= 2 && (bytes[end - 2] & 0xc0) === 0xc0 ? end - 2 : -1;
}

/**
 * Copies the kept records into `out` from `write` on, each TTL as `ttlOf` says, and returns the end;
 * undefined when a kept record points into a removed DNSSEC record (a name first written in an RRSIG's
 * signer or an NSEC's next name): then the caller keeps them. A pointer into a removed OPT (whose name
 * is the root, which nobody points at) is left as it was.
 */
export function copyRecords(bytes: Buffer, layout: RecordLayout, out: Buffer, write: number, ttlOf: (record: WalkedRecord) => number): number | undefined {
  const shifted = layout.removed.length > 0 && layout.removed[0].start < (layout.kept.at(-1)?.start ?? 0);
  for (const record of layout.kept) {
    const moved = write - record.start;
    bytes.copy(out, write, record.start, record.end);
    out.writeUInt32BE(ttlOf(record), record.ttlOffset + moved);
    write += record.end - record.start;
    if (!shifted) continue;
    for (const name of [record.start, ...rdataNames(bytes, record)]) {
      const pointer = pointerOf(bytes, name, record.end);
      if (pointer < 0) continue;
      const target = ((bytes[pointer] & 0x3f) << 8) | bytes[pointer + 1];
      let before = 0;
      for (const removed of layout.removed) {
        if (removed.start >= target) break;
        if (target < removed.end) {
          if (removed.type !== qtypes.OPT) return undefined;
          before = -1;
          break;
        }
        before += removed.end - removed.start;
      }
      if (before > 0) out.writeUInt16BE(0xc000 | (target - before), pointer + moved);
    }
  }
  return write;
}
