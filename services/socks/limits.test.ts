/**
 * The SOCKS proxy's limits (issue 15 item 7), over real sockets: a flood from one
 * client address is held to its share and refused with an RST before any byte,
 * counted by reason; another client is served all the while, and the agent lives.
 */
import { connect, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { silentLogger } from "../../lib/log.ts";
import { Registry } from "prom-client";
import { createSocksActor, registerSocksMetrics, type SocksActor } from "./index.ts";
import { startTcpEcho } from "../../test/support/tunnel-fabric.ts";

let echo: Server;
let echoPort: number;
let socks: SocksActor;

beforeAll(async () => {
  ({ server: echo, port: echoPort } = await startTcpEcho());
  socks = createSocksActor({ feed: new IndexFeed(), log: silentLogger(), node: "edge-a", listen: { host: "127.0.0.1", port: 0 }, limits: { maxPerClient: 3 } });
  await socks.start();
});
afterAll(async () => {
  await socks.stop();
  await new Promise((resolve) => echo.close(resolve));
});

/** A SOCKS5 CONNECT to the echo from `localAddress`: "joined" (and the socket, held open), or how it ended. */
function socksConnect(localAddress: string): Promise<{ outcome: string; socket: Socket }> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port: socks.address!.port, localAddress });
    let stage = "greeting";
    socket.on("connect", () => socket.write(Uint8Array.of(5, 1, 0)));
    socket.on("data", (chunk: Buffer) => {
      if (stage === "greeting") {
        stage = "request";
        socket.write(Uint8Array.of(5, 1, 0, 1, 127, 0, 0, 1, echoPort >> 8, echoPort & 0xff));
        if (chunk.length > 2) chunk = chunk.subarray(2);
        else return;
      }
      if (stage === "request" && chunk[1] === 0) resolve({ outcome: "joined", socket });
    });
    socket.on("error", (error: NodeJS.ErrnoException) => resolve({ outcome: error.code ?? "error", socket }));
    socket.on("close", () => resolve({ outcome: "closed", socket }));
  });
}

describe("SOCKS limits", () => {
  it("holds one client to its share with an RST at the door, counted by reason, and serves another client meanwhile", async () => {
    const flood = await Promise.all(Array.from({ length: 10 }, () => socksConnect("127.0.0.1")));
    const outcomes = flood.map((entry) => entry.outcome).sort();
    expect(outcomes.filter((outcome) => outcome === "joined")).toHaveLength(3);
    expect(outcomes.filter((outcome) => outcome === "ECONNRESET")).toHaveLength(7);
    expect((socks.stats() as Record<string, number>)["refused: client over its limit"]).toBe(7);
    const registry = new Registry();
    registerSocksMetrics(registry, socks);
    expect(await registry.metrics()).toContain('leafmesh_socks_events{reason="refused: client over its limit"} 7');
    const other = await socksConnect("127.0.0.2");
    expect(other.outcome).toBe("joined");
    for (const entry of [...flood, other]) entry.socket.destroy();
  });
});

describe("a SOCKS client that trickles its greeting", () => {
  it("is closed when the handshake time is up, however often a byte comes", async () => {
    const quick = createSocksActor({ feed: new IndexFeed(), log: silentLogger(), node: "edge-a", listen: { host: "127.0.0.1", port: 0 }, handshakeTimeoutMs: 600 });
    await quick.start();
    try {
      const socket = connect({ host: "127.0.0.1", port: quick.address!.port });
      socket.on("error", () => undefined);
      await new Promise((resolve) => socket.once("connect", resolve));
      // Version 5, 200 methods: a byte every 150 ms, each well within the handshake time, would take 30 s.
      const greeting = Uint8Array.of(5, 200, ...Array<number>(200).fill(0));
      let sent = 0;
      while (sent < greeting.length && !socket.destroyed && socket.readyState === "open") {
        socket.write(greeting.subarray(sent, sent + 1));
        sent++;
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
      expect(sent).toBeLessThan(greeting.length);
      expect((quick.stats() as Record<string, number>)["handshake timeout"]).toBe(1);
      socket.destroy();
    } finally {
      await quick.stop();
    }
  });
});
