/**
 * Forwarding with a real upstream (unbound on a loopback port): TTL-honouring
 * cache stepped with a manual clock, negative caching for the SOA minimum, TCP
 * when the upstream truncates, failover past a dead and a silent upstream, and
 * serve-stale once the upstream is killed.
 */
import { createSocket, type Socket } from "node:dgram";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { freePort } from "../../test/support/ports.ts";
import { createDnsActor, type DnsActor } from "./actor.ts";
import { parseUpstream, upstreamsFromResolvConf } from "./forwarder.ts";
import { dig, digHeader, digShort, requireTools, startUnbound, udpQuery, type RunningDnsServer, type TestRecord } from "../../test/support/dns-servers.ts";
import { feedOf, sampleCatalog, service } from "../../test/support/dns-catalog.ts";

const records: TestRecord[] = [
  { name: "a.test", type: "A", value: "192.0.2.1", ttl: 60 },
  { name: "short.test", type: "A", value: "192.0.2.2", ttl: 2 },
  ...Array.from({ length: 90 }, (_, index) => ({ name: "many.test", type: "A" as const, value: `192.0.2.${index + 10}`, ttl: 60 })),
];

type Counters = { upstreamQueries: number; cacheHits: number; staleServed: number; upstreamFailures: Record<string, number> };
const counters = (dns: DnsActor) => dns.stats().forwarder as Counters;

describe("forwarding to a real upstream", () => {
  const clock = new ManualClock(Date.parse("2026-01-01T00:00:00Z"));
  let upstream: RunningDnsServer;
  let dns: DnsActor;
  let port: number;

  beforeAll(async () => {
    requireTools(["dig", "unbound"]);
    upstream = await startUnbound({ port: await freePort(), records });
    const catalog = [...sampleCatalog(), service("shop", "outside", { type: "ExternalName", externalName: "a.test", ports: [] })];
    dns = createDnsActor({ feed: feedOf(catalog), log: silentLogger(), clock, listen: { host: "127.0.0.1", port: 0 }, upstreams: [`127.0.0.1:${upstream.port}`] });
    port = (await dns.start()).port;
  });
  afterAll(async () => {
    await dns?.stop();
    await upstream?.stop();
  });

  it("forwards names outside the cluster and keeps answering cluster names itself", async () => {
    expect(await digShort(port, "a.test", "A")).toEqual(["192.0.2.1"]);
    expect(await digShort(port, "web.shop.svc.cluster.local", "A")).toEqual(["10.96.0.10"]);
    const out = await dig(port, ["A.TeSt", "A"]);
    expect(out).toMatch(/^;A\.TeSt\.\s+IN\s+A$/m);
  });

  it("follows an ExternalName to an outside name through the upstream: the CNAME, then the address", async () => {
    const out = await dig(port, ["outside.shop.svc.cluster.local", "A", "+noall", "+answer"]);
    expect(out).toMatch(/^outside\.shop\.svc\.cluster\.local\.\s+5\s+IN\s+CNAME\s+a\.test\.$/m);
    expect(out).toMatch(/^a\.test\.\s+\d+\s+IN\s+A\s+192\.0\.2\.1$/m);
  });

  it("serves from the cache with the TTL counted down, and asks again after it expires", async () => {
    const first = await udpQuery(port, "a.test", "A");
    const asked = counters(dns).upstreamQueries;
    expect(first.answers?.[0].ttl).toBeLessThanOrEqual(60);
    clock.advance(25_000);
    const cached = await udpQuery(port, "a.test", "A");
    expect(counters(dns).upstreamQueries).toBe(asked);
    expect(cached.answers?.[0]).toMatchObject({ data: "192.0.2.1", ttl: 60 - 25 });
    clock.advance(40_000);
    const fresh = await udpQuery(port, "a.test", "A");
    expect(counters(dns).upstreamQueries).toBe(asked + 1);
    expect(fresh.answers?.[0].data).toBe("192.0.2.1");
  });

  it("caches NXDOMAIN for the SOA minimum, with the SOA", async () => {
    const first = await udpQuery(port, "missing.test", "A");
    expect(first.rcode).toBe("NXDOMAIN");
    const asked = counters(dns).upstreamQueries;
    clock.advance(30_000);
    const cached = await udpQuery(port, "missing.test", "A");
    expect(cached.rcode).toBe("NXDOMAIN");
    expect(cached.authorities?.[0].type).toBe("SOA");
    expect(cached.authorities?.[0].ttl).toBeLessThanOrEqual(30);
    expect(counters(dns).upstreamQueries).toBe(asked);
    clock.advance(31_000);
    await udpQuery(port, "missing.test", "A");
    expect(counters(dns).upstreamQueries).toBe(asked + 1);
  });

  it("goes to TCP when the upstream truncates, and gives UDP clients TC and TCP clients everything", async () => {
    const tcp = await dig(port, ["many.test", "A", "+tcp"]);
    expect(digHeader(tcp)).toMatchObject({ status: "NOERROR", answer: 90 });
    const udp = await dig(port, ["many.test", "A", "+ignore", "+bufsize=1232"]);
    expect(digHeader(udp).flags).toContain("tc");
    expect(await digShort(port, "many.test", "A")).toHaveLength(90);
  });

  it("keeps the OPT record only for EDNS clients", async () => {
    const plain = await udpQuery(port, "a.test", "A");
    expect(plain.additionals?.some((record) => record.type === "OPT")).toBe(false);
    const edns = await udpQuery(port, "a.test", "A", { edns: 1232 });
    expect(edns.additionals?.filter((record) => record.type === "OPT")).toHaveLength(1);
    // the DO bit of the client's query, not of our query to unbound (which had none): RFC 3225 §3
    expect(await dig(port, ["a.test", "A", "+dnssec"])).toMatch(/EDNS: version: 0, flags: do; udp: 1232/);
  });

  it("serves stale answers when the upstream is down, and SERVFAIL for what it never saw", async () => {
    await udpQuery(port, "short.test", "A");
    await udpQuery(port, "gone.test", "A");
    await upstream.kill();
    clock.advance(120_000); // every cached answer has expired
    const stale = await udpQuery(port, "short.test", "A");
    expect(stale.rcode).toBe("NOERROR");
    expect(stale.answers?.[0]).toMatchObject({ data: "192.0.2.2", ttl: 30 });
    expect((await udpQuery(port, "gone.test", "A")).rcode).toBe("NXDOMAIN");
    expect(counters(dns).staleServed).toBeGreaterThanOrEqual(2);
    expect((await udpQuery(port, "never-seen.test", "A")).rcode).toBe("SERVFAIL");
    expect(counters(dns).upstreamFailures.refused).toBeGreaterThan(0);
    // cluster answers do not need any upstream
    expect(await digShort(port, "db.shop.svc.cluster.local", "A")).toEqual(["10.1.1.1", "10.1.1.2"]);
  });
});

