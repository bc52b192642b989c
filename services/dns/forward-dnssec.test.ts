/**
 * DNSSEC through the forwarder. A question with DO goes upstream with DO, so its answer carries the
 * zone's RRSIGs: real unbound serves a zone signed here (test/support/signed-zone.ts), and a real
 * validating unbound in front of the agent (as a node's resolver with DNSSEC on) finds the answer
 * secure, not bogus. A question without DO gets no RRSIG, NSEC or NSEC3 it did not ask for, even
 * from an upstream that sends them anyway (a UDP socket answering in dns-packet's real wire format;
 * unbound sends none unasked); DO and non-DO questions keep their own cache entries.
 */
import { createSocket, type Socket } from "node:dgram";
import dnsPacket from "dns-packet";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { freePort } from "../../test/support/ports.ts";
import { feedOf, sampleCatalog } from "../../test/support/dns-catalog.ts";
import { dig, digHeader, requireTools, udpExchange, type LoosePacket, type RunningDnsServer } from "../../test/support/dns-servers.ts";
import { signedZone, startSignedZoneServer, startValidatingFront } from "../../test/support/signed-zone.ts";
import { createDnsActor, type DnsActor } from "./actor.ts";

function ask(port: number, name: string, type: string, edns?: { dnssecOk: boolean }): Promise<LoosePacket> {
  const id = 1 + Math.floor(Math.random() * 65_000);
  const additionals = edns ? [{ type: "OPT", name: ".", udpPayloadSize: 1232, flags: edns.dnssecOk ? dnsPacket.DNSSEC_OK : 0 } as dnsPacket.Answer] : [];
  return udpExchange(port, Buffer.from(dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: type as "A", class: "IN" }], additionals })), { id, timeoutMs: 3_000 });
}

const typesOf = (records: LoosePacket["answers"]) => (records ?? []).map((record) => record.type).filter((type) => type !== "OPT");
const startAgent = async (upstream: number) => {
  const dns = createDnsActor({ feed: feedOf(sampleCatalog()), log: silentLogger(), listen: { host: "127.0.0.1", port: 0 }, upstreams: [`127.0.0.1:${upstream}`] });
  return { dns, port: (await dns.start()).port };
};

describe("DNSSEC through the forwarder, from a signed zone on real unbound", () => {
  const zone = signedZone("signed.example", [
    { name: "www.signed.example", address: "192.0.2.80" },
    { name: "api.signed.example", address: "192.0.2.81" },
  ]);
  let auth: RunningDnsServer;
  let front: RunningDnsServer;
  let agent: { dns: DnsActor; port: number };

  beforeAll(async () => {
    requireTools(["dig", "unbound"]);
    auth = await startSignedZoneServer({ port: await freePort(), zone });
    agent = await startAgent(auth.port);
    front = await startValidatingFront({ port: await freePort(), zone, forwardTo: { host: "127.0.0.1", port: agent.port } });
  });
  afterAll(async () => {
    await front?.stop();
    await agent?.dns.stop();
    await auth?.stop();
  });

  it("lets a validating resolver in front find the zone's answer secure (AD), not bogus (SERVFAIL)", async () => {
    const out = await dig(front.port, ["+dnssec", "www.signed.example", "A"]);
    expect(digHeader(out).status, `${out}\n${front.output()}`).toBe("NOERROR");
    expect(digHeader(out).flags).toContain("ad");
    expect(out).toMatch(/^www\.signed\.example\.\s+\d+\s+IN\s+A\s+192\.0\.2\.80$/m);
  });

  it("gives a client with DO the RRSIGs and one without none, each from its own cache entry, in the client's case", async () => {
    const upstreamQueries = () => (agent.dns.stats().forwarder as { upstreamQueries: number }).upstreamQueries;
    const before = upstreamQueries();
    // without DO first: had the two shared an entry, the DO client would get this unsigned answer from the cache
    for (let round = 0; round < 2; round++) {
      const plain = await ask(agent.port, "API.Signed.Example", "A", { dnssecOk: false });
      expect(plain.questions?.[0].name).toBe("API.Signed.Example");
      expect(typesOf(plain.answers)).toEqual(["A"]);
      const signed = await ask(agent.port, "aPi.SIGNED.example", "A", { dnssecOk: true });
      expect(signed.questions?.[0].name).toBe("aPi.SIGNED.example");
      expect(typesOf(signed.answers)).toEqual(["A", "RRSIG"]);
      // unbound points the owner at the question, which is the client's
      expect(signed.answers?.[1]).toMatchObject({ name: "aPi.SIGNED.example", data: { typeCovered: "A", signersName: "signed.example" } });
    }
    // one exchange each, the second round from the cache
    expect(upstreamQueries() - before).toBe(2);
  });
});

describe("DNSSEC records from an upstream that sends them to a question without DO", () => {
  let upstream: Socket;
  let agent: { dns: DnsActor; port: number };

  /** An address, its RRSIG and an NSEC in the authority section, whatever the query's DO bit. */
  function carelessAnswer(query: Buffer): Buffer {
    const decoded = dnsPacket.decode(query);
    const name = decoded.questions![0].name;
    const rrsig = { name, type: "RRSIG", ttl: 60, data: { typeCovered: "A", algorithm: 15, labels: 3, originalTTL: 60, expiration: 2_000_000_000, inception: 1_700_000_000, keyTag: 1, signersName: "careless.example", signature: Buffer.alloc(64, 1) } };
    const nsec = { name: "careless.example", type: "NSEC", ttl: 60, data: { nextDomain: "zzz.careless.example", rrtypes: ["A", "RRSIG", "NSEC"] } };
    const answers = decoded.questions![0].type === "RRSIG" ? [rrsig] : [{ name, type: "A", ttl: 60, data: "192.0.2.9" }, rrsig];
    return dnsPacket.encode({ type: "response", id: decoded.id, flags: dnsPacket.RECURSION_AVAILABLE, questions: decoded.questions, answers, authorities: [nsec], additionals: [{ type: "OPT", name: ".", udpPayloadSize: 1232 } as dnsPacket.Answer] } as dnsPacket.Packet);
  }

  beforeAll(async () => {
    upstream = createSocket("udp4");
    upstream.on("message", (message, remote) => upstream.send(carelessAnswer(message), remote.port, remote.address));
    await new Promise<void>((resolve) => upstream.bind(0, "127.0.0.1", resolve));
    agent = await startAgent(upstream.address().port);
  });
  afterAll(async () => {
    await agent?.dns.stop();
    await new Promise<void>((resolve) => upstream?.close(() => resolve()));
  });

  it("strips them for a client without DO (with EDNS or without), keeps them for one with DO", async () => {
    for (let round = 0; round < 2; round++) {
      for (const edns of [undefined, { dnssecOk: false }]) {
        const plain = await ask(agent.port, "www.careless.example", "A", edns);
        expect(typesOf(plain.answers)).toEqual(["A"]);
        expect(typesOf(plain.authorities)).toEqual([]);
      }
      const signed = await ask(agent.port, "www.careless.example", "A", { dnssecOk: true });
      expect(typesOf(signed.answers)).toEqual(["A", "RRSIG"]);
      expect(typesOf(signed.authorities)).toEqual(["NSEC"]);
    }
  });

  it("keeps the RRSIGs a client without DO asked for by type (RFC 3225 §3)", async () => {
    const reply = await ask(agent.port, "www.careless.example", "RRSIG", { dnssecOk: false });
    expect(typesOf(reply.answers)).toEqual(["RRSIG"]);
    expect(typesOf(reply.authorities)).toEqual([]);
  });
});
