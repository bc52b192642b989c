import { createServer, type Server } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "../test/support/ports.ts";
import { orderByRtt } from "./nearest.ts";

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

describe("orderByRtt", () => {
  it("puts reachable upstreams before unreachable ones, keeping the given order among equals", async () => {
    const [dead, live] = [await freePort(), await listener()];
    const ordered = await orderByRtt([`nats-leaf://127.0.0.1:${dead}`, `nats-leaf://127.0.0.1:${live}`]);
    expect(ordered.map((upstream) => upstream.url)).toEqual([`nats-leaf://127.0.0.1:${live}`, `nats-leaf://127.0.0.1:${dead}`]);
    expect(ordered[0].rttMs).toBeGreaterThan(0);
    expect(ordered[1].rttMs).toBeUndefined();
  });
});
