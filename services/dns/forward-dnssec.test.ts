/**
 * DNSSEC through the forwarder. A question with DO goes upstream with DO, so its answer carries the
 * zone's RRSIGs: real unbound serves a zone signed here (test/support/signed-zone.ts), and a real
 * validating unbound in front of the agent (as a node's resolver with DNSSEC on) finds the answer
 * secure, not bogus. DO and non-DO questions keep their own cache entries.
 */
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
