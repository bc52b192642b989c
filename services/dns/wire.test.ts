/**
 * The query parser and the response walker on hand-made packets: each rule a
 * server must hold against its input (RFC 1035 §4.1.4, RFC 6891 §6.1.1) once,
 * by name.
 */
import dnsPacket from "dns-packet";
import { describe, expect, it } from "vitest";
import { bareResponse, isProblem, parseQuery, problemResponse, queryName, udpLimit, walkResponse, type ParsedQuery, type QueryProblem } from "./wire.ts";

const header = (fields: { id?: number; flags?: number; qd?: number; an?: number; ns?: number; ar?: number } = {}) => {
  const out = Buffer.alloc(12);
  out.writeUInt16BE(fields.id ?? 0x1234, 0);
  out.writeUInt16BE(fields.flags ?? 0x0100, 2);
  out.writeUInt16BE(fields.qd ?? 1, 4);
  out.writeUInt16BE(fields.an ?? 0, 6);
  out.writeUInt16BE(fields.ns ?? 0, 8);
  out.writeUInt16BE(fields.ar ?? 0, 10);
  return out;
};
const name = (...labels: string[]) => Buffer.concat([...labels.map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label, "latin1")])), Buffer.from([0])]);
const typeClass = (type = 1, klass = 1) => Buffer.from([type >> 8, type & 0xff, klass >> 8, klass & 0xff]);
const opt = (size = 1232, version = 0, dnssecOk = false) => Buffer.from([0, 0, 41, size >> 8, size & 0xff, 0, version, dnssecOk ? 0x80 : 0, 0, 0, 0]);

function problem(packet: Buffer): QueryProblem {
  const parsed = parseQuery(packet);
  if (!isProblem(parsed)) throw new Error("expected a problem");
  return parsed;
}
function query(packet: Buffer): ParsedQuery {
  const parsed = parseQuery(packet);
  if (isProblem(parsed)) throw new Error(`unexpected problem: ${parsed.reason}`);
  return parsed;
}

describe("parseQuery", () => {
  it("reads id, flags, type, class, the lower-case name and EDNS", () => {
    const parsed = query(Buffer.concat([header({ ar: 1 }), name("Web", "SHOP"), typeClass(28), opt(4096, 0, true)]));
    expect(parsed).toMatchObject({ id: 0x1234, qtype: 28, qclass: 1, edns: { udpPayloadSize: 4096, dnssecOk: true, version: 0 } });
    expect(queryName(Buffer.concat([header({ ar: 1 }), name("Web", "SHOP"), typeClass(28), opt()]), parsed)).toBe("web.shop");
  });

  it("drops short packets and responses", () => {
    expect(problem(Buffer.alloc(11))).toMatchObject({ kind: "drop", reason: "short packet" });
    expect(problem(Buffer.concat([header({ flags: 0x8000 }), name("a"), typeClass()]))).toMatchObject({ kind: "drop", reason: "not a query" });
  });

  it("answers NOTIMP for other opcodes and FORMERR for zero or several questions", () => {
    expect(problem(Buffer.concat([header({ flags: 5 << 11 }), name("a"), typeClass()]))).toMatchObject({ rcode: 4, reason: "not a standard query" });
    expect(problem(Buffer.concat([header({ qd: 0 })]))).toMatchObject({ rcode: 1, reason: "question count" });
    expect(problem(Buffer.concat([header({ qd: 2 }), name("a"), typeClass(), name("b"), typeClass()]))).toMatchObject({ rcode: 1, reason: "question count" });
  });

  it("answers FORMERR for compression in the question, bad label types, long labels and long names, and truncation", () => {
    expect(problem(Buffer.concat([header(), Buffer.from([0xc0, 12]), typeClass()]))).toMatchObject({ rcode: 1, reason: "malformed question" });
    expect(problem(Buffer.concat([header(), Buffer.from([0x41, 0]), typeClass()]))).toMatchObject({ reason: "malformed question" });
    expect(problem(Buffer.concat([header(), name("x".repeat(64)), typeClass()]))).toMatchObject({ reason: "malformed question" });
    expect(problem(Buffer.concat([header(), name(...Array<string>(5).fill("y".repeat(60))), typeClass()]))).toMatchObject({ reason: "malformed question" });
    expect(query(Buffer.concat([header(), name(...Array<string>(4).fill("y".repeat(61))), typeClass()])).qtype).toBe(1); // 249 bytes on the wire, within the 255 limit
    expect(problem(Buffer.concat([header(), name("a"), Buffer.from([0, 1])]))).toMatchObject({ reason: "malformed question" });
    expect(problem(Buffer.concat([header(), Buffer.from([5, 0x61])]))).toMatchObject({ reason: "malformed question" });
  });

  it("checks the OPT record: one, in the additional section, owned by the root, version 0", () => {
    expect(problem(Buffer.concat([header({ ar: 2 }), name("a"), typeClass(), opt(), opt()]))).toMatchObject({ reason: "malformed edns" });
    expect(problem(Buffer.concat([header({ an: 1 }), name("a"), typeClass(), opt()]))).toMatchObject({ reason: "malformed edns" });
    const ownedByName = Buffer.concat([Buffer.from([1, 0x61]), opt()]);
    expect(problem(Buffer.concat([header({ ar: 1 }), name("a"), typeClass(), ownedByName]))).toMatchObject({ reason: "malformed edns" });
    expect(problem(Buffer.concat([header({ ar: 1 }), name("a"), typeClass(), opt(1232, 1)]))).toMatchObject({ reason: "bad edns version" });
    expect(problem(Buffer.concat([header({ ar: 3 }), name("a"), typeClass(), opt()]))).toMatchObject({ reason: "malformed records" });
    const lyingLength = Buffer.concat([header({ ar: 1 }), name("a"), typeClass(), Buffer.from([0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 200])]);
    expect(problem(lyingLength)).toMatchObject({ reason: "malformed records" });
  });

  it("marks names no service can have (a dot or a space inside a label) as not the cluster's", () => {
    const packet = Buffer.concat([header(), name("we.b", "shop"), typeClass()]);
    expect(queryName(packet, query(packet))).toBeUndefined();
    const spaced = Buffer.concat([header(), name("we b"), typeClass()]);
    expect(queryName(spaced, query(spaced))).toBeUndefined();
    const root = Buffer.concat([header(), Buffer.from([0]), typeClass(2)]);
    expect(queryName(root, query(root))).toBe("");
  });
});

