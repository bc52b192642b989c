/**
 * Stream opens in turn (stream-opener.ts, issue 15 item 8): a burst of opens
 * towards one node runs a bounded number at a time, every one carried; one that
 * cannot get its turn in time is refused with its reason, never half-opened.
 * A carrier over real TCP connections to a real StreamServer stands in for a
 * relay channel (it counts how many opens are under way at once).
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import type { Carrier, CarrierPeer } from "./carrier.ts";
import { nextSessionDelayMs, type StreamOpener } from "./stream-opener.ts";
import { eventually } from "../../test/support/ports.ts";
import { openerOver } from "../../test/support/held-answer-tunnel.ts";
import { StreamServer } from "./stream-server.ts";

let echo: Server;
let carrierServer: Server;
const target = { host: "127.0.0.1", port: 0, protocol: "TCP" as const };
const peer: CarrierPeer = { node: "edge-b", peerId: "peer-b" };
const served = new Set<Socket>();

beforeAll(async () => {
  echo = createServer((socket) => {
    served.add(socket);
    socket.on("error", () => undefined).pipe(socket);
  });
  await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
  target.port = (echo.address() as { port: number }).port;
  const server = new StreamServer({ node: "edge-b", log: silentLogger() });
  carrierServer = createServer((socket) => {
    served.add(socket);
    void server.serve(socket, "edge-a");
  });
  await new Promise<void>((resolve) => carrierServer.listen(0, "127.0.0.1", resolve));
});
afterAll(async () => {
  for (const socket of served) socket.destroy();
  await new Promise((resolve) => carrierServer.close(resolve));
  await new Promise((resolve) => echo.close(resolve));
});

/** A relay-like carrier: each open takes `delayMs` (its channel and handshake), then is a TCP connection to the serving end. */
function countingCarrier(delayMs: number) {
  const stats = { opening: 0, maxOpening: 0 };
  const carrier: Carrier = {
    name: "relayed TLS",
    async open() {
      stats.opening++;
      stats.maxOpening = Math.max(stats.maxOpening, stats.opening);
      try {
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        const socket = connect({ host: "127.0.0.1", port: (carrierServer.address() as { port: number }).port });
        await new Promise((resolve) => socket.once("connect", resolve));
        return socket;
      } finally {
        stats.opening--;
      }
    },
  };
  return { carrier, stats };
}

function opener(carrier: Carrier, options: { maxOpeningPerPeer: number; openQueueTimeoutMs?: number }): StreamOpener {
  return openerOver(carrier, { headerTimeoutMs: 10_000, ...options });
}

describe("stream opens in turn", () => {
  it("opens a burst of 300 streams towards one node a few at a time, and carries every one", async () => {
    const { carrier, stats } = countingCarrier(5);
    const shared = opener(carrier, { maxOpeningPerPeer: 8 });
    const opened: Duplex[] = await Promise.all(Array.from({ length: 300 }, () => shared.open(peer, "relayed", target)));
    expect(opened).toHaveLength(300);
    expect(stats.maxOpening).toBeLessThanOrEqual(8);
    for (const stream of opened) stream.destroy();
  });

  it("refuses an open that cannot get its turn in time with the reason", async () => {
    const { carrier } = countingCarrier(300);
    const shared = opener(carrier, { maxOpeningPerPeer: 1, openQueueTimeoutMs: 100 });
    const results = await Promise.allSettled([shared.open(peer, "relayed", target), shared.open(peer, "relayed", target)]);
    expect(results[0].status).toBe("fulfilled");
    expect(results[1].status).toBe("rejected");
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/stream to 'edge-b' not opened: queue timeout/);
    expect((results[1] as PromiseRejectedResult).reason.code).toBe("OVER_CAPACITY");
    (results[0] as PromiseFulfilledResult<Duplex>).value.destroy();
  });
});

