/**
 * An ExternalName followed through an upstream that answers with records
 * dns-packet cannot read (a CNAME whose target is a name pointer to itself):
 * well framed, so the forwarder takes it, yet the chase could not decode it and
 * the client got no answer at all, waiting out its timeout. Now the client gets
 * the alias alone, as when the upstream gives nothing usable.
 */
import { createSocket, type Socket } from "node:dgram";
import dnsPacket from "dns-packet";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { createDnsActor, type DnsActor } from "./actor.ts";
import { feedOf, service } from "../../test/support/dns-catalog.ts";
import { udpQuery } from "../../test/support/dns-servers.ts";

/** A CNAME answer to `query` whose target is a compression pointer to itself. */
function loopingAnswer(query: Buffer): Buffer {
  const decoded = dnsPacket.decode(query);
  const question = decoded.questions![0];
  const encoded = Buffer.from(dnsPacket.encode({ type: "response", id: decoded.id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: [question], answers: [{ name: question.name, type: "CNAME", ttl: 30, data: "x.test" }] }));
  // The CNAME's rdata ("x.test", 8 bytes) becomes a 2-byte pointer to its own offset.
  const rdata = encoded.length - 8;
  encoded.writeUInt16BE(2, rdata - 2);
  encoded[rdata] = 0xc0 | (rdata >> 8);
  encoded[rdata + 1] = rdata & 0xff;
  return encoded.subarray(0, rdata + 2);
}

describe("an ExternalName through an upstream that sends what cannot be decoded", () => {
  let upstream: Socket;
  let dns: DnsActor;
  let port: number;

  beforeAll(async () => {
    upstream = createSocket("udp4");
    upstream.on("message", (message, remote) => upstream.send(loopingAnswer(message), remote.port, remote.address));
    await new Promise<void>((resolve) => upstream.bind(0, "127.0.0.1", resolve));
    const feed = feedOf([service("shop", "outside", { type: "ExternalName", externalName: "db.example.org", ports: [] })]);
    dns = createDnsActor({ feed, log: silentLogger(), listen: { host: "127.0.0.1", port: 0 }, upstreams: [`127.0.0.1:${upstream.address().port}`] });
    port = (await dns.start()).port;
  });
  afterAll(async () => {
    await dns?.stop();
    await new Promise<void>((resolve) => upstream?.close(() => resolve()));
  });

  it("answers with the alias alone instead of leaving the client without an answer", async () => {
    for (const type of ["A", "AAAA"]) {
      const reply = await udpQuery(port, "outside.shop.svc.cluster.local", type, { timeoutMs: 3_000 });
      expect(reply.rcode).toBe("NOERROR");
      expect(reply.answers).toEqual([expect.objectContaining({ type: "CNAME", data: "db.example.org" })]);
    }
  });
});
