/**
 * A forwarded answer carries the agent's own OPT record, not the upstream's: the
 * upstream's OPT answered the agent's query (RFC 6891 §6.1.1: OPT is hop by hop),
 * with its payload size, its DO bit and options meant for the agent (a COOKIE,
 * padding). The upstream here is a UDP socket that answers as a public resolver
 * does when asked with a cookie: real wire format, built with dns-packet (unbound
 * and dnsmasq on this machine send no options unasked). Also: clients asking one
 * outside name in different cases, at once, each get their own case back.
 */
import { createSocket, type Socket } from "node:dgram";
import dnsPacket from "dns-packet";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { createDnsActor, type DnsActor } from "./actor.ts";
import { feedOf, sampleCatalog } from "../../test/support/dns-catalog.ts";
import { udpExchange, type LoosePacket } from "../../test/support/dns-servers.ts";

const cookieOption = 10;
const paddingOption = 12;

/**
 * The upstream's answer: one address, and an OPT of 4096 bytes with DO, a server cookie and padding;
 * for `badvers.example.org` BADVERS (extended rcode 1 over header rcode 0) and no records.
 */
function upstreamAnswer(query: Buffer): Buffer {
  const decoded = dnsPacket.decode(query);
  if (decoded.questions![0].name.toLowerCase() === "badvers.example.org") {
    return dnsPacket.encode({ type: "response", id: decoded.id, flags: dnsPacket.RECURSION_AVAILABLE, questions: decoded.questions, additionals: [{ type: "OPT", name: ".", udpPayloadSize: 4096, extendedRcode: 1 } as dnsPacket.Answer] });
  }
  return dnsPacket.encode({
    type: "response",
    id: decoded.id,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
    questions: decoded.questions,
    answers: [{ name: decoded.questions![0].name, type: "A", ttl: 60, data: "192.0.2.7" }],
    additionals: [{ type: "OPT", name: ".", udpPayloadSize: 4096, flags: dnsPacket.DNSSEC_OK, options: [{ code: cookieOption, data: Buffer.alloc(24, 0xab) }, { code: paddingOption, data: Buffer.alloc(40) }] } as dnsPacket.Answer],
  });
}

function ask(port: number, name: string, edns?: { dnssecOk: boolean }): Promise<LoosePacket> {
  const id = 1 + Math.floor(Math.random() * 65_000);
  const additionals = edns ? [{ type: "OPT", name: ".", udpPayloadSize: 1400, flags: edns.dnssecOk ? dnsPacket.DNSSEC_OK : 0 } as dnsPacket.Answer] : [];
  return udpExchange(port, Buffer.from(dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: "A", class: "IN" }], additionals })), { id, timeoutMs: 3_000 });
}

type OptRecord = { type: string; udpPayloadSize: number; flag_do: boolean; options: unknown[] };
const optOf = (reply: LoosePacket) => reply.additionals?.filter((record) => record.type === "OPT") as unknown as OptRecord[];

describe("a forwarded answer's OPT record", () => {
  let upstream: Socket;
  let upstreamQueries = 0;
  let dns: DnsActor;
  let port: number;

  beforeAll(async () => {
    upstream = createSocket("udp4");
    upstream.on("message", (message, remote) => {
      upstreamQueries++;
      // a little later, so that questions asked at once wait on the same exchange
      setTimeout(() => upstream.send(upstreamAnswer(message), remote.port, remote.address), 20);
    });
    await new Promise<void>((resolve) => upstream.bind(0, "127.0.0.1", resolve));
    dns = createDnsActor({ feed: feedOf(sampleCatalog()), log: silentLogger(), listen: { host: "127.0.0.1", port: 0 }, upstreams: [`127.0.0.1:${upstream.address().port}`] });
    port = (await dns.start()).port;
  });
  afterAll(async () => {
    await dns?.stop();
    await new Promise<void>((resolve) => upstream?.close(() => resolve()));
  });

  it("is ours: our payload size, the client's DO bit, none of the upstream's options; none for a client without EDNS", async () => {
    // fresh from the upstream, then from the cache
    for (const name of ["fresh.example.org", "fresh.example.org"]) {
      const plain = await ask(port, name);
      expect(plain.answers?.[0].data).toBe("192.0.2.7");
      expect(optOf(plain)).toEqual([]);
      const withDo = await ask(port, name, { dnssecOk: true });
      expect(optOf(withDo)).toEqual([expect.objectContaining({ udpPayloadSize: 1232, flag_do: true, options: [] })]);
      const withoutDo = await ask(port, name, { dnssecOk: false });
      expect(optOf(withoutDo)).toEqual([expect.objectContaining({ udpPayloadSize: 1232, flag_do: false, options: [] })]);
    }
  });

  it("takes an upstream's extended rcode (BADVERS) as its failure, not as an empty NOERROR for the client", async () => {
    // Before our own OPT, the client got the upstream's BADVERS, about our query; with our OPT alone it would read NOERROR.
    const reply = await ask(port, "badvers.example.org", { dnssecOk: false });
    expect(reply.rcode).toBe("SERVFAIL");
    expect(optOf(reply)).toEqual([expect.objectContaining({ udpPayloadSize: 1232, options: [] })]);
    expect((dns.stats().forwarder as { upstreamFailures: Record<string, number> }).upstreamFailures["extended rcode 1"]).toBe(1);
  });

  it("answers clients asking one name in different cases at once, each in its own case, from one upstream exchange", async () => {
    const before = upstreamQueries;
    const cases = ["mixed.example.org", "MIXED.example.ORG", "MiXeD.ExAmPlE.oRg"];
    const replies = await Promise.all(cases.map((name) => ask(port, name, { dnssecOk: false })));
    expect(replies.map((reply) => reply.questions?.[0].name)).toEqual(cases);
    expect(replies.map((reply) => reply.answers?.[0].data)).toEqual(["192.0.2.7", "192.0.2.7", "192.0.2.7"]);
    expect(upstreamQueries - before).toBe(1);
  });
});
