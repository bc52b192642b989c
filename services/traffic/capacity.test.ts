/**
 * The cluster-IP proxy under load it did not plan for (issue 15 items 7 and 12),
 * over real loopback sockets: a burst waits at the door for its turn instead of
 * opening every stream at once, a client over its share is refused with an RST
 * and a reason, and only a failure that proves the endpoint bad counts towards
 * its ejection — never the tunnel's own trouble.
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { overCapacityCode } from "../../bus/streams.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { listenerAddress, putService, whoAnswers, type ListenerAddress } from "../../test/support/traffic-catalog.ts";
import { createTrafficActor, type TrafficActor } from "./actor.ts";

const endpointHost = "127.0.0.7";
let endpoint: Server;
let endpointPort: number;
let traffic: TrafficActor | undefined;

beforeAll(async () => {
  // Says who it is, then echoes: a healthy endpoint.
  endpoint = createServer((socket) => {
    socket.on("error", () => undefined);
    socket.write(`${endpointHost}\n`);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => endpoint.listen(0, endpointHost, resolve));
  endpointPort = (endpoint.address() as { port: number }).port;
});
afterAll(() => new Promise((resolve) => endpoint.close(resolve)));
afterEach(async () => {
  await traffic?.stop();
  traffic = undefined;
});

/** A dialer standing in for the tunnel: connects for real, after `delay` (a stream open's round trips), or fails as told. */
function testDialer(behaviour: { delayMs?: number; fail?: () => Error | undefined }) {
  const stats = { opening: 0, maxOpening: 0, opens: 0 };
  const dialer = {
    openStream: async (_node: string, target: { host: string; port: number }) => {
      stats.opens++;
      stats.opening++;
      stats.maxOpening = Math.max(stats.maxOpening, stats.opening);
      try {
        await new Promise((resolve) => setTimeout(resolve, behaviour.delayMs ?? 0));
        const failure = behaviour.fail?.();
        if (failure) throw failure;
        return await new Promise<Socket>((resolve, reject) => {
          const socket = connect({ host: target.host, port: target.port, allowHalfOpen: true });
          socket.once("connect", () => resolve(socket));
          socket.once("error", reject);
        });
      } finally {
        stats.opening--;
      }
    },
  };
  return { dialer, stats };
}

async function startRemoteService(extra: Partial<Parameters<typeof createTrafficActor>[0]>): Promise<ListenerAddress> {
  const feed = new IndexFeed();
  putService(feed, { name: "files", clusterIP: "198.19.0.30", ports: [{ name: "main", protocol: "TCP", port: 80, targetPort: endpointPort }], endpoints: [{ ip: endpointHost, node: "edge-b" }] });
  traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a", listenHost: "127.0.0.1", ...extra });
  await traffic.start();
  return listenerAddress(traffic.listeners().find((binding) => binding.key === "lab/files:main/TCP")!);
}

/** Connects, reads the endpoint's name line and closes; or the error code the proxy answered with. */
const hold = (listener: ListenerAddress): Promise<{ socket: Socket; answer: string }> =>
  new Promise((resolve) => {
    const socket = connect(listener);
    let text = "";
    socket.on("data", (chunk) => {
      text += chunk.toString();
      if (text.includes("\n")) resolve({ socket, answer: text.trim() });
    });
    socket.on("error", (error: NodeJS.ErrnoException) => resolve({ socket, answer: error.code ?? "error" }));
    socket.on("end", () => resolve({ socket, answer: text.trim() || "closed" }));
  });

describe("cluster-IP proxy capacity", () => {
  it("lets a burst through a few opens at a time: every connection carried, never more opens at once than the limit", async () => {
    const { dialer, stats } = testDialer({ delayMs: 20 });
    const port = await startRemoteService({ dialer, capacity: { maxOpening: 4 } });
    const answers = await Promise.all(Array.from({ length: 60 }, () => whoAnswers(port)));
    expect(answers.filter((answer) => answer === endpointHost)).toHaveLength(60);
    expect(stats.opens).toBe(60);
    expect(stats.maxOpening).toBeLessThanOrEqual(4);
  });

  it("refuses a client over its share with an RST before any byte, counts the reason, and still serves within the share", async () => {
    const { dialer } = testDialer({});
    const port = await startRemoteService({ dialer, capacity: { maxPerClient: 2 } });
    const held = [await hold(port), await hold(port)];
    expect(held.map((entry) => entry.answer)).toEqual([endpointHost, endpointHost]);
    expect((await hold(port)).answer).toBe("ECONNRESET");
    expect(traffic!.stats().counters["tcp refused: client over its limit"]).toBe(1);
    held[0].socket.destroy();
    await eventually(() => traffic!.stats().admission.connections === 1, 5_000, "the place to be given back");
    const again = await hold(port);
    expect(again.answer).toBe(endpointHost);
    for (const entry of [held[1], again]) entry.socket.destroy();
  });

  it("does not eject an endpoint for the tunnel's failures or the peer's limit, only for its own refusals", async () => {
    let failure: () => Error = () => new LeafmeshError("TUNNEL_FAILED", "TLS connection to edge-b at the relay not established within 3000 ms");
    const { dialer } = testDialer({ fail: () => failure() });
    const port = await startRemoteService({ dialer });
    for (let i = 0; i < 5; i++) expect(await whoAnswers(port)).toBe("ECONNRESET");
    failure = () => Object.assign(new LeafmeshError("TUNNEL_TARGET_REFUSED", "edge-b refuses more streams from edge-a"), { targetCode: overCapacityCode });
    for (let i = 0; i < 5; i++) expect(await whoAnswers(port)).toBe("ECONNRESET");
    expect(traffic!.stats().ejected).toEqual([]);
    expect(traffic!.stats().counters["tcp connect failed: tunnel"]).toBe(10);
    // The node that runs it says the endpoint itself refused: that is the endpoint's, three in a row eject it.
    failure = () => Object.assign(new LeafmeshError("TUNNEL_TARGET_REFUSED", `edge-b cannot connect to ${endpointHost}`), { targetCode: "ECONNREFUSED" });
    for (let i = 0; i < 3; i++) await whoAnswers(port);
    expect(traffic!.stats().ejected).toEqual([`${endpointHost}:${endpointPort}`]);
  });
});
