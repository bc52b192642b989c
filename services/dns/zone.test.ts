/**
 * The pure answer logic against the Kubernetes DNS spec: named cases for each
 * record kind and edge case, then thousands of generated catalogs where every
 * expectation is derived from the Service and EndpointSlice objects themselves
 * (never from the zone under test).
 */
import { isIPv4 } from "node:net";
import dnsPacket from "dns-packet";
import { describe, expect, it } from "vitest";
import type { CatalogObject, EndpointSlice, Service } from "../../bus/catalog.ts";
import { encodeReply } from "./answers.ts";
import type { LoosePacket, LooseRecord } from "../../test/support/dns-servers.ts";
import { feedOf, generateCatalog, sampleCatalog, service } from "../../test/support/dns-catalog.ts";
import { isProblem, parseQuery } from "./wire.ts";
import { answerFromZone, answerQuestion, buildClusterZone, expandIPv6, reverseName, ZoneIndex, type ClusterReply } from "./zone.ts";

const options = { clusterDomain: "cluster.local" };
const data = (reply: ClusterReply | undefined, type?: string) =>
  ((reply?.answers ?? []) as LooseRecord[])
    .filter((answer) => !type || answer.type === type)
    .map((answer) => (typeof answer.data === "object" && answer.data && "target" in answer.data ? `${answer.data.priority} ${answer.data.weight} ${answer.data.port} ${answer.data.target}` : String(answer.data)))
    .sort();