describe("failover between upstreams", () => {
  // The upstreams' timeouts run on this clock: the silent one times out when the test says so, and the
  // answering one has all the time a loaded machine needs (at 300 ms of real time it could time out too).
  const clock = new ManualClock(Date.parse("2026-01-01T00:00:00Z"));
  let upstream: RunningDnsServer;
  let dead: Socket;
  let silent: Socket;
  let dns: DnsActor;
  let port: number;

  beforeAll(async () => {
    requireTools(["unbound"]);
    upstream = await startUnbound({ port: await freePort(), records });
    // Dead, and kept so: bound (no other process can take the port and answer, as one did when this was a port
    // from freePort() left free) and connected to itself, so the kernel hands it no one else's datagram and
    // answers them with ICMP port unreachable, as it does for a port nobody holds.
    dead = createSocket("udp4");
    await new Promise<void>((resolve) => dead.bind(0, "127.0.0.1", () => resolve()));
    await new Promise<void>((resolve) => dead.connect(dead.address().port, "127.0.0.1", () => resolve()));
    silent = createSocket("udp4");
    await new Promise<void>((resolve) => silent.bind(0, "127.0.0.1", () => resolve()));
    dns = createDnsActor({
      feed: feedOf([]),
      log: silentLogger(),
      clock,
      listen: { host: "127.0.0.1", port: 0 },
      upstreams: [`127.0.0.1:${dead.address().port}`, `127.0.0.1:${silent.address().port}`, `127.0.0.1:${upstream.port}`],
      upstreamTimeoutMs: 300,
    });
    port = (await dns.start()).port;
  });
  afterAll(async () => {
    await dns?.stop();
    dead?.close();
    silent?.close();
    await upstream?.stop();
  });

  it("skips a dead upstream and times out a silent one, then answers from the next", async () => {
    const silentHeard = new Promise<void>((resolve) => silent.once("message", () => resolve())); // hears, never answers
    const answering = udpQuery(port, "a.test", "A", { timeoutMs: 5000 });
    await silentHeard; // asked in order: the dead one has refused by now
    clock.advance(300);
    const answer = await answering;
    expect(answer.answers?.[0].data).toBe("192.0.2.1");
    const failures = counters(dns).upstreamFailures;
    expect(failures.refused).toBe(1);
    expect(failures.timeout).toBe(1);
  });
});

describe("upstream configuration", () => {
  it("parses upstream addresses and resolv.conf", () => {
    expect(parseUpstream("10.0.0.2")).toEqual({ host: "10.0.0.2", port: 53 });
    expect(parseUpstream("127.0.0.1:5353")).toEqual({ host: "127.0.0.1", port: 5353 });
    expect(parseUpstream("[fd00::53]:5353")).toEqual({ host: "fd00::53", port: 5353 });
    expect(parseUpstream("fd00::53")).toEqual({ host: "fd00::53", port: 53 });
    expect(() => parseUpstream("host:99999")).toThrow(/not an upstream/);
    expect(upstreamsFromResolvConf("# x\nsearch a.b\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\noptions ndots:5\n")).toEqual([
      { host: "10.0.0.2", port: 53 },
      { host: "fe80::1", port: 53 },
    ]);
  });

  it("rejects a bad configuration naming the field", () => {
    expect(() => createDnsActor({ feed: feedOf([]), log: silentLogger(), upstreams: ["x:0"] })).toThrow(/upstreams\[0\]/);
    expect(() => createDnsActor({ feed: feedOf([]), log: silentLogger(), upstreams: [], clusterDomain: "bad domain" })).toThrow(/dns\.clusterDomain/);
  });
});