describe("an open whose client left", () => {
  it("leaves the queue at once and never reaches a carrier; the open under way keeps its turn, then is given up", async () => {
    const { carrier, stats } = countingCarrier(200);
    const opens = { started: 0 };
    const counted: Carrier = { name: carrier.name, open: (p) => (opens.started++, carrier.open(p)) };
    const shared = opener(counted, { maxOpeningPerPeer: 1 });
    const clients = Array.from({ length: 10 }, () => new AbortController());
    const opening = clients.map((client) => shared.open(peer, "relayed", target, client.signal));
    for (const client of clients) client.abort();
    const results = await Promise.allSettled(opening);
    for (const result of results) {
      expect(result.status).toBe("rejected");
      expect(String((result as PromiseRejectedResult).reason)).toMatch(/stream to 'edge-b' abandoned: the client left/);
    }
    // Only the first was past the queue (its carrier being made); the nine queued never cost a carrier.
    expect(opens.started).toBe(1);
    const real = await shared.open(peer, "relayed", target);
    expect(opens.started).toBe(2);
    expect(stats.maxOpening).toBe(1);
    real.destroy();
  });

  it("resets a stream whose target header is under way when its client leaves (the far agent drops the target)", async () => {
    // A far agent that takes the stream and never answers its header (its target connect hangs).
    const stalled = new Set<Socket>();
    const farAgent = createServer((socket) => stalled.add(socket.on("error", () => undefined)));
    await new Promise<void>((resolve) => farAgent.listen(0, "127.0.0.1", resolve));
    const closedAtFarEnd = new Promise<void>((resolve) => farAgent.once("connection", (socket) => socket.once("close", () => resolve())));
    const carrier: Carrier = {
      name: "relayed TLS",
      async open() {
        const socket = connect({ host: "127.0.0.1", port: (farAgent.address() as { port: number }).port });
        await new Promise((resolve) => socket.once("connect", resolve));
        return socket;
      },
    };
    const shared = opener(carrier, { maxOpeningPerPeer: 1 });
    const client = new AbortController();
    const opening = shared.open(peer, "relayed", target, client.signal);
    await new Promise<void>((resolve) => farAgent.once("connection", () => setImmediate(resolve)));
    client.abort();
    await expect(opening).rejects.toThrow(/abandoned: the client left/);
    // The header timeout is 10 s; the far end's stream closes long before it, and the turn is free for the next.
    await closedAtFarEnd;
    const next = new AbortController();
    const second = shared.open(peer, "relayed", target, next.signal);
    await new Promise<void>((resolve) => (stalled.size >= 2 ? resolve() : farAgent.once("connection", () => resolve())));
    next.abort();
    await expect(second).rejects.toThrow(/abandoned/);
    for (const socket of stalled) socket.destroy();
    await new Promise((resolve) => farAgent.close(resolve));
  });
});

describe("the next stream's session", () => {
  it("is made after an open is done, not during it, and once after opens in a row", async () => {
    const { carrier } = countingCarrier(0);
    const asked: { openDone: number }[] = [];
    let done = 0;
    const ahead: Carrier = { name: carrier.name, open: (p) => carrier.open(p), prepareNext: () => void asked.push({ openDone: done }) };
    const shared = opener(ahead, { maxOpeningPerPeer: 4 });
    const first = await shared.open(peer, "relayed", target);
    done++;
    // Not while the stream's own header and status were under way: its handshake would delay them (stream-opener.ts).
    expect(asked).toEqual([]);
    await eventually(() => asked.length === 1, 5_000, "the next session asked for");
    expect(asked[0].openDone).toBe(1);
    // Three opens in a row: one session made ahead, once they pause.
    const more = [];
    for (let i = 0; i < 3; i++) more.push(await shared.open(peer, "relayed", target));
    await eventually(() => asked.length === 2, 5_000, "the next session asked for again");
    await new Promise((resolve) => setTimeout(resolve, 3 * nextSessionDelayMs));
    expect(asked).toHaveLength(2);
    for (const stream of [first, ...more]) stream.destroy();
  });
});
