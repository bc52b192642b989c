import { createServer, type Server } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "../test/support/ports.ts";
import { orderByRtt, orderMeasured } from "./nearest.ts";

const servers: Server[] = [];
afterAll(() => servers.forEach((server) => server.close()));

/** A listening port that closes every connection at once. */
async function listener(): Promise<number> {
  const port = await freePort();
  const server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  servers.push(server);
  return port;
}

describe("orderMeasured", () => {
  it("puts a clearly nearer upstream first and keeps the given order among equally near ones", () => {
    const order = (rtts: (number | undefined)[]) => orderMeasured(rtts.map((rttMs, index) => ({ url: `u${index}`, rttMs }))).map((upstream) => upstream.url);
    expect(order([40, 2, undefined, 41])).toEqual(["u1", "u0", "u3", "u2"]);
    expect(order([0.3, 0.2, 0.25])).toEqual(["u0", "u1", "u2"]);
    expect(order([undefined, undefined])).toEqual(["u0", "u1"]);
    expect(order([10, 12, 9])).toEqual(["u0", "u1", "u2"]);
    expect(order([30, 12, 9])).toEqual(["u1", "u2", "u0"]);
  });
});

describe("orderByRtt", () => {
  it("puts reachable upstreams before unreachable ones, keeping the given order among equals", async () => {
    const [dead, live] = [await freePort(), await listener()];
    const ordered = await orderByRtt([`nats-leaf://127.0.0.1:${dead}`, `nats-leaf://127.0.0.1:${live}`]);
    expect(ordered.map((upstream) => upstream.url)).toEqual([`nats-leaf://127.0.0.1:${live}`, `nats-leaf://127.0.0.1:${dead}`]);
    expect(ordered[0].rttMs).toBeGreaterThan(0);
    expect(ordered[1].rttMs).toBeUndefined();
  });
});
