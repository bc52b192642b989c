/**
 * The traffic actor re-plans only the Services a catalog change touches: a change
 * to one of 2,000 Services reads one Service from the catalog, not 2,000, while
 * slices that move between Services, slices that are deleted and DestinationRules
 * still land where they belong. Real loopback listeners and endpoint servers.
 */
import { createServer, type Server } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { CatalogIndex } from "../../bus/catalog-index.ts";
import { catalogKey, type DestinationRule, type EndpointSlice } from "../../bus/catalog.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { createTrafficActor, type TrafficActor } from "./actor.ts";
import { listenerAddress, putService, testService, whoAnswers } from "../../test/support/traffic-catalog.ts";

/** An index that counts whose slices were read (planning a Service reads its slices). */
class CountingIndex extends CatalogIndex {
  sliceReads = new Set<string>();
  override slices(namespace: string, serviceName: string) {
    this.sliceReads.add(`${namespace}/${serviceName}`);
    return super.slices(namespace, serviceName);
  }
}

const hosts = ["127.0.0.2", "127.0.0.3"];
let port = 0;
const servers: Server[] = [];


function put(feed: IndexFeed, objects: (EndpointSlice | DestinationRule)[]): void {
  feed.notify(objects.map((object) => catalogKey(object)).filter((key, i) => feed.reader.apply({ op: "put", key, object: objects[i] })));
}

describe("traffic actor: incremental reconcile", () => {
  let traffic: TrafficActor | undefined;
  beforeAll(async () => {
    port = await freePort();
    for (const host of hosts) {
      const server = createServer((socket) => {
        socket.end(`${host}\n`);
        socket.on("error", () => undefined);
      });
      await new Promise<void>((resolve) => server.listen(port, host, resolve));
      servers.push(server);
    }
  });
  afterAll(async () => {
    for (const server of servers) await new Promise((resolve) => server.close(resolve));
  });
  afterEach(async () => {
    await traffic?.stop();
    traffic = undefined;
  });

  const ports = () => [{ name: "main", protocol: "TCP" as const, port: 80, targetPort: port }];

  it("a change to one of 2,000 services re-plans that one service", async () => {
    const index = new CountingIndex();
    const feed = new IndexFeed(index);
    for (let i = 0; i < 2_000; i++) putService(feed, { name: `svc-${i}`, clusterIP: `198.19.${(i >> 8) & 255}.${i & 255}`, ports: ports(), endpoints: [{ ip: hosts[0] }] });
    traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a" });
    await traffic.start();
    expect(traffic.listeners()).toHaveLength(2_000);
    const listener = listenerAddress(traffic.listeners().find((binding) => binding.key === "lab/svc-7:main/TCP")!);
    expect(await whoAnswers(listener)).toBe(hosts[0]);

    index.sliceReads.clear();
    putService(feed, { name: "svc-7", clusterIP: "198.19.0.7", ports: ports(), endpoints: [{ ip: hosts[1] }] });
    await eventually(async () => (await whoAnswers(listener)) === hosts[1], 5_000, "svc-7's new endpoint to answer");
    expect([...index.sliceReads]).toEqual(["lab/svc-7"]);
    // the others did not move
    const other = listenerAddress(traffic.listeners().find((binding) => binding.key === "lab/svc-8:main/TCP")!);
    expect(await whoAnswers(other)).toBe(hosts[0]);
  });

  it("follows a slice that moves to another service, a deleted slice and a DestinationRule", async () => {
    const feed = new IndexFeed();
    putService(feed, { name: "a", clusterIP: "198.19.1.1", ports: ports(), endpoints: [{ ip: hosts[0] }] });
    putService(feed, { name: "b", clusterIP: "198.19.1.2", ports: ports(), endpoints: [] });
    traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a", connectTimeoutMs: 500 });
    await traffic.start();
    const listenerOf = (key: string) => listenerAddress(traffic!.listeners().find((binding) => binding.key === key)!);
    const a = listenerOf("lab/a:main/TCP");
    const b = listenerOf("lab/b:main/TCP");
    expect(await whoAnswers(a)).toBe(hosts[0]);
    expect(hosts).not.toContain(await whoAnswers(b)); // no endpoint: the connection is reset

    // a's slice now says it belongs to b: a loses its endpoint, b gains it (one key changed, two services affected)
    const moved = { ...testService({ name: "a", clusterIP: "198.19.1.1", ports: ports(), endpoints: [{ ip: hosts[0] }] }).slice, serviceName: "b" };
    put(feed, [moved]);
    await eventually(async () => (await whoAnswers(b)) === hosts[0], 5_000, "b to answer through the moved slice");
    expect(hosts).not.toContain(await whoAnswers(a));

    // the slice is deleted: only the remembered owner can say it was b's
    feed.notify([catalogKey(moved)].filter((key) => feed.reader.apply({ op: "delete", key })));
    await eventually(async () => !hosts.includes(await whoAnswers(b)), 5_000, "b to lose its endpoint");

    // a DestinationRule change re-plans (its key does not name the Service it applies to)
    putService(feed, { name: "a", clusterIP: "198.19.1.1", ports: ports(), endpoints: [{ ip: hosts[0] }, { ip: hosts[1] }] });
    await eventually(async () => hosts.includes(await whoAnswers(a)), 5_000, "a to answer again");
    const rule: DestinationRule = { kind: "DestinationRule", namespace: "lab", name: "a-rule", host: "a", loadBalancer: { consistentHash: { useSourceIp: true } }, labels: {}, annotations: {} };
    put(feed, [rule]);
    // consistent hash on the source address: every connection from 127.0.0.1 lands on one endpoint
    await eventually(async () => {
      const answers = new Set<string>();
      for (let i = 0; i < 8; i++) answers.add(await whoAnswers(a));
      return answers.size === 1;
    }, 5_000, "the DestinationRule's consistent hash to apply");
  });
});
