/**
 * The DNS actor on a loopback port, asked by real `dig` for every record kind of
 * the Kubernetes DNS spec and its edge cases, plus the wire rules around them:
 * EDNS0 sizes, TC over UDP then the full answer over TCP, the question echoed,
 * FORMERR/NOTIMP/BADVERS, TCP pipelining and bad TCP lengths.
 */
import dnsPacket from "dns-packet";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { createDnsActor, type DnsActor } from "./actor.ts";
import { dig, digHeader, digShort, frame, requireTools, tcpExchange, udpExchange, udpQuery } from "../../test/support/dns-servers.ts";
import { feedOf, put, remove, sampleCatalog, service, slice } from "../../test/support/dns-catalog.ts";

describe("DNS server with dig", () => {
  const feed = feedOf([
    ...sampleCatalog(),
    service("shop", "mid", { headless: true, ports: [] }),
    slice("shop", "mid", "mid-1", Array.from({ length: 20 }, (_, index) => ({ ip: `10.3.0.${index + 1}` }))),
  ]);
  let dns: DnsActor;
  let port: number;

  beforeAll(async () => {
    requireTools(["dig"]);
    dns = createDnsActor({ feed, log: silentLogger(), listen: { host: "127.0.0.1", port: 0 }, upstreams: [], tcpIdleMs: 400 });
    port = (await dns.start()).port;
  });
  afterAll(async () => {
    await dns?.stop();
  });

  it("serves in state 'serving' on UDP and TCP", async () => {
    expect(String(dns.actor.getSnapshot().value)).toBe("serving");
    expect(await digShort(port, "web.shop.svc.cluster.local", "A", ["+tcp"])).toEqual(["10.96.0.10"]);
  });

  it("answers A for a ClusterIP service, authoritative, with the TTL", async () => {
    const out = await dig(port, ["web.shop.svc.cluster.local", "A"]);
    const header = digHeader(out);
    expect(header.status).toBe("NOERROR");
    expect(header.flags).toEqual(expect.arrayContaining(["qr", "aa", "rd", "ra"]));
    expect(out).toMatch(/^web\.shop\.svc\.cluster\.local\.\s+5\s+IN\s+A\s+10\.96\.0\.10$/m);
  });

  it("answers dual-stack services with A and AAAA, and an IPv6-only one with AAAA", async () => {
    expect(await digShort(port, "dual.shop.svc.cluster.local", "A")).toEqual(["10.96.0.11"]);
    expect(await digShort(port, "dual.shop.svc.cluster.local", "AAAA")).toEqual(["fd00:96::11"]);
    expect(await digShort(port, "v6only.shop.svc.cluster.local", "AAAA")).toEqual(["fd00:96::12"]);
  });

  it("answers a ClusterIP service without endpoints with its cluster IP", async () => {
    expect(await digShort(port, "lonely.shop.svc.cluster.local", "A")).toEqual(["10.96.0.13"]);
  });

  it("answers headless services with ready endpoints, and not-ready ones when published", async () => {
    expect(await digShort(port, "db.shop.svc.cluster.local", "A")).toEqual(["10.1.1.1", "10.1.1.2"]);
    expect(await digShort(port, "db-1.db.shop.svc.cluster.local", "A")).toEqual(["10.1.1.2"]);
    expect(await digShort(port, "peers.shop.svc.cluster.local", "A")).toEqual(["10.1.2.1", "10.1.2.2"]);
    expect(await digShort(port, "db6.shop.svc.cluster.local", "AAAA")).toEqual(["fd00:1::1"]);
  });

  it("answers a headless service without ready endpoints with NXDOMAIN and the SOA (spec §2.4.1)", async () => {
    const out = await dig(port, ["empty.shop.svc.cluster.local", "A"]);
    expect(digHeader(out)).toMatchObject({ status: "NXDOMAIN", answer: 0, authority: 1 });
    expect(out).toMatch(/^cluster\.local\.\s+5\s+IN\s+SOA\s+ns\.dns\.cluster\.local\. hostmaster\.cluster\.local\. \d+ 7200 1800 86400 5$/m);
  });

  it("answers SRV for named ports of ClusterIP and headless services, with target addresses in additional", async () => {
    expect(await digShort(port, "_http._tcp.web.shop.svc.cluster.local", "SRV")).toEqual(["0 100 80 web.shop.svc.cluster.local."]);
    expect(await digShort(port, "_gossip._udp.peers.shop.svc.cluster.local", "SRV")).toEqual(["0 50 7946 peer-0.peers.shop.svc.cluster.local.", "0 50 7946 peer-1.peers.shop.svc.cluster.local."]);
    const out = await dig(port, ["_pg._tcp.db.shop.svc.cluster.local", "SRV"]);
    expect(digHeader(out)).toMatchObject({ status: "NOERROR", answer: 2 });
    expect(out).toMatch(/^db-0\.db\.shop\.svc\.cluster\.local\.\s+5\s+IN\s+A\s+10\.1\.1\.1$/m);
  });

  it("answers ExternalName with a CNAME (alone when the target is outside and there is no upstream)", async () => {
    expect(await digShort(port, "ext.shop.svc.cluster.local", "A")).toEqual(["db.example.org."]);
    expect(await digShort(port, "ext.shop.svc.cluster.local", "CNAME")).toEqual(["db.example.org."]);
  });

  it("follows an ExternalName to a cluster service: the CNAME, then its address", async () => {
    const out = await dig(port, ["alias.shop.svc.cluster.local", "A", "+noall", "+answer"]);
    expect(out).toMatch(/^alias\.shop\.svc\.cluster\.local\.\s+5\s+IN\s+CNAME\s+web\.shop\.svc\.cluster\.local\.$/m);
    expect(out).toMatch(/^web\.shop\.svc\.cluster\.local\.\s+5\s+IN\s+A\s+10\.96\.0\.10$/m);
    expect(await digShort(port, "alias.shop.svc.cluster.local", "CNAME")).toEqual(["web.shop.svc.cluster.local."]);
  });

  it("answers the deprecated pod records (spec §2.6)", async () => {
    expect(await digShort(port, "10-244-1-7.shop.pod.cluster.local", "A")).toEqual(["10.244.1.7"]);
  });

  it("answers PTR for cluster IPs (IPv4 and IPv6) and headless endpoint IPs", async () => {
    expect(await digShort(port, "", "", ["-x", "10.96.0.10"])).toEqual(["web.shop.svc.cluster.local."]);
    expect(await digShort(port, "", "", ["-x", "fd00:96::11"])).toEqual(["dual.shop.svc.cluster.local."]);
    expect(await digShort(port, "", "", ["-x", "10.1.1.2"])).toEqual(["db-1.db.shop.svc.cluster.local."]);
  });

  it("says NXDOMAIN with the SOA for a name under the domain that does not exist", async () => {
    for (const name of ["nope.shop.svc.cluster.local", "web.nowhere.svc.cluster.local", "db-2.db.shop.svc.cluster.local"]) {
      const out = await dig(port, [name, "A"]);
      expect(digHeader(out), name).toMatchObject({ status: "NXDOMAIN", answer: 0, authority: 1 });
      expect(out).toMatch(/IN\s+SOA\s+ns\.dns\.cluster\.local\./);
    }
  });

  it("says NODATA with the SOA for a type the name does not have", async () => {
    for (const [name, type] of [["lonely.shop.svc.cluster.local", "AAAA"], ["v6only.shop.svc.cluster.local", "A"], ["web.shop.svc.cluster.local", "MX"]]) {
      const out = await dig(port, [name, type]);
      expect(digHeader(out), `${name} ${type}`).toMatchObject({ status: "NOERROR", answer: 0, authority: 1 });
    }
  });

  it("echoes the question as asked (case kept)", async () => {
    const out = await dig(port, ["WeB.ShOp.SvC.cluster.LOCAL", "A", "+noall", "+question", "+answer"]);
    expect(out).toMatch(/^;WeB\.ShOp\.SvC\.cluster\.LOCAL\.\s+IN\s+A$/m);
    expect(out).toMatch(/IN\s+A\s+10\.96\.0\.10$/m);
  });

  it("keys its answer cache without case: a 0x20 resolver's questions hit it, and each answer carries its own question's case", async () => {
    // unbound with use-caps-for-id asks every name in a new random case and drops an answer whose question differs in case.
    // Before, the cache was keyed by the bytes as asked: each new case was a miss, a fresh encoding and one more entry.
    const cases = ["mid.shop.svc.cluster.local", "MID.shop.svc.cluster.local", "mId.sHoP.SvC.ClUsTeR.lOcAl", "mid.SHOP.svc.CLUSTER.local", "MiD.ShOp.sVc.cLuStEr.LoCaL"];
    const cache = () => dns.stats().answerCache as { hits: number; misses: number };
    await udpQuery(port, cases[0], "A", { edns: 1232 });
    const before = cache();
    for (const name of cases) {
      for (const edns of [undefined, 1232]) {
        const id = 1 + Math.floor(Math.random() * 65_000);
        const reply = await udpExchange(port, Buffer.from(dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: "A", class: "IN" }], additionals: edns ? [{ type: "OPT", name: ".", udpPayloadSize: edns } as dnsPacket.Answer] : [] })), { id });
        expect(reply.questions?.[0].name).toBe(name);
        // without EDNS the 20 addresses do not fit 512 bytes: the truncated answer echoes the case too
        expect(reply.flag_tc).toBe(edns === undefined);
        if (edns) expect(reply.answers).toHaveLength(20);
      }
    }
    expect(cache().misses - before.misses).toBeLessThanOrEqual(1); // the first plain (no EDNS) question
    expect(cache().hits - before.hits).toBeGreaterThanOrEqual(cases.length * 2 - 1);
  });

  it("honours the client's size: 512 without EDNS, its EDNS size up to 1232", async () => {
    const plain = await dig(port, ["mid.shop.svc.cluster.local", "A", "+noedns", "+ignore"]);
    expect(digHeader(plain).flags).toContain("tc");
    const edns = await dig(port, ["mid.shop.svc.cluster.local", "A", "+bufsize=1232", "+ignore"]);
    expect(digHeader(edns)).toMatchObject({ status: "NOERROR", answer: 20 });
    expect(digHeader(edns).flags).not.toContain("tc");
    expect(edns).toMatch(/EDNS: version: 0, flags:; udp: 1232/);
  });

  it("copies the DO bit of an EDNS query into its OPT record (RFC 3225 §3), in a truncated answer and an error too", async () => {
    expect(await dig(port, ["web.shop.svc.cluster.local", "A", "+dnssec"])).toMatch(/EDNS: version: 0, flags: do;/);
    expect(await dig(port, ["mid.shop.svc.cluster.local", "A", "+dnssec", "+bufsize=512", "+ignore"])).toMatch(/flags: qr aa tc[\s\S]*EDNS: version: 0, flags: do;/);
    expect(await dig(port, ["example.org", "A", "+dnssec"])).toMatch(/status: REFUSED[\s\S]*EDNS: version: 0, flags: do;/);
    expect(await dig(port, ["web.shop.svc.cluster.local", "A"])).toMatch(/EDNS: version: 0, flags:;/);
  });

  it("sets TC over UDP when the answer does not fit, and gives the full answer over TCP", async () => {
    const udp = await dig(port, ["big.shop.svc.cluster.local", "A", "+bufsize=4096", "+ignore"]);
    expect(digHeader(udp)).toMatchObject({ status: "NOERROR", answer: 0 });
    expect(digHeader(udp).flags).toContain("tc");
    const tcp = await dig(port, ["big.shop.svc.cluster.local", "A", "+tcp"]);
    expect(digHeader(tcp)).toMatchObject({ status: "NOERROR", answer: 60 });
    const retried = await digShort(port, "big.shop.svc.cluster.local", "A");
    expect(retried).toHaveLength(60);
  });

  it("sees a catalog change in the next answer, within a second", async () => {
    const changed = service("shop", "lonely", { clusterIPs: ["10.96.0.99"] });
    put(feed, changed);
    await eventually(async () => (await digShort(port, "lonely.shop.svc.cluster.local", "A"))[0] === "10.96.0.99", 1000, "new cluster IP in the answer");
    put(feed, service("shop", "fresh", { clusterIPs: ["10.96.0.100"] }));
    await eventually(async () => (await digShort(port, "fresh.shop.svc.cluster.local", "A"))[0] === "10.96.0.100", 1000, "new service answered");
    remove(feed, service("shop", "fresh"));
    await eventually(async () => digHeader(await dig(port, ["fresh.shop.svc.cluster.local", "A"])).status === "NXDOMAIN", 1000, "deleted service gone");
  });

  it("answers FORMERR for two questions, NOTIMP for another opcode, BADVERS for EDNS version 1, and drops responses", async () => {
    const two = dnsPacket.encode({ type: "query", id: 7, questions: [{ name: "a.shop.svc.cluster.local", type: "A" }, { name: "b.shop.svc.cluster.local", type: "A" }] });
    expect((await udpExchange(port, two, { id: 7 })).rcode).toBe("FORMERR");
    const notify = Buffer.from(dnsPacket.encode({ type: "query", id: 8, questions: [{ name: "web.shop.svc.cluster.local", type: "A" }] }));
    notify.writeUInt16BE(notify.readUInt16BE(2) | (4 << 11), 2);
    expect((await udpExchange(port, notify, { id: 8 })).rcode).toBe("NOTIMP");
    expect(digHeader(await dig(port, ["web.shop.svc.cluster.local", "A", "+edns=1", "+noednsnegotiation"])).status).toBe("BADVERS");
    const before = Number(dns.stats().drops && (dns.stats().drops as Record<string, number>)["not a query"]) || 0;
    const response = dnsPacket.encode({ type: "response", id: 9, questions: [{ name: "web.shop.svc.cluster.local", type: "A" }] });
    await expect(udpExchange(port, response, { id: 9, timeoutMs: 300 })).rejects.toThrow(/no DNS reply/);
    expect((dns.stats().drops as Record<string, number>)["not a query"]).toBe(before + 1);
    expect((await udpQuery(port, "web.shop.svc.cluster.local", "A")).answers?.[0].data).toBe("10.96.0.10");
  });

  it("answers pipelined TCP queries on one connection", async () => {
    const queries = ["web", "dual", "db"].map((name, index) => frame(dnsPacket.encode({ type: "query", id: 100 + index, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name: `${name}.shop.svc.cluster.local`, type: "A" }] })));
    const replies = await tcpExchange(port, Buffer.concat(queries), 3);
    expect(replies.map((reply) => reply.id).sort()).toEqual([100, 101, 102]);
    expect(replies.find((reply) => reply.id === 100)?.answers?.[0].data).toBe("10.96.0.10");
  });

  it("closes TCP clients that send a too-short length or never finish an oversized one, and keeps serving", async () => {
    const short = Buffer.from([0x00, 0x05, 1, 2, 3, 4, 5]);
    await expect(tcpExchange(port, short, 1)).rejects.toThrow(/closed after 0/);
    const oversized = Buffer.concat([Buffer.from([0xff, 0xff]), Buffer.alloc(100, 7)]);
    await expect(tcpExchange(port, oversized, 1, 5000)).rejects.toThrow(/closed after 0/);
    const drops = dns.stats().drops as Record<string, number>;
    expect(drops["tcp short message"]).toBeGreaterThanOrEqual(1);
    expect(drops["tcp idle"]).toBeGreaterThanOrEqual(1);
    expect(await digShort(port, "web.shop.svc.cluster.local", "A", ["+tcp"])).toEqual(["10.96.0.10"]);
  });

  it("refuses names outside the cluster when no upstream is configured", async () => {
    expect(digHeader(await dig(port, ["example.com", "A"])).status).toBe("REFUSED");
  });
});

