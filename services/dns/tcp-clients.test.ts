/**
 * DNS over TCP when clients hold on to their connections: one that trickles a
 * byte of a query now and then is idle all the same, and a new client is
 * served when every place is taken, in the place of the client idle longest.
 * Before, a byte every few seconds kept a connection open for ever, and 256 of
 * them (one program on the node) kept every other client off DNS over TCP.
 */
import { connect, type Socket } from "node:net";
import dnsPacket from "dns-packet";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { frame, tcpExchange } from "../../test/support/dns-servers.ts";
import { feedOf, sampleCatalog } from "../../test/support/dns-catalog.ts";
import { DnsServer } from "./server.ts";
import { DnsStats } from "./stats.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const query = (id: number) => frame(Buffer.from(dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name: "web.shop.svc.cluster.local", type: "A" }] })));

describe("DNS over TCP with clients that hold their connections", () => {
  const stats = new DnsStats();
  const server = new DnsServer({ catalog: feedOf(sampleCatalog()).reader, log: silentLogger(), stats, tcpIdleMs: 600, maxTcpConnections: 8 });
  let port: number;
  let held: Socket[] = [];

  function open(): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port });
      socket.on("error", () => undefined);
      socket.once("connect", () => resolve(socket));
      socket.once("error", reject);
      held.push(socket);
    });
  }
  const closed = (socket: Socket) => socket.destroyed || socket.readableEnded;

  beforeAll(async () => {
    port = (await server.start({ host: "127.0.0.1", port: 0 })).port;
  });
  afterEach(() => {
    for (const socket of held) socket.destroy();
    held = [];
  });
  afterAll(async () => {
    await server.stop();
  });

  it("closes a client that trickles a query a byte at a time, as one that sends nothing", async () => {
    const trickler = await open();
    trickler.on("data", () => undefined);
    const bytes = query(1);
    // A byte every 150 ms, each well within the idle time: the query would take 6 s to arrive.
    for (let index = 0; index < 15 && !closed(trickler); index++) {
      trickler.write(bytes.subarray(index, index + 1));
      await sleep(150);
    }
    expect(closed(trickler)).toBe(true);
    // A client that asks now and then stays: each whole query starts its idle time again.
    const asker = await open();
    const answers: Buffer[] = [];
    asker.on("data", (chunk: Buffer) => answers.push(chunk));
    for (let index = 0; index < 5; index++) {
      asker.write(query(10 + index));
      await sleep(300);
    }
    expect(closed(asker)).toBe(false);
    expect(answers.length).toBeGreaterThan(0);
  });

  it("serves a new client when every place is held, closing the one idle longest", async () => {
    const holders: Socket[] = [];
    for (let index = 0; index < 8; index++) {
      holders.push(await open());
      await sleep(20);
    }
    await sleep(100);
    const replies = await tcpExchange(port, query(42), 1, 2_000);
    expect(replies[0].id).toBe(42);
    expect(replies[0].answers?.[0]?.data).toBe("10.96.0.10");
    expect(closed(holders[0])).toBe(true);
    expect(holders.slice(1).filter(closed)).toEqual([]);
    expect(stats.drops.get("tcp idle client closed for a new one")).toBeGreaterThanOrEqual(1);
  });
});
