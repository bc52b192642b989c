/** The start-up hub, site and agent share: a start that fails half-way leaves nothing running. */
import { createServer, connect, type Server } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../lib/log.ts";
import { freePort } from "../test/support/ports.ts";
import { tempDir } from "../test/support/processes.ts";
import { startHub } from "./hub.ts";
import { startAgent } from "./agent.ts";

const blockers: Server[] = [];
afterAll(() => blockers.forEach((server) => server.close()));

/** A port some other program already holds. */
async function takenPort(): Promise<number> {
  const port = await freePort();
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  blockers.push(server);
  return port;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("a server process that cannot finish starting", () => {
  it("hub: refuses with the reason and stops its nats-server (its client port is closed again)", async () => {
    const client = await freePort();
    const start = startHub({
      name: "hub-1",
      dataDir: tempDir(),
      client: { host: "127.0.0.1", port: client },
      leaf: { host: "127.0.0.1", port: await freePort() },
      monitor: { host: "127.0.0.1", port: await freePort() },
      metrics: { host: "127.0.0.1", port: await takenPort() },
      log: silentLogger(),
    });
    await expect(start).rejects.toThrow(/--metrics-listen .* the address is in use/);
    expect(await accepts(client)).toBe(false);
  });

  it("agent: the same, after its controller and catalog mirror were already up", async () => {
    const hubClient = await freePort();
    const hubLeaf = await freePort();
    const hub = await startHub({
      name: "hub-1",
      dataDir: tempDir(),
      client: { host: "127.0.0.1", port: hubClient },
      leaf: { host: "127.0.0.1", port: hubLeaf },
      monitor: { host: "127.0.0.1", port: await freePort() },
      log: silentLogger(),
    });
    try {
      const client = await freePort();
      const start = startAgent({
        node: "edge-a",
        upstreams: [`nats://127.0.0.1:${hubLeaf}`],
        dataDir: tempDir(),
        client: { host: "127.0.0.1", port: client },
        monitor: { host: "127.0.0.1", port: await freePort() },
        metrics: { host: "127.0.0.1", port: await takenPort() },
        log: silentLogger(),
      });
      await expect(start).rejects.toThrow(/the address is in use/);
      expect(await accepts(client)).toBe(false);
    } finally {
      await hub.stop();
    }
  });
});