describe("DNS server while the catalog changes all the time", () => {
  const objects = Array.from({ length: 3000 }, (_, index) => service(`ns-${index % 10}`, `svc-${index}`, { clusterIPs: [`10.97.${Math.floor(index / 250)}.${(index % 250) + 1}`] }));
  const feed = feedOf(objects);
  let dns: DnsActor;
  let port: number;

  beforeAll(async () => {
    dns = createDnsActor({ feed, log: silentLogger(), listen: { host: "127.0.0.1", port: 0 }, upstreams: [] });
    port = (await dns.start()).port;
  });
  afterAll(async () => {
    await dns?.stop();
  });

  it("keeps answering through 500 changes and shows the last one within a second", async () => {
    for (let change = 0; change < 500; change++) {
      put(feed, service("ns-0", "svc-0", { clusterIPs: [`10.98.${Math.floor(change / 250)}.${(change % 250) + 1}`] }));
      if (change % 25 === 0) {
        const answer = await udpQuery(port, `svc-${change + 1}.ns-${(change + 1) % 10}.svc.cluster.local`, "A");
        expect(answer.answers).toHaveLength(1);
      }
    }
    await eventually(async () => (await udpQuery(port, "svc-0.ns-0.svc.cluster.local", "A")).answers?.[0]?.data === "10.98.1.250", 1000, "the last change answered");
  });

  it("shows each change in the very next answer, where a zone of this size used to be rebuilt at most every few ms (answers lagged up to 500 ms)", async () => {
    for (let change = 0; change < 20; change++) {
      const ip = `10.99.0.${change + 1}`;
      put(feed, service("ns-3", "svc-3", { clusterIPs: [ip] }));
      expect((await udpQuery(port, "svc-3.ns-3.svc.cluster.local", "A")).answers?.[0]?.data).toBe(ip);
      // a new name, and the reverse name of the new address, answer at once too
      put(feed, service("ns-3", `new-${change}`, { clusterIPs: [`10.99.1.${change + 1}`] }));
      expect((await udpQuery(port, `new-${change}.ns-3.svc.cluster.local`, "A")).answers?.[0]?.data).toBe(`10.99.1.${change + 1}`);
      expect((await udpQuery(port, `${change + 1}.1.99.10.in-addr.arpa`, "PTR")).answers?.[0]?.data).toBe(`new-${change}.ns-3.svc.cluster.local`);
    }
    remove(feed, service("ns-3", "new-0"));
    expect((await udpQuery(port, "new-0.ns-3.svc.cluster.local", "A")).rcode).toBe("NXDOMAIN");
  });
});

