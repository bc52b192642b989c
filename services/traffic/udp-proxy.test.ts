import { createSocket, type Socket } from "node:dgram";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { ServicePortBalancer, type BalancerShared } from "./balancer.ts";
import { Counters } from "./counters.ts";
import { OutlierDetector } from "./outlier.ts";
import type { ServicePortPlan } from "./plan.ts";
import { UdpServicePortListener } from "./udp-proxy.ts";

describe("UDP flows", () => {
  let echo: Socket;
  let echoPort = 0;
  beforeAll(async () => {
    echoPort = await freePort();
    echo = createSocket("udp4");
    echo.on("message", (message, remote) => echo.send(message, remote.port, remote.address));
    await new Promise<void>((resolve) => echo.bind(echoPort, "127.0.0.2", resolve));
  });
  afterAll(() => echo.close());

  it("bounds the flow table (drops counted) and expires idle flows on the clock", async () => {
    const clock = new ManualClock(1_000);
    const shared: BalancerShared = { node: "edge-a", clock, outliers: new OutlierDetector({ clock }), active: new Map() };
    const plan: ServicePortPlan = {
      key: "lab/echo:u/UDP",
      namespace: "lab",
      service: "echo",
      portName: "u",
      protocol: "UDP",
      port: 7,
      clusterIPs: ["198.19.0.1"],
      endpoints: [{ key: `127.0.0.2:${echoPort}`, host: "127.0.0.2", port: echoPort }],
      policy: { policy: "round-robin", source: "default" },
    };
    const counters = new Counters();
    const listener = new UdpServicePortListener({ balancer: new ServicePortBalancer(plan, shared), shared, log: silentLogger(), counters, listenHost: "127.0.0.1", idleTimeoutMs: 30_000, maxFlows: 3 });
    const port = await listener.listen();
    const clients = Array.from({ length: 5 }, () => createSocket("udp4"));
    const replies = new Map<Socket, number>();
    for (const client of clients) client.on("message", () => replies.set(client, (replies.get(client) ?? 0) + 1));
    for (const client of clients) client.send("hello", port, "127.0.0.1");
    await eventually(() => counters.get("udp flows") + counters.get("udp dropped: flow table full") === 5, 5000, "five datagrams handled");
    expect(counters.get("udp flows")).toBe(3);
    expect(counters.get("udp dropped: flow table full")).toBe(2);
    await eventually(() => replies.size === 3, 5000, "replies to the three flows");
    expect(shared.active.get(plan.endpoints[0].key)).toBe(3);

    clock.advance(20_000);
    clients[0].send("still here", port, "127.0.0.1");
    await eventually(() => replies.get(clients[0]) === 2, 5000, "second reply");
    clock.advance(15_000); // 35 s since the other two were active, 15 s for the first
    expect(listener.flows).toBe(1);
    expect(counters.get("udp flow expired")).toBe(2);
    expect(shared.active.get(plan.endpoints[0].key)).toBe(1);
    listener.retainEndpoints(new Set()); // the endpoint left the service: its flows go at once
    expect(listener.flows).toBe(0);
    expect(counters.get("udp flow closed: endpoint removed")).toBe(1);
    for (const client of clients) client.close();
    await listener.close();
    expect(shared.active.size).toBe(0);
  });
});
