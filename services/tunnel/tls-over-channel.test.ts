/**
 * TLS over a byte channel that is already open (tls-streams.ts `tlsClientOver`,
 * `tlsServerOver`: a relay channel, a punched connection) when the far end never
 * answers or the channel goes away: the handshake fails with a reason, and
 * nothing is left to end the process (issue 15 items 8 and 12: many relayed
 * opens at once timed handshakes out, and one such timeout was an uncaught
 * 'error' that ended the agent).
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Duplex } from "node:stream";
import { beforeAll, describe, expect, it } from "vitest";
import { initKeys, issueNode } from "../../trust/key-store.ts";
import { loadNodeSecurity, nodeIdentityPems } from "../../trust/security.ts";
import { requireTools } from "../../test/support/trust-servers.ts";
import type { NodeIdentity } from "./index.ts";
import { tlsClientOver, tlsServerOver } from "./tls-streams.ts";

let identity: NodeIdentity;

beforeAll(async () => {
  requireTools();
  const keys = join(mkdtempSync(join(tmpdir(), "leafmesh-tls-channel-")), "keys");
  await initKeys({ dir: keys });
  await issueNode({ dir: keys, node: "edge-a" });
  identity = nodeIdentityPems(loadNodeSecurity(keys, "edge-a"));
}, 60_000);

/** A channel whose far end takes every byte and never answers (a peer too busy to serve it). */
const silentChannel = () => new Duplex({ read() {}, write: (_chunk, _encoding, callback) => callback() });

describe("TLS over an open channel that fails", () => {
  it("a handshake that times out rejects once and raises no uncaught error (client and server side)", async () => {
    const uncaught: Error[] = [];
    const onUncaught = (error: Error) => uncaught.push(error);
    process.on("uncaughtException", onUncaught);
    try {
      const client = tlsClientOver(silentChannel(), { identity, node: "edge-b", timeoutMs: 200, where: "the relay" });
      const server = tlsServerOver(silentChannel(), { identity, peer: "edge-b", timeoutMs: 200, where: "the relay" });
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
    const client = tlsClientOver(channel, { identity, node: "edge-b", timeoutMs: 10_000, where: "the relay" });
    setImmediate(() => channel.destroy());
    await expect(client).rejects.toThrow(/closed before its handshake/);
  }, 5_000);
});
