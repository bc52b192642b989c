/**
 * The relay under faults: three hubs in a cluster, two agents relaying through
 * them (each leaf attached to a different hub). Killing the hub that carries a
 * transfer: the cut stream is reset (never silently truncated), finished
 * streams are byte-exact, and new streams open through the other hubs.
 */
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Bus } from "../../bus/bus.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { createTunnelActor, type TunnelActor } from "./index.ts";
import { roundTrip, sha, startFabric, testPsk, type TestFabric } from "../../test/support/tunnel-fabric.ts";

describe("relay under faults", () => {
  let fabric: TestFabric;
  let echo: Server;
  let echoPort: number;
  const actors: TunnelActor[] = [];

  beforeAll(async () => {
    echo = createServer((socket) => {
      socket.on("error", () => undefined);
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
    echoPort = (echo.address() as { port: number }).port;
    // edge-a's leaf prefers hub-1, edge-b's hub-2: a relayed stream crosses hub-1 → hub-2.
    fabric = await startFabric({ hubs: 3, leaves: ["edge-a", "edge-b"] });
    for (const node of ["edge-a", "edge-b"]) {
      const nats = await fabric.connect(node);
      const log = silentLogger();
      const tunnel = createTunnelActor({
        bus: new Bus({ connection: nats, node, log }),
        log,
        node,
        nats,
        listen: ["/ip4/127.0.0.1/tcp/0"],
        psk: testPsk,
        mdns: false,
        ways: { direct: false, punch: false },
        recordRefreshMs: 500,
        backoffMinMs: 200,
        backoffMaxMs: 1_000,
      });
      await tunnel.start();
      actors.push(tunnel);
    }
    await eventually(() => actors[0].directory?.get("edge-b") && actors[1].directory?.get("edge-a"), 30_000, "records");
  }, 90_000);

  afterAll(async () => {
    for (const actor of actors) await actor.stop();
    await fabric?.stop();
    echo?.close();
  }, 30_000);

  it("resets the cut stream, keeps finished ones exact, and opens new streams through the other hubs", async () => {
    const [a] = actors;
    const target = { host: "127.0.0.1", port: echoPort, protocol: "TCP" as const };
    const finished = randomBytes(1024 * 1024);
    expect(sha(await roundTrip(await a.openStream("edge-b", target), finished))).toBe(sha(finished));
    expect(a.pathTo("edge-b")).toBe("relayed");

    // A long transfer: written in pieces so it is still running when the hub dies.
    const long = await a.openStream("edge-b", target);
    let received = 0;
    const outcome = new Promise<{ error?: Error; bytes: number }>((resolve) => {
      long.on("data", (chunk: Buffer) => (received += chunk.byteLength));
      long.once("end", () => resolve({ bytes: received }));
      long.once("error", (error) => resolve({ error, bytes: received }));
    });
    const total = 512 * 1024 * 1024;
    void (async () => {
      const piece = randomBytes(256 * 1024);
      for (let sent = 0; sent < total && !long.destroyed; sent += piece.byteLength) {
        if (!long.write(piece)) await new Promise((resolve) => (long.once("drain", resolve), long.once("close", resolve)));
      }
      if (!long.destroyed) long.end();
    })();
    await eventually(() => received > 2 * 1024 * 1024, 20_000, "transfer under way");

    const hub1 = fabric.hubs[0].server;
    const killedAt = Date.now();
    process.kill(hub1.pid!, "SIGKILL");
    void hub1.stop(); // no restart: the others must carry on

    const result = await outcome;
    expect(result.error?.message ?? "ended", "the cut stream must be reset, not ended early").not.toBe("ended");
    expect(result.bytes).toBeLessThan(total);

    // New streams through hub-2/hub-3 within seconds, byte-exact.
    const fresh = randomBytes(1024 * 1024);
    const echoed = await eventually(
      async () => roundTrip(await a.openStream("edge-b", target), fresh).catch(() => undefined),
      20_000,
      "a new relayed stream after the hub died",
    );
    expect(sha(echoed)).toBe(sha(fresh));
    expect(Date.now() - killedAt).toBeLessThan(20_000);
    expect(a.pathTo("edge-b")).toBe("relayed");
  }, 120_000);
});
