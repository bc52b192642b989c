/**
 * TLS over a byte channel that is already open (tls-streams.ts `tlsClientOver`,
 * `tlsServerOver`: a relay channel, a punched connection) when the far end never
 * answers or the channel goes away: the handshake fails with a reason, and
 * nothing is left to end the process (issue 15 items 8 and 12: many relayed
 * opens at once timed handshakes out, and one such timeout was an uncaught
 * 'error' that ended the agent). And when it ends whole: the session closes its channel only
 * after the channel's own end, or the peer reads a reset after a complete stream.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Duplex } from "node:stream";
import { beforeAll, describe, expect, it } from "vitest";
import { initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { loadNodeSecurity, nodeIdentityPems } from "../../trust/security.ts";
import { requireTools } from "../../test/support/trust-servers.ts";
import type { NodeIdentity } from "./index.ts";
import { tlsClientOver, tlsServerOver } from "./tls-streams.ts";

let identity: NodeIdentity;
let identityB: NodeIdentity;

beforeAll(async () => {
  requireTools();
  const keys = join(mkdtempSync(join(tmpdir(), "leafmesh-tls-channel-")), "keys");
  await initKeys({ dir: keys });
  await issueNode({ dir: keys, node: "edge-a" });
  await issueNode({ dir: keys, node: "edge-b" });
  identity = nodeIdentityPems(loadNodeSecurity(keys, "edge-a"));
  identityB = nodeIdentityPems(loadNodeSecurity(keys, "edge-b"));
}, 60_000);

/** A channel whose far end takes every byte and never answers (a peer too busy to serve it). */
const silentChannel = () => new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback() });

describe("TLS over an open channel that fails", () => {
  it("a handshake that times out rejects once and raises no uncaught error (client and server side)", async () => {
    const uncaught: Error[] = [];
    const onUncaught = (error: Error) => uncaught.push(error);
    process.on("uncaughtException", onUncaught);
    try {
      const client = tlsClientOver(silentChannel(), { identity, node: "edge-b", timeoutMs: 200, where: "the relay", point: "relayed TLS" });
      const server = tlsServerOver(silentChannel(), { identity, peer: "edge-b", timeoutMs: 200, where: "the relay", point: "relayed TLS" });
      await expect(client).rejects.toThrow(/not established within 200 ms/);
      await expect(server).rejects.toThrow(/not done within 200 ms/);
      // A second 'error' of the same session would come a turn or two later.
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      process.off("uncaughtException", onUncaught);
    }
    expect(uncaught.map((error) => error.message)).toEqual([]);
  });

  it("a channel destroyed during the handshake rejects it instead of leaving it pending", async () => {
    const channel = silentChannel();
    const client = tlsClientOver(channel, { identity, node: "edge-b", timeoutMs: 10_000, where: "the relay", point: "relayed TLS" });
    setImmediate(() => channel.destroy());
    await expect(client).rejects.toThrow(/closed before its handshake/);
  }, 5_000);
});

/**
 * Two ends of an in-memory channel that behave as a relay channel's: bytes arrive a turn later; an
 * end (FIN) arrives, and the writer's 'finish' comes, `endDelayMs` after it (a FIN frame in a later
 * read than the bytes before it); an end destroyed before both its directions ended resets the other.
 */
function channelPair(endDelayMs: number): { ends: [Duplex, Duplex]; resets: string[] } {
  const resets: string[] = [];
  const ends: Duplex[] = [];
  const make = (index: number) =>
    new Duplex({
      allowHalfOpen: true,
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        setImmediate(() => ends[1 - index].destroyed || ends[1 - index].push(chunk));
        callback();
      },
      final(callback) {
        setTimeout(() => {
          if (!ends[1 - index].destroyed) ends[1 - index].push(null);
          callback();
        }, endDelayMs);
      },
      destroy(error, callback) {
        const other = ends[1 - index];
        if (!(this.readableEnded && this.writableFinished) && !other.destroyed) {
          resets.push(`end ${index} closed before its end`);
          other.destroy(new Error("peer reset the channel"));
        }
        callback(error);
      },
    });
  ends.push(make(0), make(1));
  return { ends: [ends[0], ends[1]], resets };
}

/** What a stream's reader sees: bytes, a clean end or not, an error (a TLS session emits 'close' ahead of its 'error'). */
function reader(stream: Duplex): Promise<{ bytes: number; ended: boolean; error?: string }> {
  let bytes = 0;
  let error: string | undefined;
  stream.on("data", (chunk: Buffer) => (bytes += chunk.length));
  stream.on("error", (cause: Error) => (error ??= cause.message));
  return new Promise((resolve) => stream.once("close", () => setTimeout(() => resolve({ bytes, ended: stream.readableEnded, error }), 100)));
}

describe("TLS over an open channel that ends whole", () => {
  it("closes the channel after its own end, so a half-close both ways is a clean end at both ends, never a reset", async () => {
    const { ends, resets } = channelPair(300);
    const [client, server] = await Promise.all([
      tlsClientOver(ends[0], { identity, node: "edge-b", timeoutMs: 5_000, where: "the relay", point: "relayed TLS" }),
      tlsServerOver(ends[1], { identity: identityB, peer: "edge-a", timeoutMs: 5_000, where: "the relay", point: "relayed TLS" }),
    ]);
    const [atClient, atServer] = [reader(client), reader(server)];
    client.end(Buffer.alloc(64 * 1024, 1));
    await new Promise((resolve) => server.once("end", resolve));
    server.end(Buffer.alloc(256 * 1024, 2));
    expect(await atClient).toEqual({ bytes: 256 * 1024, ended: true, error: undefined });
    expect(await atServer).toEqual({ bytes: 64 * 1024, ended: true, error: undefined });
    expect(resets).toEqual([]);
  }, 20_000);
});
