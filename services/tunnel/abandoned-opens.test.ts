/**
 * Clients that hang up while their tunnel stream opens (issue: 300 connect-then-reset clients to a
 * service on another node slowed the next real request to seconds): through the call the L4 proxy
 * and the gateway make (bus/streams.ts openStreamWithin) over two real tunnel actors and a real
 * fabric, an open whose client left gives up its place in the queue of opens and its half-open
 * stream, so the far node's target sees only the opens that were already under way, each closed.
 */
import { createServer, type Socket } from "node:net";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Bus } from "../../bus/bus.ts";
import { openStreamWithin } from "../../bus/streams.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { roundTrip, sha, startFabric, testPsk, type TestFabric } from "../../test/support/tunnel-fabric.ts";
import { defaultMaxOpeningPerPeer } from "./stream-opener.ts";
import { createTunnelActor, type TunnelActor } from "./index.ts";

let fabric: TestFabric;
const actors: TunnelActor[] = [];
const accepted = new Set<Socket>();
let acceptedCount = 0;
const target = createServer((socket) => {
  acceptedCount++;
  accepted.add(socket);
  socket.on("error", () => undefined).on("close", () => accepted.delete(socket));
  socket.pipe(socket);
});

async function agent(node: string): Promise<TunnelActor> {
  const nats = await fabric.connect(node);
  const log = silentLogger();
  const tunnel = createTunnelActor({ bus: new Bus({ connection: nats, node, log }), log, node, nats, listen: ["/ip4/127.0.0.1/tcp/0"], psk: testPsk, mdns: false, recordRefreshMs: 500 });
  await tunnel.start();
  actors.push(tunnel);
  return tunnel;
}

beforeAll(async () => {
  await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
  fabric = await startFabric({ hubs: 1, leaves: ["edge-a", "edge-b"] });
  const a = await agent("edge-a");
  await agent("edge-b");
  await eventually(() => a.directory?.get("edge-b"), 15_000, "edge-b's record");
}, 60_000);
afterAll(async () => {
  for (const actor of actors) await actor.stop();
  await fabric?.stop();
  for (const socket of accepted) socket.destroy();
  await new Promise((resolve) => target.close(resolve));
});

describe("tunnel opens for clients that left", () => {
  it("300 clients that hang up at once reach the far target only with the opens already under way, all closed; the next request is carried", async () => {
    const a = actors[0];
    const streamTarget = { host: "127.0.0.1", port: (target.address() as { port: number }).port, protocol: "TCP" as const };
    // A path first (one real stream), so the 300 wait on the queue of opens, not on the path.
    const first = await openStreamWithin(a, "edge-b", streamTarget, { timeoutMs: 10_000, signal: new AbortController().signal, what: "first" });
    expect(sha(await roundTrip(first, Buffer.from("path")))).toBe(sha(Buffer.from("path")));
    await eventually(() => accepted.size === 0, 5_000, "the first stream closed at the target");
    acceptedCount = 0;
    const clients = Array.from({ length: 300 }, () => new AbortController());
    const opens = clients.map((client, index) => openStreamWithin(a, "edge-b", streamTarget, { timeoutMs: 10_000, signal: client.signal, what: `client ${index}` }));
    // Each client hangs up right after it connected (a connect-then-reset scan).
    await new Promise((resolve) => setImmediate(resolve));
    for (const client of clients) client.abort();
    const results = await Promise.allSettled(opens);
    expect(results.every((result) => result.status === "rejected")).toBe(true);
    const payload = randomBytes(64 * 1024);
    const next = await openStreamWithin(a, "edge-b", streamTarget, { timeoutMs: 10_000, signal: new AbortController().signal, what: "next" });
    expect(sha(await roundTrip(next, payload))).toBe(sha(payload));
    // Only opens that were under way when their clients left reached the target; every one was closed again.
    expect(acceptedCount).toBeLessThanOrEqual(defaultMaxOpeningPerPeer + 1);
    await eventually(() => accepted.size === 0, 10_000, "every abandoned stream closed at the far target");
  }, 90_000);
});
