/**
 * Answers longer than a TCP frame can say: a headless Service of a few thousand
 * endpoints answers A over UDP with TC, and over TCP with the records that fit
 * 65,535 bytes and TC, never by throwing inside the socket's handler (which
 * ended the agent's process).
 */
import dnsPacket from "dns-packet";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { createDnsActor, type DnsActor } from "./actor.ts";
import { dig, digHeader, digShort, requireTools } from "../../test/support/dns-servers.ts";
import { feedOf, service, slice } from "../../test/support/dns-catalog.ts";
import { maxTcpMessage, truncateToFit } from "./wire.ts";

const endpointCount = 3000;
const address = (index: number) => `10.5.${Math.floor(index / 250)}.${(index % 250) + 1}`;

describe("an answer longer than a TCP frame", () => {
  const feed = feedOf([
    service("shop", "huge", { headless: true, ports: [{ name: "http", protocol: "TCP", port: 80, targetPort: 8080 }] }),
    ...Array.from({ length: endpointCount / 100 }, (_, part) =>
      slice("shop", "huge", `huge-${part}`, Array.from({ length: 100 }, (_, index) => ({ ip: address(part * 100 + index) }))),
    ),
    service("shop", "web", { clusterIPs: ["10.96.0.10"] }),
  ]);
  let dns: DnsActor;
  let port: number;

  beforeAll(async () => {
    requireTools(["dig"]);
    dns = createDnsActor({ feed, log: silentLogger(), listen: { host: "127.0.0.1", port: 0 }, upstreams: [] });
    port = (await dns.start()).port;
  });
  afterAll(async () => {
    await dns?.stop();
  });

  it("over UDP is TC with no records, as before", async () => {
    const out = await dig(port, ["huge.shop.svc.cluster.local", "A", "+ignore"]);
    expect(digHeader(out)).toMatchObject({ status: "NOERROR", answer: 0 });
    expect(digHeader(out).flags).toContain("tc");
  });

  it("over TCP carries the endpoints that fit, with TC, and the server goes on answering", async () => {
    for (const type of ["A", "SRV", "ANY"]) {
      const name = type === "SRV" ? "_http._tcp.huge.shop.svc.cluster.local" : "huge.shop.svc.cluster.local";
      const out = await dig(port, [name, type, "+tcp"]);
      const header = digHeader(out);
      expect(header.status, `${type}: ${out.slice(0, 400)}`).toBe("NOERROR");
      expect(header.flags).toContain("tc");
      expect(header.answer).toBeGreaterThan(300);
      expect(header.answer).toBeLessThan(endpointCount);
    }
    const answered = (await dig(port, ["huge.shop.svc.cluster.local", "A", "+tcp"])).match(/\sIN\s+A\s+(\S+)$/gm) ?? [];
    const known = new Set(Array.from({ length: endpointCount }, (_, index) => address(index)));
    for (const line of answered) expect(known.has(line.trim().split(/\s+/).pop() ?? "")).toBe(true);
    expect(await digShort(port, "web.shop.svc.cluster.local", "A", ["+tcp"])).toEqual(["10.96.0.10"]);
  });

  it("truncateToFit keeps a prefix of whole records, compression intact, and the OPT record", () => {
    const answers = Array.from({ length: 40 }, (_, index) => ({ name: "a.example", type: "A" as const, ttl: 5, data: address(index) }));
    const full = dnsPacket.encode({
      type: "response",
      id: 7,
      flags: dnsPacket.AUTHORITATIVE_ANSWER,
      questions: [{ name: "a.example", type: "A" }],
      answers,
      additionals: [{ name: ".", type: "OPT", udpPayloadSize: 4096, flags: 0, options: [] } as never],
    });
    const cut = truncateToFit(full, 300);
    expect(cut).toBeDefined();
    expect(cut!.length).toBeLessThanOrEqual(300);
    const decoded = dnsPacket.decode(cut!) as { flag_tc: boolean; answers: { data: string }[]; additionals: { type: string }[]; id: number };
    expect(decoded.flag_tc).toBe(true);
    expect(decoded.id).toBe(7);
    expect(decoded.answers.length).toBeGreaterThan(5);
    expect(decoded.answers.map((answer) => answer.data)).toEqual(answers.slice(0, decoded.answers.length).map((answer) => answer.data));
    expect(decoded.additionals.map((record) => record.type)).toEqual(["OPT"]);
    expect(truncateToFit(full, maxTcpMessage)?.length).toBe(full.length);
  });
});
