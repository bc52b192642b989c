/**
 * Traffic's listener bindings are kept encoded per listener (bindings.ts) and
 * spliced into the bus's `listeners` pages: what a proxier assembles from the bus
 * must be what traffic holds, over several pages, and a listener whose plan
 * changes (a new cluster IP; a UDP port losing its endpoints) must be encoded
 * again, never served from what was kept. A real nats-server as bus.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Bus } from "../../bus/bus.ts";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import type { ListenerBinding } from "../../bus/events.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { putService } from "../../test/support/traffic-catalog.ts";
import { ManualClock } from "../../lib/clock.ts";
import { busListenerSource } from "../proxier/listener-source.ts";
import { createTrafficActor, type TrafficActor } from "./actor.ts";
import { ListenerPublisher } from "./listener-publisher.ts";

const byKey = (bindings: ListenerBinding[]) => [...bindings].sort((a, b) => a.key.localeCompare(b.key));

describe("traffic's listener bindings on the bus", () => {
  let nats: ChildProcess;
  let connection: NatsConnection;
  let bus: Bus;
  let traffic: TrafficActor | undefined;

  beforeAll(async () => {
    const port = await freePort();
    nats = spawn("nats-server", ["-p", String(port), "-a", "127.0.0.1"], { stdio: "ignore" });
    connection = await eventually(() => connect({ servers: `nats://127.0.0.1:${port}`, reconnect: false }), 10_000, "nats-server");
    bus = new Bus({ connection, node: "edge-a", log: silentLogger() });
  });
  afterAll(async () => {
    await traffic?.stop();
    bus?.close();
    await connection?.close();
    nats?.kill("SIGKILL");
  });

  it("a proxier assembles from the pages what traffic holds, and sees a changed plan encoded again", async () => {
    const feed = new IndexFeed();
    const tcp = [{ name: "main", protocol: "TCP" as const, port: 80, targetPort: 8080 }];
    const udp = [{ name: "dns", protocol: "UDP" as const, port: 53, targetPort: 5353 }];
    for (let i = 0; i < 1_100; i++) putService(feed, { name: `svc-${i}`, clusterIP: `198.19.${i >> 8}.${i & 255}`, ports: tcp, endpoints: [{ ip: "127.0.0.2" }] });
    putService(feed, { name: "resolver", clusterIP: "198.19.9.9", ports: udp, endpoints: [{ ip: "127.0.0.2" }] });
    const source = busListenerSource(bus);
    traffic = createTrafficActor({ feed, bus, log: silentLogger(), node: "edge-a", pageSize: 500, publishIntervalMs: 10 });
    await traffic.start();
    await eventually(() => source.listeners!().length === 1_101, 10_000, "the whole set on the bus (three pages)");
    expect(byKey(source.listeners!())).toEqual(byKey(traffic.listeners()));
    expect(source.listeners!().find((binding) => binding.key === "lab/resolver:dns/UDP")?.refused).toBeUndefined();

    // A new cluster IP for one Service, and the UDP Service without endpoints (refused from now on).
    putService(feed, { name: "svc-7", clusterIP: "198.19.200.7", ports: tcp, endpoints: [{ ip: "127.0.0.2" }] });
    putService(feed, { name: "resolver", clusterIP: "198.19.9.9", ports: udp, endpoints: [] });
    await eventually(() => source.listeners!().find((binding) => binding.key === "lab/svc-7:main/TCP")?.clusterIPs[0] === "198.19.200.7", 10_000, "svc-7's new cluster IP on the bus");
    await eventually(() => source.listeners!().find((binding) => binding.key === "lab/resolver:dns/UDP")?.refused === true, 10_000, "the UDP port refused on the bus");
    expect(traffic.listeners().find((binding) => binding.key === "lab/svc-7:main/TCP")?.clusterIPs).toEqual(["198.19.200.7"]);
    expect(byKey(source.listeners!())).toEqual(byKey(traffic.listeners()));
    source.close();
  });

  it("spaces generations by what sending one costs, not by encoding new listeners' bindings (done once each)", async () => {
    const clock = new ManualClock();
    const generations: number[] = [];
    const unsubscribe = bus.subscribe({ actor: "traffic", event: "listeners" }, ({ payload }) => generations.push(payload.generation));
    const binding = JSON.stringify({ key: "lab/a:main/TCP", protocol: "TCP", clusterIPs: ["198.19.0.1"], port: 80, listenerHost: "127.0.0.1", listenerPort: 1 });
    // Bindings that take 60 ms to make, as 10,000 new listeners' encoding does: ten times that would be 600 ms.
    const slowBindings = () => {
      const until = performance.now() + 60;
      while (performance.now() < until);
      return [binding];
    };
    const publisher = new ListenerPublisher({ bus, clock, bindings: slowBindings, minIntervalMs: 100 });
    publisher.publishNow();
    publisher.request();
    clock.advance(150);
    await eventually(() => generations.length === 2, 5_000, "the second generation, 100 ms (the minimum) after the first");
    expect(generations).toEqual([1, 2]);
    publisher.stop();
    unsubscribe();
  });
});
