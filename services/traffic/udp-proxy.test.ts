import { createSocket, type Socket } from "node:dgram";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { ServicePortBalancer, type BalancerShared } from "../../balance/balancer.ts";
import { Counters } from "./counters.ts";
import { OutlierDetector } from "../../balance/outlier.ts";
import type { ServicePortPlan } from "./plan.ts";
import { UdpServicePortListener } from "./udp-proxy.ts";
import { createServer, connect, type Socket as TcpSocket } from "node:net";
import { DatagramDecoder, encodeDatagram } from "../../bus/streams.ts";

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

  it("bounds the flow table (drops counted) and expires idle flows on the clock, not when the wall clock is set", async () => {
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

    // NTP sets the wall clock an hour on: no time passed, no flow is idle.
    clock.jump(3_600_000);
    listener.expireIdle();
    expect(listener.flows).toBe(3);
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

  it("frames datagrams on a stream and splits them back whatever the chunking", () => {
    const datagrams = [Buffer.from("a"), Buffer.alloc(0), Buffer.alloc(65_507, 3), Buffer.from("last")];
    const bytes = Buffer.concat(datagrams.map(encodeDatagram));
    for (const step of [1, 2, 3, 1000, bytes.length]) {
      const decoder = new DatagramDecoder();
      const out: Buffer[] = [];
      for (let offset = 0; offset < bytes.length; offset += step) out.push(...decoder.push(bytes.subarray(offset, offset + step)));
      expect(out.map((d) => d.toString("hex"))).toEqual(datagrams.map((d) => d.toString("hex")));
    }
  });

  it("reaches an endpoint on another node through the dialer, one framed stream per flow", async () => {
    // The far end of a tunnel, as the tunnel actor would run it: frames in, datagrams to the target, replies framed back.
    const bridge = createServer((stream) => {
      const [host, port] = ["127.0.0.2", echoPort];
      const udp = createSocket("udp4");
      const decoder = new DatagramDecoder();
      udp.connect(port, host, () => {
        stream.on("data", (chunk: Buffer) => {
          for (const datagram of decoder.push(chunk)) udp.send(datagram);
        });
      });
      udp.on("message", (reply) => stream.write(encodeDatagram(reply)));
      stream.on("close", () => udp.close());
      stream.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => bridge.listen(0, "127.0.0.1", resolve));
    const bridgePort = (bridge.address() as { port: number }).port;
    const opened: string[] = [];
    const dialer = {
      openStream: (node: string, target: { host: string; port: number; protocol: string }) =>
        new Promise<TcpSocket>((resolve, reject) => {
          opened.push(`${node} ${target.protocol} ${target.host}:${target.port}`);
          const stream = connect({ host: "127.0.0.1", port: bridgePort });
          stream.once("connect", () => resolve(stream));
          stream.once("error", reject);
        }),
    };
    const clock = new ManualClock(0);
    const shared: BalancerShared = { node: "edge-a", clock, outliers: new OutlierDetector({ clock }), active: new Map() };
    const plan: ServicePortPlan = {
      key: "lab/remote:u/UDP",
      namespace: "lab",
      service: "remote",
      portName: "u",
      protocol: "UDP",
      port: 7,
      clusterIPs: ["198.19.0.2"],
      endpoints: [{ key: `127.0.0.2:${echoPort}`, host: "127.0.0.2", port: echoPort, nodeName: "edge-b" }],
      policy: { policy: "round-robin", source: "default" },
    };
    const counters = new Counters();
    const listener = new UdpServicePortListener({ balancer: new ServicePortBalancer(plan, shared), shared, log: silentLogger(), counters, listenHost: "127.0.0.1", idleTimeoutMs: 30_000, maxFlows: 16, dialer });
    const port = await listener.listen();
    const client = createSocket("udp4");
    const replies: string[] = [];
    client.on("message", (message) => replies.push(message.toString()));
    for (let i = 0; i < 5; i++) client.send(`datagram ${i}`, port, "127.0.0.1");
    await eventually(() => replies.length === 5, 5000, "five replies through the tunnel stream");
    expect(replies.sort()).toEqual([0, 1, 2, 3, 4].map((i) => `datagram ${i}`));
    expect(opened).toEqual([`edge-b UDP 127.0.0.2:${echoPort}`]); // one flow, one stream
    client.close();
    await listener.close();
    await new Promise((resolve) => bridge.close(resolve));
  });
});