describe("responses to problems", () => {
  it("FORMERR carries the id and no question; BADVERS carries OPT with extended rcode 1", () => {
    const formerr = Buffer.concat([header({ qd: 2 }), name("a"), typeClass(), name("b"), typeClass()]);
    const reply = dnsPacket.decode(problemResponse(formerr, problem(formerr))!) as unknown as { id: number; rcode: string; questions: unknown[] };
    expect(reply).toMatchObject({ id: 0x1234, rcode: "FORMERR", questions: [] });
    const badvers = Buffer.concat([header({ ar: 1 }), name("a"), typeClass(), opt(1232, 1)]);
    const bytes = problemResponse(badvers, problem(badvers))!;
    const decoded = dnsPacket.decode(bytes) as { additionals: { type: string; extendedRcode?: number }[] };
    expect(decoded.additionals[0]).toMatchObject({ type: "OPT", extendedRcode: 1 });
    expect(problemResponse(Buffer.alloc(3), problem(Buffer.alloc(3)))).toBeUndefined();
  });

  it("caps UDP sizes between 512 and 1232", () => {
    expect(udpLimit(undefined)).toBe(512);
    expect(udpLimit({ udpPayloadSize: 100, dnssecOk: false, version: 0 })).toBe(512);
    expect(udpLimit({ udpPayloadSize: 4096, dnssecOk: false, version: 0 })).toBe(1232);
    expect(udpLimit({ udpPayloadSize: 900, dnssecOk: false, version: 0 })).toBe(900);
  });

  it("a bare TC response keeps the question and the OPT", () => {
    const packet = Buffer.concat([header({ ar: 1 }), name("a", "b"), typeClass(), opt()]);
    const parsed = query(packet);
    const decoded = dnsPacket.decode(bareResponse(packet, parsed.id, 0x8000 | 0x0200, parsed.questionEnd, true)) as { flag_tc: boolean; questions: { name: string }[]; additionals: { type: string }[] };
    expect(decoded.flag_tc).toBe(true);
    expect(decoded.questions[0].name).toBe("a.b");
    expect(decoded.additionals[0].type).toBe("OPT");
  });
});

describe("walkResponse", () => {
  it("finds every record's TTL, compressed names included, and rejects lies", () => {
    const response = dnsPacket.encode({
      type: "response",
      id: 9,
      questions: [{ name: "a.test", type: "A" }],
      answers: [{ name: "a.test", type: "A", ttl: 42, data: "192.0.2.1" }],
      authorities: [{ name: "test", type: "SOA", ttl: 60, data: { mname: "ns.test", rname: "h.test", serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 30 } }],
    });
    const walked = walkResponse(response)!;
    expect(walked.records.map((record) => [record.section, record.type, record.ttl])).toEqual([
      ["answer", 1, 42],
      ["authority", 6, 60],
    ]);
    // a pointer in place of the answer's name (as real servers send)
    const compressed = Buffer.concat([response.subarray(0, walked.questionEnd), Buffer.from([0xc0, 12]), response.subarray(walked.records[0].start + 8)]);
    expect(walkResponse(compressed)?.records[0].ttl).toBe(42);
    expect(walkResponse(response.subarray(0, response.length - 3))).toBeUndefined();
    const query = Buffer.from(response);
    query[2] &= 0x7f;
    expect(walkResponse(query)).toBeUndefined();
  });
});