describe("cluster zone: named cases", () => {
  const catalog = feedOf(sampleCatalog()).reader;
  const ask = (name: string, type: string, klass?: string) => answerQuestion(catalog, { name, type, class: klass }, options);

  it("answers A with the cluster IP and no endpoints needed", () => {
    expect(data(ask("web.shop.svc.cluster.local", "A"))).toEqual(["10.96.0.10"]);
    expect(data(ask("lonely.shop.svc.cluster.local", "A"))).toEqual(["10.96.0.13"]);
  });

  it("answers dual-stack: A with the IPv4 cluster IP, AAAA with the IPv6 one", () => {
    expect(data(ask("dual.shop.svc.cluster.local", "A"))).toEqual(["10.96.0.11"]);
    expect(data(ask("dual.shop.svc.cluster.local", "AAAA"))).toEqual(["fd00:96::11"]);
    expect(data(ask("dual.shop.svc.cluster.local", "ANY"))).toEqual(["10.96.0.11", "fd00:96::11"]);
  });

  it("says NODATA with the SOA for a type the name does not have", () => {
    for (const [name, type] of [["lonely.shop.svc.cluster.local", "AAAA"], ["v6only.shop.svc.cluster.local", "A"], ["web.shop.svc.cluster.local", "MX"], ["web.shop.svc.cluster.local", "TXT"]]) {
      const reply = ask(name, type);
      expect(reply?.rcode, `${name} ${type}`).toBe("NOERROR");
      expect(reply?.answers).toEqual([]);
      expect(reply?.authorities.map((record) => record.type)).toEqual(["SOA"]);
      expect(reply?.authorities[0].name).toBe("cluster.local");
    }
  });

  it("says NXDOMAIN with the SOA for names under the domain that do not exist", () => {
    for (const name of ["nope.shop.svc.cluster.local", "web.nope.svc.cluster.local", "x.web.shop.svc.cluster.local", "_http._udp.web.shop.svc.cluster.local", "nosuch.cluster.local", "web.shop.cluster.local"]) {
      const reply = ask(name, "A");
      expect(reply?.rcode, name).toBe("NXDOMAIN");
      expect(reply?.authorities.map((record) => record.type)).toEqual(["SOA"]);
      const soa = reply!.authorities[0] as LooseRecord;
      expect(soa.data.minimum).toBe(5);
    }
  });

  it("treats empty non-terminals as existing names (NODATA, RFC 8020)", () => {
    for (const name of ["svc.cluster.local", "shop.svc.cluster.local", "_tcp.web.shop.svc.cluster.local", "cluster.local"]) {
      const reply = ask(name, "A");
      expect(reply?.rcode, name).toBe("NOERROR");
      expect(reply?.answers).toEqual([]);
    }
    expect(ask("cluster.local", "SOA")?.answers.map((record) => record.type)).toEqual(["SOA"]);
  });

  it("has NS at the apex, naming ns.dns.<domain> with its addresses as glue once the server is bound (RFC 1034 §4.2.1)", () => {
    expect(data(ask("cluster.local", "NS"))).toEqual(["ns.dns.cluster.local"]);
    expect(ask("ns.dns.cluster.local", "A")?.rcode).toBe("NOERROR");
    expect(ask("dns.cluster.local", "A")?.rcode).toBe("NOERROR");
    const index = new ZoneIndex(options);
    index.setNameserverAddresses(["169.254.96.16"]);
    index.rebuild(catalog);
    const reply = answerFromZone(index.zone, "cluster.local", "NS", "IN");
    expect((reply?.additionals as LooseRecord[]).map((record) => `${record.name} ${record.type} ${String(record.data)}`)).toEqual(["ns.dns.cluster.local A 169.254.96.16"]);
    expect(data(answerFromZone(index.zone, "ns.dns.cluster.local", "A", "IN"))).toEqual(["169.254.96.16"]);
  });

  it("keeps a withheld service's namespace as an empty non-terminal: NODATA above the SERVFAIL, never NXDOMAIN (RFC 8020)", () => {
    const withheld = { ...options, withheld: (candidate: Service) => candidate.namespace === "vault" };
    const zone = buildClusterZone(feedOf([service("vault", "secret", { clusterIPs: ["10.96.9.9"] })]).reader, withheld);
    expect(answerFromZone(zone, "secret.vault.svc.cluster.local", "A", "IN")?.rcode).toBe("SERVFAIL");
    expect(answerFromZone(zone, "vault.svc.cluster.local", "A", "IN")?.rcode).toBe("NOERROR");
    expect(answerFromZone(zone, "other.svc.cluster.local", "A", "IN")?.rcode).toBe("NXDOMAIN");
  });

  it("answers headless services with the ready endpoints only", () => {
    expect(data(ask("db.shop.svc.cluster.local", "A"))).toEqual(["10.1.1.1", "10.1.1.2"]);
    expect(data(ask("db-0.db.shop.svc.cluster.local", "A"))).toEqual(["10.1.1.1"]);
    expect(ask("db-2.db.shop.svc.cluster.local", "A")?.rcode).toBe("NXDOMAIN");
    expect(data(ask("db6.shop.svc.cluster.local", "AAAA"))).toEqual(["fd00:1::1"]);
  });

  it("adds not-ready endpoints when the service publishes them", () => {
    expect(data(ask("peers.shop.svc.cluster.local", "A"))).toEqual(["10.1.2.1", "10.1.2.2"]);
    expect(data(ask("_gossip._udp.peers.shop.svc.cluster.local", "SRV"))).toEqual([
      "0 50 7946 peer-0.peers.shop.svc.cluster.local",
      "0 50 7946 peer-1.peers.shop.svc.cluster.local",
    ]);
  });

  it("says NXDOMAIN for a headless service without ready endpoints (spec §2.4.1)", () => {
    for (const type of ["A", "AAAA", "SRV"]) {
      const reply = ask("empty.shop.svc.cluster.local", type);
      expect(reply?.rcode).toBe("NXDOMAIN");
      expect(reply?.authorities.map((record) => record.type)).toEqual(["SOA"]);
    }
    expect(ask("_http._tcp.empty.shop.svc.cluster.local", "SRV")?.rcode).toBe("NXDOMAIN");
  });

  it("publishes not-ready endpoints of a service with the tolerate-unready-endpoints annotation", () => {
    expect(data(ask("legacy.shop.svc.cluster.local", "A"))).toEqual(["10.1.3.1"]);
  });

  it("answers the deprecated pod records of spec §2.6 for any namespace", () => {
    expect(data(ask("10-244-1-7.shop.pod.cluster.local", "A"))).toEqual(["10.244.1.7"]);
    expect(data(ask("10-244-1-7.anywhere.pod.cluster.local", "A"))).toEqual(["10.244.1.7"]);
    expect(data(ask("fd00--7.shop.pod.cluster.local", "AAAA"))).toEqual(["fd00::7"]);
    expect(ask("10-244-1-7.shop.pod.cluster.local", "AAAA")?.rcode).toBe("NOERROR");
    expect(ask("10-244-1-7.shop.pod.cluster.local", "AAAA")?.answers).toEqual([]);
    expect(ask("10-244-1-999.shop.pod.cluster.local", "A")?.rcode).toBe("NXDOMAIN");
    expect(ask("x.10-244-1-7.shop.pod.cluster.local", "A")?.rcode).toBe("NXDOMAIN");
    expect(ask("shop.pod.cluster.local", "A")?.rcode).toBe("NOERROR");
  });

  it("answers SRV for named ports: the service for ClusterIP, each endpoint for headless, with addresses in additional", () => {
    expect(data(ask("_http._tcp.web.shop.svc.cluster.local", "SRV"))).toEqual(["0 100 80 web.shop.svc.cluster.local"]);
    expect(data(ask("_metrics._tcp.web.shop.svc.cluster.local", "SRV"))).toEqual(["0 100 9090 web.shop.svc.cluster.local"]);
    const headless = ask("_pg._tcp.db.shop.svc.cluster.local", "SRV");
    expect(data(headless)).toEqual(["0 50 5432 db-0.db.shop.svc.cluster.local", "0 50 5432 db-1.db.shop.svc.cluster.local"]);
    expect((headless?.additionals as LooseRecord[]).map((record) => `${record.name} ${String(record.data)}`).sort()).toEqual(["db-0.db.shop.svc.cluster.local 10.1.1.1", "db-1.db.shop.svc.cluster.local 10.1.1.2"]);
    expect(ask("_http._tcp.web.shop.svc.cluster.local", "A")?.answers).toEqual([]);
  });

  it("names endpoints without a hostname by their dashed address", () => {
    expect(data(ask("10-1-0-5.web.shop.svc.cluster.local", "A"))).toEqual([]);
    expect(data(ask("fd00-1--1.db6.shop.svc.cluster.local", "AAAA"))).toEqual(["fd00:1::1"]);
  });

  it("answers ExternalName with a CNAME whatever the type", () => {
    for (const type of ["A", "AAAA", "CNAME", "SRV", "ANY"]) {
      const reply = ask("ext.shop.svc.cluster.local", type);
      expect((reply?.answers as LooseRecord[]).map((record) => `${record.type} ${String(record.data)}`)).toEqual(["CNAME db.example.org"]);
    }
  });

  it("answers PTR for cluster IPs and headless endpoint IPs, IPv4 and IPv6, and forwards other reverse names", () => {
    expect(data(ask("10.0.96.10.in-addr.arpa", "PTR"))).toEqual(["web.shop.svc.cluster.local"]);
    expect(data(ask(reverseName("fd00:96::11")!, "PTR"))).toEqual(["dual.shop.svc.cluster.local"]);
    expect(data(ask("1.1.1.10.in-addr.arpa", "PTR"))).toEqual(["db-0.db.shop.svc.cluster.local"]);
    expect(ask("3.1.1.10.in-addr.arpa", "PTR")).toBeUndefined(); // not ready
    expect(ask("1.2.0.192.in-addr.arpa", "PTR")).toBeUndefined();
  });

  it("leaves names outside the domain to the forwarder", () => {
    for (const name of ["example.com", "local", "xcluster.local", "web.shop.svc.cluster.local.example.com", ""]) expect(ask(name, "A")).toBeUndefined();
  });

  it("is case-insensitive and takes a trailing dot", () => {
    expect(data(ask("WEB.Shop.SVC.Cluster.Local.", "A"))).toEqual(["10.96.0.10"]);
  });

  it("serves the spec version and refuses other classes", () => {
    expect(data(ask("dns-version.cluster.local", "TXT"))).toEqual(["1.1.0"]);
    expect(ask("web.shop.svc.cluster.local", "A", "CH")?.rcode).toBe("REFUSED");
  });

  it("follows a custom cluster domain and TTL", () => {
    const reply = answerQuestion(catalog, { name: "web.shop.svc.edge.example", type: "A" }, { clusterDomain: "edge.example.", ttl: 30 });
    expect(reply?.answers[0]).toMatchObject({ data: "10.96.0.10", ttl: 30 });
    expect(answerQuestion(catalog, { name: "web.shop.svc.cluster.local", type: "A" }, { clusterDomain: "edge.example" })).toBeUndefined();
  });

  it("sees a catalog change in the next answer", () => {
    const feed = feedOf([service("a", "s", { clusterIPs: ["10.96.1.1"] })]);
    expect(data(answerQuestion(feed.reader, { name: "s.a.svc.cluster.local", type: "A" }))).toEqual(["10.96.1.1"]);
    feed.reader.apply({ op: "put", key: "svc.a.s", object: service("a", "s", { clusterIPs: ["10.96.1.2"] }) });
    expect(data(answerQuestion(feed.reader, { name: "s.a.svc.cluster.local", type: "A" }))).toEqual(["10.96.1.2"]);
    feed.reader.apply({ op: "delete", key: "svc.a.s" });
    expect(answerQuestion(feed.reader, { name: "s.a.svc.cluster.local", type: "A" })?.rcode).toBe("NXDOMAIN");
  });

  it("writes reverse names per RFC 3596", () => {
    expect(reverseName("192.0.2.1")).toBe("1.2.0.192.in-addr.arpa");
    expect(expandIPv6("2001:db8::1")).toBe("2001:0db8:0000:0000:0000:0000:0000:0001");
    expect(reverseName("2001:db8::1")).toBe("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
    expect(expandIPv6("::ffff:1.2.3.4")).toBe("0000:0000:0000:0000:0000:ffff:0102:0304");
    expect(reverseName("not-an-ip")).toBeUndefined();
  });
});

describe("cluster zone: generated catalogs", () => {
  const seeds = Array.from({ length: 150 }, (_, index) => index + 1);
  let cases = 0;

  it.each(seeds)("catalog %i: every service's records follow the spec", (seed) => {
    const { objects, services, slicesOf, random } = generateCatalog(seed);
    const catalog = feedOf(objects).reader;
    const domain = pickDomain(seed);
    const ask = (name: string, type: string) => {
      cases++;
      return answerQuestion(catalog, { name: random() < 0.5 ? name.toUpperCase() : name, type }, { clusterDomain: domain });
    };
    for (const svc of services) {
      const base = `${svc.name}.${svc.namespace}.svc.${domain}`;
      if (svc.type === "ExternalName") {
        expect(data(ask(base, "A"))).toEqual([svc.externalName]);
        continue;
      }
      const published = (slicesOf.get(`${svc.namespace}/${svc.name}`) ?? []).flatMap((item) =>
        item.endpoints.filter((endpoint) => endpoint.conditions.ready || svc.publishNotReadyAddresses).map((endpoint) => ({ endpoint, item })),
      );
      const v4 = svc.headless ? published.map(({ endpoint }) => endpoint.addresses[0]).filter((ip) => isIPv4(ip)) : svc.clusterIPs.filter((ip) => isIPv4(ip));
      const v6 = svc.headless ? published.map(({ endpoint }) => endpoint.addresses[0]).filter((ip) => !isIPv4(ip)) : svc.clusterIPs.filter((ip) => !isIPv4(ip));
      const a = ask(base, "A");
      const aaaa = ask(base, "AAAA");
      if (svc.headless && published.length === 0) {
        // spec §2.4.1: no ready endpoints, no name
        expect(a?.rcode).toBe("NXDOMAIN");
        expect(aaaa?.rcode).toBe("NXDOMAIN");
        for (const port of svc.ports) expect(ask(`_${port.name}._${port.protocol.toLowerCase()}.${base}`, "SRV")?.rcode).toBe("NXDOMAIN");
        expect(ask(base, "MX")?.rcode).toBe("NXDOMAIN");
        continue;
      }
      expect(a?.rcode).toBe("NOERROR");
      expect(data(a)).toEqual([...new Set(v4)].sort());
      expect(data(aaaa)).toEqual([...new Set(v6)].sort());
      if (v4.length === 0) expect(a?.authorities.map((record) => record.type)).toEqual(["SOA"]);
      for (const answer of [...(a?.answers ?? []), ...(aaaa?.answers ?? [])] as LooseRecord[]) expect(answer.ttl).toBe(5);
      // SRV per named port
      for (const port of svc.ports) {
        const srvName = `_${port.name}._${port.protocol.toLowerCase()}.${base}`;
        const reply = ask(srvName, "SRV");
        if (port.name === "") {
          expect(reply?.rcode).toBe("NXDOMAIN");
          continue;
        }
        const targets = data(reply).map((line) => line.split(" ").slice(2).join(" "));
        if (!svc.headless) expect(targets).toEqual([`${port.port} ${base}`]);
        else {
          const expected = published.map(({ endpoint }) => `${port.targetPort} ${(endpoint.hostname ?? endpoint.addresses[0].replaceAll(".", "-").replaceAll(":", "-"))}.${base}`);
          expect(targets).toEqual([...new Set(expected)].sort());
        }
      }
      // PTR for every cluster IP and published endpoint
      const reverseTargets = svc.headless
        ? published.map(({ endpoint }) => [endpoint.addresses[0], `${endpoint.hostname ?? endpoint.addresses[0].replaceAll(".", "-").replaceAll(":", "-")}.${base}`])
        : svc.clusterIPs.map((ip) => [ip, base]);
      for (const [ip, target] of reverseTargets) expect(data(ask(reverseName(ip)!, "PTR"))).toContain(target);
      // headless endpoint names resolve to their address
      for (const { endpoint } of svc.headless ? published : []) {
        const label = endpoint.hostname ?? endpoint.addresses[0].replaceAll(".", "-").replaceAll(":", "-");
        expect(data(ask(`${label}.${base}`, isIPv4(endpoint.addresses[0]) ? "A" : "AAAA"))).toContain(endpoint.addresses[0]);
      }
      // names that do not exist, types that do not exist
      expect(ask(`missing-${svc.name}.${svc.namespace}.svc.${domain}`, "A")?.rcode).toBe("NXDOMAIN");
      expect(ask(`nothere.${base}`, "A")?.rcode).toBe("NXDOMAIN");
      const mx = ask(base, "MX");
      expect(mx?.rcode).toBe("NOERROR");
      expect(mx?.answers).toEqual([]);
      // outside the domain
      expect(ask(`${svc.name}.${svc.namespace}.svc.other.test`, "A")).toBeUndefined();
    }
  });

  it("covered thousands of questions", () => {
    expect(cases).toBeGreaterThan(5_000);
  });
});

function pickDomain(seed: number): string {
  return ["cluster.local", "edge.example", "k8s.internal"][seed % 3];
}

describe("encoded replies", () => {
  const catalog = feedOf(sampleCatalog()).reader;
  const names = ["web", "dual", "v6only", "lonely", "db", "db6", "peers", "empty", "big", "ext", "nope"].map((name) => `${name}.shop.svc.cluster.local`);
  const types = ["A", "AAAA", "SRV", "CNAME", "TXT", "MX", "ANY"] as const;

  it.each(names.flatMap((name) => types.map((type) => [name, type] as const)))("%s %s decodes to the same records with the question echoed", (name, type) => {
    for (const edns of [false, true]) {
      const query = dnsPacket.encode({ type: "query", id: 4242, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name: name.toUpperCase(), type: type as "A", class: "IN" }], additionals: edns ? [{ type: "OPT", name: ".", udpPayloadSize: 4096 } as dnsPacket.Answer] : [] });
      const parsed = parseQuery(query);
      if (isProblem(parsed)) throw new Error(parsed.reason);
      const reply = answerQuestion(catalog, { name, type }, options)!;
      const decoded = dnsPacket.decode(encodeReply(query, parsed, reply)) as LoosePacket;
      expect(decoded.questions).toEqual([{ name: name.toUpperCase(), type, class: "IN" }]);
      expect(decoded.flag_aa).toBe(true);
      expect(decoded.rcode).toBe(reply.rcode);
      expect(decoded.answers?.map((record) => record.type)).toEqual(reply.answers.map((record) => record.type));
      expect(decoded.additionals?.filter((record) => record.type === "OPT").length).toBe(edns ? 1 : 0);
    }
  });
});
