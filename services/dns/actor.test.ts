/**
 * The DNS actor with its real neighbours: a real nats-server as the bus (state,
 * heartbeat and `mesh.<node>.dns.stats` events), a prom-client registry, and the
 * bus going away while the actor keeps answering from its catalog view and its
 * cache.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Bus } from "../../bus/bus.ts";
import { createLogger, silentLogger } from "../../lib/log.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { createDnsActor, resolveUpstreams, type DnsActor } from "./actor.ts";
import { digShort, requireTools, startUnbound, udpQuery, type RunningDnsServer } from "../../test/support/dns-servers.ts";
import { feedOf, put, sampleCatalog, service } from "../../test/support/dns-catalog.ts";

describe("DNS actor on the bus", () => {
  const feed = feedOf(sampleCatalog());
  const registry = new Registry();
  let nats: ChildProcess;
  let connection: NatsConnection;
  let bus: Bus;
  let upstream: RunningDnsServer;
  let dns: DnsActor;
  let port: number;
  const events: { subject: string; payload: Record<string, unknown> }[] = [];

  beforeAll(async () => {
    requireTools(["nats-server", "dig", "unbound"]);
    const natsPort = await freePort();
    nats = spawn("nats-server", ["-p", String(natsPort), "-a", "127.0.0.1"], { stdio: "ignore" });
    connection = await eventually(() => connect({ servers: `nats://127.0.0.1:${natsPort}`, reconnect: false }), 10_000, "nats-server");
    bus = new Bus({ connection, node: "edge-a", log: silentLogger() });
    bus.subscribeRaw("mesh.edge-a.dns.>", (subject, payload) => events.push({ subject, payload: payload as Record<string, unknown> }));
    upstream = await startUnbound({ port: await freePort(), records: [{ name: "a.test", type: "A", value: "192.0.2.1", ttl: 300 }] });
    dns = createDnsActor({ bus, feed, log: silentLogger(), registry, listen: { host: "127.0.0.1", port: 0 }, upstreams: [`127.0.0.1:${upstream.port}`], statsIntervalMs: 200 });
    port = (await dns.start()).port;
  });
  afterAll(async () => {
    await dns?.stop();
    await upstream?.stop();
    bus?.close();
    await connection?.close().catch(() => undefined);
    nats?.kill("SIGKILL");
  });

  it("publishes its transitions and its stats with counters and latency", async () => {
    await eventually(() => events.some((event) => event.subject === "mesh.edge-a.dns.state" && event.payload.to === "serving"), 5000, "state serving");
    for (let index = 0; index < 20; index++) await udpQuery(port, "web.shop.svc.cluster.local", "A");
    await udpQuery(port, "a.test", "A");
    const stats = await eventually(
      () => events.find((event) => event.subject === "mesh.edge-a.dns.stats" && Number(event.payload.queries) >= 21)?.payload,
      5000,
      "a stats event counting the queries",
    );
    expect(stats.udp).toBeGreaterThanOrEqual(21);
    expect((stats.answers as Record<string, number>).cluster).toBeGreaterThanOrEqual(20);
    expect((stats.answers as Record<string, number>).forwarded).toBe(1);
    const latency = stats.latencyMs as { p50: number; p99: number; samples: number };
    expect(latency.samples).toBeGreaterThanOrEqual(1); // one UDP answer in 16 is timed
    expect(latency.p99).toBeGreaterThanOrEqual(latency.p50);
    expect(typeof stats.at).toBe("string");
  });

  it("exposes the same counters as Prometheus metrics", async () => {
    const text = await registry.metrics();
    expect(text).toMatch(/leafmesh_dns_queries_total\{transport="udp"\} (\d+)/);
    expect(Number(text.match(/leafmesh_dns_queries_total\{transport="udp"\} (\d+)/)![1])).toBeGreaterThanOrEqual(21);
    expect(text).toMatch(/leafmesh_dns_answers_total\{source="cluster"\} \d+/);
    expect(text).toMatch(/leafmesh_dns_latency_seconds\{quantile="0.99"\} [\d.e-]+/);
    expect(text).toMatch(/leafmesh_dns_upstream_queries_total 1/);
  });

  it("answers a catalog change arriving as a feed change", async () => {
    put(feed, service("shop", "late", { clusterIPs: ["10.96.7.7"] }));
    await eventually(async () => (await digShort(port, "late.shop.svc.cluster.local", "A"))[0] === "10.96.7.7", 1000, "late service answered");
  });

  it("keeps answering cluster names and cached upstream names when the bus and the upstream are gone", async () => {
    nats.kill("SIGKILL");
    await upstream.kill();
    await eventually(() => connection.isClosed(), 5000, "bus connection closed");
    expect(await digShort(port, "web.shop.svc.cluster.local", "A")).toEqual(["10.96.0.10"]);
    expect(await digShort(port, "late.shop.svc.cluster.local", "A")).toEqual(["10.96.7.7"]);
    expect((await udpQuery(port, "a.test", "A")).answers?.[0].data).toBe("192.0.2.1");
    // stats keep being produced (dropped by the closed bus, counted there)
    await eventually(() => (bus.drops.get("connection closed") ?? 0) > 0, 5000, "stats publish counted as dropped");
    expect(String(dns.actor.getSnapshot().value)).toBe("serving");
  });

  it("stops cleanly and frees its port", async () => {
    await dns.stop();
    expect(String(dns.actor.getSnapshot().value)).toBe("stopped");
    await expect(udpQuery(port, "web.shop.svc.cluster.local", "A", { timeoutMs: 300 })).rejects.toThrow();
  });
});

describe("DNS actor start failure", () => {
  it("stops at once when it was never started", async () => {
    const idle = createDnsActor({ feed: feedOf([]), log: silentLogger(), listen: { host: "127.0.0.1", port: 0 }, upstreams: [] });
    await idle.stop();
    expect(idle.address).toBeUndefined();
  });

  it("goes to failed and throws DNS_FAILED when the port is taken", async () => {
    const first = createDnsActor({ feed: feedOf([]), log: silentLogger(), listen: { host: "127.0.0.1", port: 0 }, upstreams: [] });
    const { port } = await first.start();
    const second = createDnsActor({ feed: feedOf([]), log: silentLogger(), listen: { host: "127.0.0.1", port }, upstreams: [] });
    await expect(second.start()).rejects.toMatchObject({ code: "DNS_FAILED" });
    expect(String(second.actor.getSnapshot().value)).toBe("failed");
    await second.stop();
    await first.stop();
  });
});

describe("DNS upstreams that are the cluster DNS itself", () => {
  // A host whose resolv.conf names the cluster DNS (to resolve Services from the host too) made it its own upstream:
  // every name outside the cluster was asked of itself and failed after the upstream timeout, said as "upstream timed out".
  const listen = { host: "127.0.0.1", port: 25_353 };
  const resolvConf = (text: string) => {
    const path = join(mkdtempSync(join(tmpdir(), "leafmesh-resolv-")), "resolv.conf");
    writeFileSync(path, text);
    return path;
  };

  it("refuses an --upstream that is its own listen address", () => {
    expect(() => resolveUpstreams({ upstreams: ["127.0.0.1:25353"], listen })).toThrow(/upstream 127.0.0.1:25353 is this cluster DNS itself/);
    expect(() => resolveUpstreams({ upstreams: ["127.0.0.1:25353"], listen: { host: "0.0.0.0", port: 25_353 } })).toThrow(/is this cluster DNS itself/);
    // systemd-resolved's stub is another server on loopback, also beside a wildcard bind of the same port.
    expect(resolveUpstreams({ upstreams: ["127.0.0.53:25353"], listen: { host: "0.0.0.0", port: 25_353 } })).toEqual([{ host: "127.0.0.53", port: 25_353 }]);
    expect(resolveUpstreams({ upstreams: ["127.0.0.1:53"], listen })).toEqual([{ host: "127.0.0.1", port: 53 }]);
  });

  it("leaves itself out of resolv.conf's nameservers, saying so, and refuses a resolv.conf that names only itself", () => {
    const lines: string[] = [];
    const log = createLogger({ level: "info", destination: new Writable({ write: (chunk, _encoding, callback) => (lines.push(chunk.toString()), callback()) }) });
    const both = resolvConf("nameserver 169.254.96.16\nnameserver 192.0.2.53\n");
    expect(resolveUpstreams({ resolvConfPath: both, listen: { host: "169.254.96.16", port: 53 }, log })).toEqual([{ host: "192.0.2.53", port: 53 }]);
    expect(lines.join("")).toContain("names this cluster DNS itself");
    const only = resolvConf("nameserver 169.254.96.16\n");
    expect(() => resolveUpstreams({ resolvConfPath: only, listen: { host: "169.254.96.16", port: 53 } })).toThrow(/names only this cluster DNS .* pass --upstream/);
  });
});
