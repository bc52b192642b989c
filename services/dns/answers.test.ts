/**
 * The answer cache's questions: one name in any case is one question; type and
 * class bytes are never folded (type 65, 0x0041, is not type 97, 0x0061);
 * RD, CD, EDNS and DO select different answers; a changed name drops its own.
 */
import dnsPacket from "dns-packet";
import { describe, expect, it } from "vitest";
import { AnswerCache } from "./answers.ts";
import { parseQuery, type ParsedQuery } from "./wire.ts";

function query(name: string, type: number, options: { rd?: boolean; edns?: boolean; dnssecOk?: boolean } = {}): [Buffer, ParsedQuery] {
  const bytes = Buffer.from(
    dnsPacket.encode({
      type: "query",
      id: 1,
      flags: options.rd === false ? 0 : dnsPacket.RECURSION_DESIRED,
      questions: [{ name, type: "A", class: "IN" }],
      additionals: options.edns ? [{ type: "OPT", name: ".", udpPayloadSize: 1232, flags: options.dnssecOk ? dnsPacket.DNSSEC_OK : 0 } as dnsPacket.Answer] : [],
    }),
  );
  const nameEnd = (parseQuery(bytes) as ParsedQuery).nameEnd;
  bytes.writeUInt16BE(type, nameEnd);
  return [bytes, parseQuery(bytes) as ParsedQuery];
}

describe("the answer cache", () => {
  it("finds one question in any case, and only that question", () => {
    const cache = new AnswerCache<string>(100);
    cache.set(...query("Web.Shop.svc.cluster.local", 1), "web A", "web.shop.svc.cluster.local");
    expect(cache.get(...query("web.shop.svc.cluster.local", 1))).toBe("web A");
    expect(cache.get(...query("WEB.SHOP.SVC.CLUSTER.LOCAL", 1))).toBe("web A");
    expect(cache.get(...query("web.shop.svc.cluster.local", 28))).toBeUndefined();
    expect(cache.get(...query("web.shop.svc.cluster.loca", 1))).toBeUndefined();
    expect(cache.get(...query("web.shop.svc.cluster.local", 1, { rd: false }))).toBeUndefined();
    expect(cache.get(...query("web.shop.svc.cluster.local", 1, { edns: true }))).toBeUndefined();
    cache.set(...query("web.shop.svc.cluster.local", 1, { edns: true }), "web A edns", "web.shop.svc.cluster.local");
    expect(cache.get(...query("web.shop.svc.cluster.local", 1, { edns: true, dnssecOk: true }))).toBeUndefined();
    expect(cache.get(...query("wEb.shop.svc.cluster.local", 1, { edns: true }))).toBe("web A edns");
  });

  it("leaves the query's bytes as they were: the answer echoes the question in its case", () => {
    // Buffer's slice() is a view: folding it lower-cased the server's query, and the first answer of each question lost its case.
    const [bytes, parsed] = query("Web.Shop.svc.cluster.local", 1);
    const before = Buffer.from(bytes);
    new AnswerCache<string>(100).set(bytes, parsed, "web A", "web.shop.svc.cluster.local");
    expect(bytes.toString("latin1")).toBe(before.toString("latin1"));
  });

  it("does not fold a type's or class's bytes, nor bytes that are not A-Z", () => {
    const cache = new AnswerCache<string>(100);
    cache.set(...query("web.shop.svc.cluster.local", 65), "HTTPS", "web.shop.svc.cluster.local");
    expect(cache.get(...query("web.shop.svc.cluster.local", 97))).toBeUndefined();
    cache.set(...query("a@b.example", 1), "at", undefined);
    expect(cache.get(...query("a`b.example", 1))).toBeUndefined();
  });

  it("drops a changed name's answers, of every type, and keeps the others", () => {
    const cache = new AnswerCache<string>(100);
    cache.set(...query("web.shop.svc.cluster.local", 1), "A", "web.shop.svc.cluster.local");
    cache.set(...query("WEB.shop.svc.cluster.local", 28), "AAAA", "web.shop.svc.cluster.local");
    cache.set(...query("db.shop.svc.cluster.local", 1), "db", "db.shop.svc.cluster.local");
    cache.dropName("web.shop.svc.cluster.local");
    expect(cache.get(...query("web.shop.svc.cluster.local", 1))).toBeUndefined();
    expect(cache.get(...query("web.shop.svc.cluster.local", 28))).toBeUndefined();
    expect(cache.get(...query("db.shop.svc.cluster.local", 1))).toBe("db");
  });
});
