/**
 * The path check between two real libp2p hosts of one mesh: an echoing peer makes a connection carry; a peer
 * that echoes less, or more, than the probe fails the check (and the connection), at once for more.
 */
import { randomBytes } from "node:crypto";
import type { Connection, Stream } from "@libp2p/interface";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { startTunnelHost, type TunnelHost } from "./host.ts";
import { streamToDuplex } from "./libp2p-duplex.ts";
import { PathChecks, pathCheckBytes, pathCheckProtocol } from "./path-check.ts";
import { parsePsk } from "./psk.ts";

const psk = parsePsk(`/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString("hex")}\n`);
const hosts: TunnelHost[] = [];

afterEach(async () => {
  await Promise.all(hosts.splice(0).map((host) => host.stop()));
});

async function pair(): Promise<{ near: TunnelHost; far: TunnelHost; connection: Connection }> {
  const near = await startTunnelHost({ node: "check-near", listen: ["/ip4/127.0.0.1/tcp/0"], psk, log: silentLogger(), mdns: false });
  const far = await startTunnelHost({ node: "check-far", listen: ["/ip4/127.0.0.1/tcp/0"], psk, log: silentLogger(), mdns: false });
  hosts.push(near, far);
  const connection = await near.libp2p.dial(far.libp2p.getMultiaddrs()[0]);
  return { near, far, connection };
}

/** A far side that answers the check its own way: `answer` maps each chunk it reads to what it writes back. */
async function answering(far: TunnelHost, answer: (chunk: Buffer) => Buffer[], endAfter = Infinity): Promise<void> {
  await far.libp2p.handle(pathCheckProtocol, (stream: Stream, connection: Connection) => {
    const duplex = streamToDuplex(stream, connection);
    let read = 0;
    duplex.on("error", () => undefined);
    duplex.on("data", (chunk: Buffer) => {
      read += chunk.length;
      for (const part of answer(chunk)) duplex.write(part);
      if (read >= endAfter) duplex.end();
    });
    duplex.once("end", () => duplex.end());
  });
}

describe("PathChecks", () => {
  it("takes a connection whose peer echoes the probe as carrying, on both sides", { timeout: 30_000 }, async () => {
    const { near, far, connection } = await pair();
    const carriedAtFar: Connection[] = [];
    const farChecks = new PathChecks({ host: far, log: silentLogger(), onCarried: (carried) => carriedAtFar.push(carried) });
    await farChecks.start();
    const nearChecks = new PathChecks({ host: near, log: silentLogger() });
    await nearChecks.check(connection);
    expect(nearChecks.carries(connection)).toBe(true);
    await expect.poll(() => carriedAtFar.length).toBe(1);
  });

  it("fails a connection whose peer echoes less than the probe and ends: a short echo is no echo", { timeout: 30_000 }, async () => {
    const { near, far, connection } = await pair();
    await answering(far, (chunk) => [chunk.subarray(0, Math.floor(chunk.length / 2))], pathCheckBytes);
    const checks = new PathChecks({ host: near, log: silentLogger() });
    await expect(checks.check(connection)).rejects.toThrow(/does not carry data: the echo of 8192 bytes came back changed/);
    expect(checks.carries(connection)).toBe(false);
    expect(connection.status).not.toBe("open");
  });

  it("fails a connection whose peer sends back more than the probe as soon as it does, not after gathering it until the timeout", { timeout: 30_000 }, async () => {
    const { near, far, connection } = await pair();
    await answering(far, (chunk) => [chunk, chunk]);
    const checks = new PathChecks({ host: near, log: silentLogger(), timeoutMs: 20_000 });
    // Before, it gathered what came until the timeout and then said "N of 8192 bytes came back within 20000 ms".
    await expect(checks.check(connection)).rejects.toThrow(/does not carry data: more than the 8192 bytes sent came back/);
    expect(checks.carries(connection)).toBe(false);
  });
});
