/**
 * Strangers on the LAN who open connections to a node's tunnel port and never
 * speak (no PSK, no noise handshake) must not keep the node's peers out.
 * libp2p admitted ten unfinished inbound connections in all, from any address,
 * each for up to 10 s: sixty idle sockets from one host held every place, a
 * peer's direct dial was reset and its relayed connection (an inbound upgrade
 * too) timed out, and the node was unreachable while the stranger kept them.
 * Now one host holds at most four places (inbound-gate.ts), and connections
 * the fabric brought are not counted at all.
 */
import { connect, type Socket } from "node:net";
import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Bus } from "../../bus/bus.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { roundTrip, sha, startFabric, startTcpEcho, testPsk, type TestFabric } from "../../test/support/tunnel-fabric.ts";
import { createTunnelActor, type TunnelActor } from "./index.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("a node whose tunnel port strangers flood with idle connections", () => {
  let fabric: TestFabric;
  let echo: Awaited<ReturnType<typeof startTcpEcho>>;
  let echoPort: number;
  const actors: TunnelActor[] = [];
  let idle: Socket[] = [];

  async function agent(node: string, ways?: { direct?: boolean; punch?: boolean }) {
    const nats = await fabric.connect(node);
    const log = silentLogger();
    const tunnel = createTunnelActor({ bus: new Bus({ connection: nats, node, log }), log, node, nats, listen: ["/ip4/127.0.0.1/tcp/0"], psk: testPsk, mdns: false, ways, recordRefreshMs: 500 });
    await tunnel.start();
    actors.push(tunnel);
    return tunnel;
  }

  function tunnelPort(tunnel: TunnelActor): number {
    return Number(/\/tcp\/(\d+)/.exec(tunnel.host!.libp2p.getMultiaddrs()[0].toString())![1]);
  }

  /** A connection from `from` (another loopback address: another host on the LAN) that sends nothing. */
  function stranger(port: number, from: string): Promise<void> {
    return new Promise((resolve) => {
      const socket = connect({ host: "127.0.0.1", port, localAddress: from });
      socket.on("error", () => resolve());
      socket.on("connect", () => resolve());
      idle.push(socket);
    });
  }

  const stillOpen = () => idle.filter((socket) => !socket.destroyed && socket.readyState === "open").length;

  beforeAll(async () => {
    echo = await startTcpEcho();
    echoPort = echo.port;
    fabric = await startFabric({ hubs: 1, leaves: ["flood-a", "flood-b", "flood-c"] });
  }, 60_000);

  afterEach(() => {
    for (const socket of idle) socket.destroy();
    idle = [];
  });

  afterAll(async () => {
    for (const actor of actors) await actor.stop();
    await fabric?.stop();
    void echo?.close();
  });

  it("one stranger holds four places at most, and a peer dials in directly", async () => {
    const target = await agent("flood-b");
    const direct = await agent("flood-a");
    await eventually(() => direct.directory?.get("flood-b"), 15_000, "flood-b's record");
    const port = tunnelPort(target);
    // Slower than libp2p's five new connections a second from one host, so only the gate refuses them.
    for (let i = 0; i < 12; i++) {
      await stranger(port, "127.0.0.2");
      await sleep(300);
    }
    await eventually(() => stillOpen() === 4, 5_000, "the stranger's places");
    const payload = randomBytes(256 * 1024);
    const stream = await direct.openStream("flood-b", { host: "127.0.0.1", port: echoPort, protocol: "TCP" });
    expect(sha(await roundTrip(stream, payload))).toBe(sha(payload));
    expect(direct.pathTo("flood-b")).toBe("direct");
    expect(stillOpen()).toBe(4);
  }, 60_000);

  it("strangers on many addresses fill every place, and a relayed peer still comes in", async () => {
    const target = actors[0];
    const relayed = await agent("flood-c", { direct: false, punch: false });
    await eventually(() => relayed.directory?.get("flood-b"), 15_000, "flood-b's record");
    const port = tunnelPort(target);
    // 70 hosts with four places each: more than the 256 places in all.
    await Promise.all(Array.from({ length: 70 }, (_, host) => Promise.all(Array.from({ length: 4 }, () => stranger(port, `127.0.1.${host + 1}`)))));
    await sleep(500);
    expect(stillOpen()).toBeGreaterThanOrEqual(256);
    const payload = randomBytes(256 * 1024);
    const stream = await relayed.openStream("flood-b", { host: "127.0.0.1", port: echoPort, protocol: "TCP" });
    expect(sha(await roundTrip(stream, payload))).toBe(sha(payload));
    expect(relayed.pathTo("flood-b")).toBe("relayed");
  }, 60_000);
});
