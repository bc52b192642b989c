/**
 * The nameservers of resolv.conf followed while the DNS actor runs (resolv-watch.ts), as dnsmasq follows them: a DHCP
 * client or NetworkManager rewrites the file when the box moves networks, and names outside the cluster must go to
 * the servers it names now. Two real upstreams (unbound) on port 53 of two loopback addresses, as resolv.conf can name
 * no port. Before, the actor kept the nameservers of its start: every name outside the cluster failed after a move.
 */
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { tempDir } from "../../test/support/processes.ts";
import { digShort, requireTools, startUnbound, type RunningDnsServer } from "../../test/support/dns-servers.ts";
import { feedOf, sampleCatalog } from "../../test/support/dns-catalog.ts";
import { createDnsActor, type DnsActor } from "./actor.ts";

// Loopback addresses of their own: resolv.conf names no port, so the upstreams listen on 53, where no other test does.
const first = "127.53.0.1";
const second = "127.53.0.2";

describe("resolv.conf followed while the DNS actor runs", () => {
  const upstreams: RunningDnsServer[] = [];
  const lines: string[] = [];
  let path: string;
  let dns: DnsActor;
  let port: number;
  /** Written whole, as a DHCP client does (a new file renamed over the old). */
  const write = (text: string) => {
    writeFileSync(`${path}.new`, text);
    renameSync(`${path}.new`, path);
  };

  beforeAll(async () => {
    requireTools(["dig", "unbound"]);
    upstreams.push(await startUnbound({ host: first, port: 53, records: [{ name: "where.test", type: "A", value: "192.0.2.1", ttl: 1 }, { name: "one.test", type: "A", value: "192.0.2.11" }] }));
    upstreams.push(await startUnbound({ host: second, port: 53, records: [{ name: "where.test", type: "A", value: "192.0.2.2", ttl: 1 }, { name: "two.test", type: "A", value: "192.0.2.22" }] }));
    path = join(tempDir("leafmesh-resolv-"), "resolv.conf");
    write(`# written by dhclient\nsearch example.net\nnameserver ${first}\n`);
    const log = createLogger({ level: "info", destination: new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) }) });
    dns = createDnsActor({ feed: feedOf(sampleCatalog()), log, listen: { host: "127.0.0.1", port: 0 }, resolvConfPath: path, resolvConfIntervalMs: 100 });
    port = (await dns.start()).port;
  });
  afterAll(async () => {
    await dns?.stop();
    for (const upstream of upstreams) await upstream.stop();
  });

  it("forwards to the nameservers resolv.conf names now, and says when they changed", async () => {
    expect(await digShort(port, "one.test", "A")).toEqual(["192.0.2.11"]);
    write(`search example.net\nnameserver ${second}\n`);
    await eventually(() => dns.upstreams[0]?.host === second || undefined, 5_000, "the actor to take the new nameserver");
    expect(await digShort(port, "two.test", "A")).toEqual(["192.0.2.22"]);
    expect(lines.join("")).toContain(`changed: names outside the cluster now go to ${second}:53`);
    // The cluster's own names are answered as before.
    expect(await digShort(port, "web.shop.svc.cluster.local", "A")).toEqual(["10.96.0.10"]);
  });

  it("keeps the nameservers it has when resolv.conf names none, saying so, and takes those it names next", async () => {
    write("# emptied while the DHCP client renews\n");
    await eventually(() => lines.join("").includes("names no nameserver") || undefined, 5_000, "the empty file to be said");
    expect(dns.upstreams.map((upstream) => upstream.host)).toEqual([second]);
    write("nameserver 127.0.0.1\n");
    await new Promise((wake) => setTimeout(wake, 500));
    // 127.0.0.1:53 is not this actor (it listens on another port): a server it may forward to.
    expect(dns.upstreams.map((upstream) => upstream.host)).toEqual(["127.0.0.1"]);
    write(`nameserver ${first}\n`);
    await eventually(() => dns.upstreams[0]?.host === first || undefined, 5_000, "the first nameserver again");
    expect(await digShort(port, "one.test", "A")).toEqual(["192.0.2.11"]);
  });
});
