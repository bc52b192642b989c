/**
 * The serving end's limit on streams per peer (stream-server.ts, issue 15 item 7),
 * over real TCP connections standing in for a carrier: a peer over its limit gets
 * a refusal with the OVER_CAPACITY code (which its proxy does not hold against the
 * endpoint), another peer is served meanwhile, and a closed stream frees its place.
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { overCapacityCode } from "../../bus/streams.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually } from "../../test/support/ports.ts";
import { requestTarget, TargetRefusedError } from "./stream-header.ts";
import { StreamServer } from "./stream-server.ts";
import { startTcpEcho } from "../../test/support/tunnel-fabric.ts";

let echo: Server;
let carrier: Server;
let server: StreamServer;
const target = { host: "127.0.0.1", port: 0, protocol: "TCP" as const };

beforeAll(async () => {
  const started = await startTcpEcho();
  echo = started.server;
  target.port = started.port;
  server = new StreamServer({ node: "edge-b", log: silentLogger(), maxStreamsPerPeer: 2 });
  // The peer is told by the address it comes from (a real carrier proves it by certificate or subject).
  carrier = createServer((socket) => void server.serve(socket, socket.remoteAddress === "127.0.0.1" ? "edge-a" : "edge-c"));
  await new Promise<void>((resolve) => carrier.listen(0, "127.0.0.1", resolve));
});
afterAll(async () => {
  const count = (srv: Server) => new Promise((resolve) => srv.getConnections((_e, n) => resolve(n)));
  await eventually(async () => (await count(carrier)) === 0 && (await count(echo)) === 0, 5_000, "every stream closed at the serving end");
  await new Promise((resolve) => carrier.close(resolve));
  await new Promise((resolve) => echo.close(resolve));
});

async function openFrom(localAddress: string): Promise<Socket> {
  const socket = connect({ host: "127.0.0.1", port: (carrier.address() as { port: number }).port, localAddress });
  socket.on("error", () => undefined);
  await new Promise((resolve) => socket.once("connect", resolve));
  return (await requestTarget(socket, target, { timeoutMs: 5_000, peer: "edge-b", log: silentLogger() })) as Socket;
}

describe("streams per peer", () => {
  it("refuses a peer's stream over its limit with OVER_CAPACITY, serves another peer, and frees the place when a stream closes", async () => {
    const held = [await openFrom("127.0.0.1"), await openFrom("127.0.0.1")];
    const refusal = await openFrom("127.0.0.1").catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(TargetRefusedError);
    expect((refusal as TargetRefusedError).targetCode).toBe(overCapacityCode);
    expect(server.refused.get("peer over its limit")).toBe(1);
    const other = await openFrom("127.0.0.2");
    held[0].destroy();
    const again = await eventually(() => openFrom("127.0.0.1").catch(() => undefined), 5_000, "a place for edge-a again");
    for (const socket of [held[1], other, again]) socket.destroy();
  });
});