describe("DNS server on IPv6 loopback", () => {
  it("answers over UDP and TCP on ::1", async () => {
    requireTools(["dig"]);
    const dns = createDnsActor({ feed: feedOf(sampleCatalog()), log: silentLogger(), listen: { host: "::1", port: 0 }, upstreams: [] });
    const { port } = await dns.start();
    try {
      expect((await dig(port, ["web.shop.svc.cluster.local", "A", "+short"], "::1")).trim()).toBe("10.96.0.10");
      expect((await dig(port, ["dual.shop.svc.cluster.local", "AAAA", "+short", "+tcp"], "::1")).trim()).toBe("fd00:96::11");
    } finally {
      await dns.stop();
    }
  });
});

describe("DNS over TCP: a client that pipelines and does not read", () => {
  it("stops being read while its answers cannot go out, holds about one buffer of them, and gets every answer once it reads", async () => {
    const { connect } = await import("node:net");
    const { getDefaultHighWaterMark } = await import("node:stream");
    const { DnsServer } = await import("./server.ts");
    const { DnsStats } = await import("./stats.ts");
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`);
    process.on("warning", onWarning);
    const feed = feedOf(sampleCatalog());
    const stats = new DnsStats();
    const server = new DnsServer({ catalog: feed.reader, clusterDomain: "cluster.local", log: silentLogger(), stats });
    const { port } = await server.start({ host: "127.0.0.1", port: 0 });
    const socket = connect({ host: "127.0.0.1", port });
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
      });
      socket.pause();
      const query = (id: number) => dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: "A", name: "web.shop.svc.cluster.local" }] });
      // How many answers the kernel takes before the server must hold some depends on its buffers
      // (the send buffer grows to tcp_wmem's maximum, 4 MiB by default: 70,000 answers). So the
      // client pipelines in batches until the server holds answers, within a bound (24 MiB of them).
      const batch = 25_000;
      let queries = 0;
      for (let round = 0; round < 16 && server.tcpBufferedBytes === 0; round++) {
        socket.write(Buffer.concat(Array.from({ length: batch }, (_, i) => frame(query((queries + i) % 65_536)))));
        queries += batch;
        const sent = queries;
        // the server either takes every query so far (the kernel took the answers) or holds answers and stops reading
        await eventually(() => server.tcpBufferedBytes > 0 || stats.tcp === sent, 25_000, "the server to answer the batch or hold answers"); // seconds on a loaded machine
      }
      expect(server.tcpBufferedBytes, `no answer held after ${queries} pipelined queries`).toBeGreaterThan(0);
      // Once the kernel's buffers both ways are full, answers queue in the process: about one socket buffer, not all of them.
      expect(server.tcpBufferedBytes).toBeLessThanOrEqual(getDefaultHighWaterMark(false) + 512);
      socket.resume();
      let answers = 0;
      await eventually(() => {
        const received = Buffer.concat(chunks);
        answers = 0;
        for (let offset = 0; offset + 2 <= received.length; offset += 2 + received.readUInt16BE(offset)) if (offset + 2 + received.readUInt16BE(offset) <= received.length) answers++;
        return answers === queries;
      }, 30_000, `all ${queries} answers`);
      // The old server added a 'drain' listener per write: Node warned of a leak.
      expect(warnings).toEqual([]);
    } finally {
      socket.destroy();
      process.off("warning", onWarning);
      await server.stop();
    }
  });
});
