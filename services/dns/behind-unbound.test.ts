/**
 * The agent's DNS behind unbound, configured with docs/dns.md's blocks word for word:
 * a stub zone (unbound iterates, one label at a time, with 0x20 case and its
 * validator on), the same with strict minimisation and with stub priming, and a
 * forward zone. What a user on the node gets from unbound, not from the agent.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UpstreamSwitch } from "../../bus/partition.ts";
import { silentLogger } from "../../lib/log.ts";
import { freePort } from "../../test/support/ports.ts";
import { createDnsActor, type DnsActor } from "./actor.ts";
import { dig, digHeader, digShort, requireTools, type RunningDnsServer } from "../../test/support/dns-servers.ts";
import { frontCatalog } from "../../test/support/dns-catalog.ts";
import { docBlock, startUnboundFront } from "../../test/support/front-resolvers.ts";

const stubBlock = "# /etc/unbound/unbound.conf.d/leafmesh.conf";
const forwardBlock = "# /etc/unbound/unbound.conf.d/leafmesh-forward.conf";

describe("the agent's DNS behind unbound", () => {
  let dns: DnsActor;
  const fronts: RunningDnsServer[] = [];
  let stub: RunningDnsServer;
  let strict: RunningDnsServer;
  let forward: RunningDnsServer;
  let start: (block: string, extra?: string[]) => Promise<RunningDnsServer>;

  beforeAll(async () => {
    requireTools(["dig", "unbound"]);
    dns = createDnsActor({ feed: frontCatalog(), log: silentLogger(), listen: { host: "127.0.0.1", port: 0 }, upstreams: [], upstream: new UpstreamSwitch("none") });
    const leafmesh = await dns.start();
    start = async (block: string, extra: string[] = []) => {
      const front = await startUnboundFront({ port: await freePort(), leafmesh, block: docBlock(block), extra });
      fronts.push(front);
      return front;
    };
    [stub, strict, forward] = await Promise.all([start(stubBlock), start(stubBlock, ["qname-minimisation-strict: yes"]), start(forwardBlock)]);
  });
  afterAll(async () => {
    await Promise.all(fronts.map((front) => front.stop()));
    await dns?.stop();
  });

  it("resolves every kind of cluster name through a stub zone, forward zone and strict minimisation alike", async () => {
    for (const front of [stub, strict, forward]) {
      expect(await digShort(front.port, "web.shop.svc.cluster.local", "A")).toEqual(["10.96.0.10"]);
      expect(await digShort(front.port, "db-0.db.shop.svc.cluster.local", "A")).toEqual(["10.1.1.1"]);
      expect(await digShort(front.port, "_pg._tcp.db.shop.svc.cluster.local", "SRV")).toEqual(["0 50 5432 db-0.db.shop.svc.cluster.local.", "0 50 5432 db-1.db.shop.svc.cluster.local."]);
      expect(await digShort(front.port, "10-1-2-3.shop.pod.cluster.local", "A")).toEqual(["10.1.2.3"]);
      expect(await digShort(front.port, "alias.shop.svc.cluster.local", "A")).toEqual(["10.96.0.10", "web.shop.svc.cluster.local."]);
      expect(await digShort(front.port, "dns-version.cluster.local", "TXT")).toEqual(['"1.1.0"']);
      // 0x20 towards the agent (use-caps-for-id), and any case from the client
      expect(await digShort(front.port, "WEB.Shop.SVC.cluster.LOCAL", "A")).toEqual(["10.96.0.10"]);
    }
  });

  it("says NODATA for an absent type and NXDOMAIN for an absent name, with the SOA, through the resolver", async () => {
    for (const front of [stub, forward]) {
      const aaaa = await dig(front.port, ["web.shop.svc.cluster.local", "AAAA"]);
      expect(digHeader(aaaa)).toMatchObject({ status: "NOERROR", answer: 0, authority: 1 });
      expect(aaaa).toMatch(/^cluster\.local\.\s+\d\s+IN\s+SOA\s+ns\.dns\.cluster\.local\. hostmaster\.cluster\.local\. \d+ 7200 1800 86400 5$/m);
      const absent = await dig(front.port, ["nothere.shop.svc.cluster.local", "A"]);
      expect(digHeader(absent)).toMatchObject({ status: "NXDOMAIN", authority: 1 });
      // a pod's search path with ndots:5 asks such names first: answered, not timed out
      expect(digHeader(await dig(front.port, ["example.com.shop.svc.cluster.local", "A"])).status).toBe("NXDOMAIN");
      expect(digHeader(await dig(front.port, ["web.shop.svc.cluster.local.svc.cluster.local", "A"])).status).toBe("NXDOMAIN");
    }
  });

  it("answers the apex's NS and SOA through the resolver", async () => {
    for (const front of [stub, forward]) {
      expect(await digShort(front.port, "cluster.local", "NS")).toEqual(["ns.dns.cluster.local."]);
      expect(await digShort(front.port, "cluster.local", "SOA")).toEqual([expect.stringMatching(/^ns\.dns\.cluster\.local\. hostmaster\.cluster\.local\. \d+ 7200 1800 86400 5$/)]);
      expect(await digShort(front.port, "ns.dns.cluster.local", "A")).toEqual(["127.0.0.1"]);
    }
  });

  it("keeps a refused fail-closed service's namespace in the zone: SERVFAIL for the service, not NXDOMAIN, also with strict minimisation", async () => {
    // Without the namespace, unbound's minimised question `vault.svc.cluster.local` got NXDOMAIN and (strict) the service was NXDOMAIN.
    for (const front of [stub, strict, forward]) expect(digHeader(await dig(front.port, ["secret.vault.svc.cluster.local", "A"])).status).toBe("SERVFAIL");
    expect(digHeader(await dig(strict.port, ["vault.svc.cluster.local", "A"])).status).toBe("NOERROR");
    // and the agent is still asked, and answers, for the rest
    expect(await digShort(strict.port, "lonely.shop.svc.cluster.local", "A")).toEqual(["10.96.0.13"]);
  });

  it("answers unbound's 0x20 questions from its answer cache: each new case is a hit, not a new encoding", async () => {
    // cache-max-ttl 0: unbound keeps nothing and asks the agent on every lookup, each time in a new random case.
    const uncached = await start(stubBlock, ["cache-max-ttl: 0", "cache-max-negative-ttl: 0"]);
    expect(await digShort(uncached.port, "web.shop.svc.cluster.local", "A")).toEqual(["10.96.0.10"]);
    const cache = () => dns.stats().answerCache as { hits: number; misses: number };
    const before = { queries: Number(dns.stats().queries), ...cache() };
    for (let round = 0; round < 8; round++) expect(await digShort(uncached.port, "web.shop.svc.cluster.local", "A")).toEqual(["10.96.0.10"]);
    const asked = Number(dns.stats().queries) - before.queries;
    expect(asked).toBeGreaterThanOrEqual(8);
    expect(cache().misses - before.misses).toBe(0);
    expect(cache().hits - before.hits).toBe(asked);
  });

  it("carries a large headless answer: truncated over UDP, complete over TCP", async () => {
    const udp = await dig(stub.port, ["wide.shop.svc.cluster.local", "A", "+ignore"]);
    expect(digHeader(udp).flags).toContain("tc");
    const tcp = await dig(stub.port, ["wide.shop.svc.cluster.local", "A", "+tcp"]);
    expect(digHeader(tcp)).toMatchObject({ status: "NOERROR", answer: 200 });
  });

  it("answers a DNSSEC-aware client (DO) from the unsigned zone, unvalidated rather than bogus", async () => {
    const out = await dig(stub.port, ["web.shop.svc.cluster.local", "A", "+dnssec"]);
    expect(digHeader(out)).toMatchObject({ status: "NOERROR", answer: 1 });
    expect(digHeader(out).flags).not.toContain("ad");
  });
});

describe("the agent's DNS behind unbound that primes the stub zone", () => {
  // stub-prime asks the apex for NS and then asks those servers' addresses on port 53: the agent must name
  // itself there. Before, the apex had no NS and unbound answered SERVFAIL for every cluster name.
  let dns: DnsActor | undefined;
  let front: RunningDnsServer | undefined;

  beforeAll(async () => {
    requireTools(["dig", "unbound"]);
    // Port 53 of an address of 127/8 of its own, so that nothing else on the machine holds it.
    for (let attempt = 0; attempt < 5 && !dns; attempt++) {
      const host = `127.53.${1 + Math.floor(Math.random() * 250)}.${1 + Math.floor(Math.random() * 250)}`;
      const candidate = createDnsActor({ feed: frontCatalog(), log: silentLogger(), listen: { host, port: 53 }, upstreams: [] });
      dns = await candidate.start().then(
        () => candidate,
        async (error: unknown) => {
          await candidate.stop();
          if (attempt === 4) throw error;
          return undefined;
        },
      );
    }
    front = await startUnboundFront({ port: await freePort(), leafmesh: dns!.address!, block: docBlock(stubBlock).replace("stub-zone:\n", "stub-zone:\n  stub-prime: yes\n") });
  });
  afterAll(async () => {
    await front?.stop();
    await dns?.stop();
  });

  it("resolves through the nameserver the apex names", async () => {
    expect(await digShort(front!.port, "web.shop.svc.cluster.local", "A")).toEqual(["10.96.0.10"]);
    expect(await digShort(front!.port, "cluster.local", "NS")).toEqual(["ns.dns.cluster.local."]);
    expect(await digShort(front!.port, "ns.dns.cluster.local", "A")).toEqual([dns!.address!.host]);
  });
});
