/**
 * Leaving DNSSEC records out of an upstream's response, byte for byte: records after a removed one
 * move up, and a name compressed into them (a pointer, as unbound and BIND write) moves with them;
 * a name compressed into a removed record cannot be kept, and the copy says so.
 */
import dnsPacket from "dns-packet";
import { describe, expect, it } from "vitest";
import { copyRecords, recordLayout, unaskedDnssecRecord } from "./forwarded-records.ts";
import { qtypes, walkResponse, type WalkedRecord } from "./wire.ts";

const u16 = (value: number) => [value >> 8, value & 0xff];
const label = (text: string) => [text.length, ...Buffer.from(text, "ascii")];
const record = (owner: number[], type: number, rdata: number[]) => [...owner, ...u16(type), ...u16(1), 0, 0, 0, 60, ...u16(rdata.length), ...rdata];

/**
 * a.example.org A, answered: [RRSIG(A) a.example.org, signer example.org at offset 61], [a.example.org
 * CNAME b.other.net, its target at offset 90], [b.other.net A, its owner a pointer to 90], and `extra`.
 */
function response(extra: number[][] = []): Buffer {
  const question = [...label("a"), ...label("example"), ...label("org"), 0, ...u16(qtypes.A), ...u16(1)];
  const rrsig = record([0xc0, 12], 46, [...u16(qtypes.A), 15, 3, 0, 0, 0, 60, 0x7f, 0, 0, 0, 0x60, 0, 0, 0, ...u16(1), ...label("example"), ...label("org"), 0, 1, 2, 3, 4]);
  const cname = record([0xc0, 12], qtypes.CNAME, [...label("b"), ...label("other"), ...label("net"), 0]);
  const address = record([0xc0, 90], qtypes.A, [192, 0, 2, 1]);
  const records = [rrsig, cname, address, ...extra];
  return Buffer.from([...u16(7), 0x81, 0x80, ...u16(1), ...u16(records.length), 0, 0, 0, 0, ...question, ...records.flat()]);
}

function stripped(bytes: Buffer): Buffer | undefined {
  const walked = walkResponse(bytes)!;
  const layout = recordLayout(walked, (record) => !unaskedDnssecRecord(record, qtypes.A));
  const out = Buffer.alloc(walked.questionEnd + layout.length);
  bytes.copy(out, 0, 0, walked.questionEnd);
  out.writeUInt16BE(layout.counts.answer, 6);
  const end = copyRecords(bytes, layout, out, walked.questionEnd, (record: WalkedRecord) => record.ttl);
  return end === undefined ? undefined : out;
}

describe("an upstream's response without its DNSSEC records", () => {
  it("moves the records after an RRSIG up, and a pointer into them with them", () => {
    const bytes = response();
    expect(bytes[90]).toBe(1); // b.other.net's first label, where the A's owner points
    const decoded = dnsPacket.decode(stripped(bytes)!);
    expect(decoded.answers).toEqual([
      expect.objectContaining({ name: "a.example.org", type: "CNAME", data: "b.other.net" }),
      expect.objectContaining({ name: "b.other.net", type: "A", data: "192.0.2.1" }),
    ]);
  });

  it("gives up when a kept name points into a removed RRSIG (its signer's name)", () => {
    // www.example.org A, written as "www" and a pointer to the RRSIG's signer name at 61
    const bytes = response([record([...label("www"), 0xc0, 61], qtypes.A, [192, 0, 2, 2])]);
    expect(dnsPacket.decode(bytes).answers?.[3]).toMatchObject({ name: "www.example.org" });
    expect(stripped(bytes)).toBeUndefined();
  });

  it("leaves out only what the question did not ask for", () => {
    const walked = walkResponse(response())!;
    const rrsig = walked.records[0];
    expect(unaskedDnssecRecord(rrsig, qtypes.A)).toBe(true);
    expect(unaskedDnssecRecord(rrsig, 46)).toBe(false);
    expect(unaskedDnssecRecord(rrsig, qtypes.ANY)).toBe(false);
    expect(unaskedDnssecRecord({ ...rrsig, section: "authority" }, 46)).toBe(true);
    expect(unaskedDnssecRecord(walked.records[1], qtypes.A)).toBe(false);
  });
});
