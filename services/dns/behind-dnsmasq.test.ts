/**
 * The agent's DNS behind dnsmasq with OpenWrt's defaults and docs/dns.md's block
 * word for word (`server=/cluster.local/…`, `rebind-domain-ok`): what a user on a
 * router or an edge box gets from dnsmasq, and how often dnsmasq asks the agent
 * (negative answers and TTLs cached as the zone says, not asked on every lookup).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UpstreamSwitch } from "../../bus/partition.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { createDnsActor, type DnsActor } from "./actor.ts";
import { dig, digHeader, digShort, requireTools, startUnbound, type RunningDnsServer } from "../../test/support/dns-servers.ts";
import { frontCatalog } from "../../test/support/dns-catalog.ts";
import { docBlock, startDnsmasqFront } from "../../test/support/front-resolvers.ts";

const block = "# /etc/dnsmasq.d/leafmesh.conf";

describe("the agent's DNS behind dnsmasq", () => {
  let dns: DnsActor;
  let front: RunningDnsServer;
  let other: RunningDnsServer;
  /** Questions the agent has been asked so far. */
  const asked = () => Number(dns.stats().queries);

  beforeAll(async () => {
    requireTools(["dig", "dnsmasq", "unbound"]);
    // TTL 1 s: dnsmasq's cache expiry is seen in a second, not the default 5.
    dns = createDnsActor({ feed: frontCatalog(), log: silentLogger(), listen: { host: "127.0.0.1", port: 0 }, upstreams: [], ttl: 1, upstream: new UpstreamSwitch("none") });
    const leafmesh = await dns.start();
    // The rest of the world for dnsmasq: a server that knows example.net (a host's search domain); a public address, as
    // stop-dns-rebind drops the private and documentation ranges.
    other = await startUnbound({ port: await freePort(), records: [{ name: "www.example.net", type: "A", value: "93.184.215.14" }] });
    front = await startDnsmasqFront({ port: await freePort(), leafmesh, block: docBlock(block), extra: [`server=127.0.0.1#${other.port}`] });
  });
  afterAll(async () => {
    await front?.stop();
    await other?.stop();
    await dns?.stop();
  });

  it("resolves cluster names through dnsmasq, rebind protection on", async () => {
    expect(await digShort(front.port, "web.shop.svc.cluster.local", "A")).toEqual(["10.96.0.10"]);
    expect(await digShort(front.port, "db.shop.svc.cluster.local", "A")).toEqual(["10.1.1.1", "10.1.1.2"]);
    expect(await digShort(front.port, "_pg._tcp.db.shop.svc.cluster.local", "SRV")).toEqual(["0 50 5432 db-0.db.shop.svc.cluster.local.", "0 50 5432 db-1.db.shop.svc.cluster.local."]);
    expect(await digShort(front.port, "dual.shop.svc.cluster.local", "AAAA")).toEqual(["fd00:96::11"]);
    expect(await digShort(front.port, "Web.SHOP.svc.Cluster.Local", "A")).toEqual(["10.96.0.10"]);
    expect(await digShort(front.port, "www.example.net", "A")).toEqual(["93.184.215.14"]);
  });

  it("caches NODATA for AAAA of an IPv4-only service and NXDOMAIN for an absent one: the agent is asked once", async () => {
    const before = asked();
    for (let round = 0; round < 3; round++) {
      const aaaa = await dig(front.port, ["lonely.shop.svc.cluster.local", "AAAA"]);
      expect(digHeader(aaaa)).toMatchObject({ status: "NOERROR", answer: 0 });
      expect(digHeader(await dig(front.port, ["gone.shop.svc.cluster.local", "A"])).status).toBe("NXDOMAIN");
    }
    // the A of the same name is still there (the NODATA was for AAAA only)
    expect(await digShort(front.port, "lonely.shop.svc.cluster.local", "A")).toEqual(["10.96.0.13"]);
    // Asked once each (TTL 1 s: a slow round may expire one and ask it again, never every time).
    expect(asked() - before).toBeLessThanOrEqual(5);
  });

  it("honours the zone's TTL: served from dnsmasq's cache, asked again once it expired", async () => {
    const first = await dig(front.port, ["peers.shop.svc.cluster.local", "A"]);
    expect(first).toMatch(/^peers\.shop\.svc\.cluster\.local\.\s+[01]\s+IN\s+A\s+10\.1\.2\.1$/m);
    const after = asked();
    await eventually(async () => (await digShort(front.port, "peers.shop.svc.cluster.local", "A")).length === 2 && asked() > after, 5000, "dnsmasq asking the agent again after 1 s");
  });

  it("says SERVFAIL for a refused fail-closed service and NODATA for its namespace", async () => {
    expect(digHeader(await dig(front.port, ["secret.vault.svc.cluster.local", "A"])).status).toBe("SERVFAIL");
    expect(digHeader(await dig(front.port, ["vault.svc.cluster.local", "A"])).status).toBe("NOERROR");
  });

  it("passes a large headless answer: truncated over UDP, complete over TCP", async () => {
    const udp = await dig(front.port, ["wide.shop.svc.cluster.local", "A", "+ignore"]);
    expect(digHeader(udp)).toMatchObject({ status: "NOERROR", answer: 0 });
    expect(digHeader(udp).flags).toContain("tc");
    const tcp = await dig(front.port, ["wide.shop.svc.cluster.local", "A", "+tcp"]);
    expect(digHeader(tcp)).toMatchObject({ status: "NOERROR", answer: 200 });
  });

  it("answers search-path expansions at once: a pod's ndots:5 into the agent, a host's search domain elsewhere", async () => {
    // pod: search shop.svc.cluster.local svc.cluster.local cluster.local
    for (const name of ["www.example.net.shop.svc.cluster.local", "www.example.net.svc.cluster.local", "www.example.net.cluster.local"]) {
      expect(digHeader(await dig(front.port, [name, "A", "+time=1"])).status, name).toBe("NXDOMAIN");
    }
    // host: search example.net, ndots:5
    expect(digHeader(await dig(front.port, ["web.shop.svc.cluster.local.example.net", "A", "+time=1"])).status).toBe("NXDOMAIN");
    expect(digHeader(await dig(front.port, ["web.shop.svc.cluster.local", "A", "+time=1"])).status).toBe("NOERROR");
  });
});
