/**
 * A forwarding loop, as docs/dns.md warns of it: the agent's upstream is the
 * node's dnsmasq, which also sends a whole reverse zone (`10.in-addr.arpa`) to
 * the agent. A reverse name that is not a cluster IP goes agent → dnsmasq →
 * agent; the agent took the question back as a duplicate of its own and waited
 * on itself until its upstream timeout, and a client asking dnsmasq waited for
 * several of them. Now the agent knows its own question (asked upstream in a
 * case of its own) and answers it SERVFAIL at once: the client gets SERVFAIL,
 * the loop is counted and logged once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { capturedLog } from "../../test/support/log-lines.ts";
import { freePort } from "../../test/support/ports.ts";
import { createDnsActor, type DnsActor } from "./actor.ts";
import { dig, digHeader, digShort, requireTools, type RunningDnsServer } from "../../test/support/dns-servers.ts";
import { frontCatalog } from "../../test/support/dns-catalog.ts";
import { docBlock, startDnsmasqFront } from "../../test/support/front-resolvers.ts";

describe("a resolver that forwards a reverse zone to the agent while being its upstream", () => {
  let dns: DnsActor;
  let front: RunningDnsServer;
  const { log, lines } = capturedLog("warn");

  beforeAll(async () => {
    requireTools(["dig", "dnsmasq"]);
    const frontPort = await freePort();
    // The upstream timeout is longer than the clients wait: a client answered at all was answered without waiting on it.
    dns = createDnsActor({ feed: frontCatalog(), log, listen: { host: "127.0.0.1", port: 0 }, upstreams: [`127.0.0.1:${frontPort}`], upstreamTimeoutMs: 8_000 });
    const leafmesh = await dns.start();
    const block = docBlock("# /etc/dnsmasq.d/leafmesh.conf").replace(/^server=\/cluster\.local\/(\S+)$/m, (line, address: string) => `${line}\nserver=/10.in-addr.arpa/${address}`);
    front = await startDnsmasqFront({ port: frontPort, leafmesh, block });
  });
  afterAll(async () => {
    await front?.stop();
    await dns?.stop();
  });

  it("answers SERVFAIL to its own question come back, and so to the client, instead of waiting on itself", async () => {
    const direct = await dig(dns.address!.port, ["-x", "10.2.3.4", "+time=3"]);
    expect(digHeader(direct).status).toBe("SERVFAIL");
    const throughFront = await dig(front.port, ["-x", "10.2.3.5", "+time=3"]);
    expect(digHeader(throughFront).status).toBe("SERVFAIL");
    const failures = (dns.stats().forwarder as { upstreamFailures: Record<string, number> }).upstreamFailures;
    expect(failures.loop).toBeGreaterThanOrEqual(2);
    expect(lines.filter((line) => String(line.reason).includes("own question back"))).toEqual([expect.objectContaining({ upstream: `127.0.0.1:${front.port}` })]);
    // cluster IPs' reverse names are the agent's own, and answered through dnsmasq as well
    expect(await digShort(front.port, "-x", "10.96.0.10")).toEqual(["web.shop.svc.cluster.local."]);
  });
});
