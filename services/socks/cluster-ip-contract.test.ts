/**
 * One contract: the SOCKS proxy sends a client to a Service exactly where the same node's
 * cluster IP sends it, or refuses it where the cluster IP refuses, for each semantic of
 * docs/kubeedge.md: site locality, outlier ejection, sessionAffinity ClientIP, fail-closed while
 * the node or its site is cut off, internalTrafficPolicy Local, terminating-only endpoints, no
 * endpoints. Before, SOCKS chose endpoints itself (ready ones, this node's first, round robin):
 * across the WAN while its own site ran the Service, to an endpoint the cluster IP had ejected,
 * to a fail-closed Service while the node was cut off, nowhere while only a terminating one served.
 * Real traffic and SOCKS actors over loopback sockets, a real catalog index; no tunnel, so
 * other nodes' endpoints are dialled by IP (the cluster IP's way without one).
 */
import { createServer, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { catalogKey, type EndpointSlice } from "../../bus/catalog.ts";
import { UpstreamSwitch, withSiteMembers } from "../../bus/partition.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { socksConnect } from "../../test/support/socks-client.ts";
import { listenerAddress, testService, whoAnswers, type TestServiceOptions } from "../../test/support/traffic-catalog.ts";
import { createTrafficActor, type TrafficActor } from "../traffic/index.ts";
import { createSocksActor, type SocksActor } from "./index.ts";

// Backends, each answering its own address: edge-a is this node; edge-b is of its site (s1), edge-c of another (s2).
const hosts = { a1: "127.0.0.2", a2: "127.0.0.3", b: "127.0.0.4", c: "127.0.0.5", dead: "127.0.0.6" };

describe("a Service through SOCKS and through the node's cluster IP", () => {
  let port = 0;
  const servers: Server[] = [];
  const feed = new IndexFeed();
  const reach = new UpstreamSwitch("cloud");
  let traffic: TrafficActor;
  let socks: SocksActor;

  beforeAll(async () => {
    port = await freePort();
    for (const host of Object.values(hosts).filter((host) => host !== hosts.dead)) {
      const server = createServer((socket) => socket.on("error", () => undefined).end(`${host}\n`));
      await new Promise<void>((resolve) => server.listen(port, host, resolve));
      servers.push(server);
    }
    const topology = { site: "s1", of: (node: string) => ({ site: node === "edge-c" ? "s2" : "s1", reachable: true }) };
    const upstream = withSiteMembers(reach, (node) => node === "edge-a" || node === "edge-b");
    traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", connectTimeoutMs: 1000, topology, upstream, outlier: { consecutiveFailures: 1 } });
    await traffic.start();
    socks = createSocksActor({ feed, log: silentLogger(), node: "edge-a", listen: { host: "127.0.0.1", port: 0 }, servicePorts: traffic.servicePorts, upstream });
    await socks.start();
  });
  afterAll(async () => {
    await socks?.stop();
    await traffic?.stop();
    for (const server of servers) await new Promise((resolve) => server.close(resolve));
  });

  let next = 0;
  /** A Service of its own per case (its own listener and balancer), its endpoints on `port`. */
  function put(options: Omit<TestServiceOptions, "clusterIP" | "ports">, edit?: (slice: EndpointSlice) => void) {
    const clusterIP = `198.19.60.${++next}`;
    const { service, slice } = testService({ ...options, clusterIP, ports: [{ name: "main", protocol: "TCP", port: 80, targetPort: port }] });
    edit?.(slice);
    feed.notify([service, slice].map((object) => catalogKey(object)).filter((key, index) => feed.reader.apply({ op: "put", key, object: [service, slice][index] })));
    return { name: `${options.name}.lab.svc.cluster.local`, clusterIP, key: `lab/${options.name}:main/TCP` };
  }
  const viaClusterIp = async (key: string) => {
    const binding = await eventually(() => traffic.listeners().find((candidate) => candidate.key === key), 5_000, `the listener of ${key}`);
    const answer = await whoAnswers(listenerAddress(binding));
    return answer === "ECONNRESET" ? "refused" : answer;
  };
  const viaSocks = async (host: string) => {
    const socket = await socksConnect(socks.address!.port, host, 80).catch(() => undefined);
    if (!socket) return "refused";
    return new Promise<string>((resolve) => {
      let text = "";
      socket.on("data", (chunk: Buffer) => {
        text += chunk.toString();
        if (!text.includes("\n")) return;
        socket.destroy();
        resolve(text.split("\n")[0]);
      });
      socket.on("close", () => resolve(text || "closed"));
      socket.resume();
    });
  };
  /** `times` answers each way: the cluster IP, SOCKS by name, SOCKS by cluster IP. */
  async function answers(service: { name: string; clusterIP: string; key: string }, times = 4): Promise<{ clusterIp: string[]; byName: string[]; byIp: string[] }> {
    const result = { clusterIp: [] as string[], byName: [] as string[], byIp: [] as string[] };
    for (let i = 0; i < times; i++) {
      result.clusterIp.push(await viaClusterIp(service.key));
      result.byName.push(await viaSocks(service.name));
      result.byIp.push(await viaSocks(service.clusterIP));
    }
    return result;
  }
  const all = (answer: string, times = 4) => ({ clusterIp: Array(times).fill(answer), byName: Array(times).fill(answer), byIp: Array(times).fill(answer) });
  /** The case's catalog reached the listener (traffic reconciles after the feed's change). */
  const planned = (service: { key: string }, answer: string) => eventually(async () => (await viaClusterIp(service.key)) === answer, 5_000, `${service.key} answering ${answer}`);

  it("locality: an endpoint in the node's own site before one across the WAN", async () => {
    const service = put({ name: "near", endpoints: [{ ip: hosts.c, node: "edge-c" }, { ip: hosts.b, node: "edge-b" }] });
    await planned(service, hosts.b);
    expect(await answers(service)).toEqual(all(hosts.b));
  });

  it("ejection: an endpoint the cluster IP ejected as failing is not chosen", async () => {
    const service = put({ name: "flaky", endpoints: [{ ip: hosts.a1, node: "edge-a" }, { ip: hosts.dead, node: "edge-a" }] });
    await planned(service, hosts.a1);
    await eventually(async () => (await viaClusterIp(service.key), traffic.stats().ejected.includes(`${hosts.dead}:${port}`)), 5_000, "the dead endpoint ejected");
    const failed = () => Object.entries(traffic.stats().counters).filter(([reason]) => reason.endsWith("connect failed")).reduce((sum, [, count]) => sum + count, 0);
    const before = failed();
    expect(await answers(service)).toEqual(all(hosts.a1));
    expect(failed()).toBe(before); // not even tried
  });

  it("affinity: a client stays on the endpoint the cluster IP gave it", async () => {
    const service = put({ name: "sticky", affinityTimeoutSeconds: 600, endpoints: [{ ip: hosts.a1, node: "edge-a" }, { ip: hosts.a2, node: "edge-a" }] });
    await eventually(async () => (await viaClusterIp(service.key)) !== "refused", 5_000, "the sticky service");
    const first = await viaClusterIp(service.key);
    expect(await answers(service)).toEqual(all(first));
  });

  it("fail-closed: refused while the node is cut off, and while its site is with a backend outside it", async () => {
    const annotations = { "leafmesh.io/partition": "fail-closed" };
    const here = put({ name: "pay", annotations, endpoints: [{ ip: hosts.a1, node: "edge-a" }] });
    const away = put({ name: "pay-wan", annotations, endpoints: [{ ip: hosts.b, node: "edge-b" }, { ip: hosts.c, node: "edge-c" }] });
    const inSite = put({ name: "pay-site", annotations, endpoints: [{ ip: hosts.b, node: "edge-b" }] });
    await planned(here, hosts.a1);
    await planned(inSite, hosts.b);
    try {
      reach.set("none");
      expect(await answers(here, 2)).toEqual(all("refused", 2));
      reach.set("site");
      expect(await answers(away, 2)).toEqual(all("refused", 2));
      expect(await answers(inSite, 2)).toEqual(all(hosts.b, 2)); // the site vouches for its members
    } finally {
      reach.set("cloud");
    }
    expect(await answers(here, 1)).toEqual(all(hosts.a1, 1));
  });

  it("internalTrafficPolicy Local: this node's endpoint alone; refused when it runs none", async () => {
    const none = put({ name: "node-agent", endpoints: [{ ip: hosts.b, node: "edge-b" }] });
    const mine = put({ name: "node-cache", endpoints: [{ ip: hosts.b, node: "edge-b" }, { ip: hosts.a2, node: "edge-a" }] });
    for (const name of ["node-agent", "node-cache"]) {
      const service = feed.reader.service("lab", name)!;
      const local = { ...service, internalTrafficPolicy: "Local" as const };
      feed.notify(feed.reader.apply({ op: "put", key: catalogKey(local), object: local }) ? [catalogKey(local)] : []);
    }
    await planned(none, "refused");
    await planned(mine, hosts.a2);
    expect(await answers(none, 2)).toEqual(all("refused", 2));
    expect(await answers(mine)).toEqual(all(hosts.a2));
  });

  it("terminating only: the one still serving takes the traffic", async () => {
    const service = put({ name: "rollout", endpoints: [{ ip: hosts.a1, node: "edge-a" }] }, (slice) => {
      slice.endpoints[0].conditions = { ready: false, serving: true, terminating: true };
    });
    await planned(service, hosts.a1);
    expect(await answers(service)).toEqual(all(hosts.a1));
  });

  it("no endpoints: refused both ways, and SOCKS says why", async () => {
    const service = put({ name: "empty", endpoints: [] });
    await planned(service, "refused");
    expect(await answers(service, 2)).toEqual(all("refused", 2));
    expect(traffic.stats().counters["socks refused: no endpoints"]).toBeGreaterThanOrEqual(4);
  });
});
