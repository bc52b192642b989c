/**
 * The tunnel's relay (services/tunnel/relay.ts) over the secured fabric: relay
 * channels work across per-node accounts, and revoking a node ends its relayed
 * channels within seconds while another node's channel to the same peer goes on.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { silentLogger } from "../lib/log.ts";
import { eventually } from "../test/support/ports.ts";
import { RelayEndpoint, type RelayChannel } from "../services/tunnel/relay.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { startSecuredHub, startSecuredLeaf, stopAllServers, requireTools, leafConnections, type SecuredHub, type SecuredLeaf } from "../test/support/trust-servers.ts";
import { keysInProcess } from "../test/support/keys-command.ts";

let base: string;
let keys: string;
let hub: SecuredHub;
const leaves = new Map<string, SecuredLeaf>();
const endpoints = new Map<string, RelayEndpoint>();
const connections: NatsConnection[] = [];
const acceptedAtB: RelayChannel[] = [];

/** Writes `text` on the channel and resolves with the echo. */
async function echo(channel: RelayChannel, text: string): Promise<string> {
  let received = "";
  const onData = (chunk: Buffer) => (received += chunk.toString());
  channel.on("data", onData);
  try {
    channel.write(text);
    return await eventually(() => received.includes(text) && received, 5_000, `the echo of '${text}'`);
  } finally {
    channel.off("data", onData);
  }
}

beforeAll(async () => {
  requireTools();
  base = mkdtempSync(join(tmpdir(), "leafmesh-trust-relay-"));
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b", "edge-c"]) await issueNode({ dir: keys, node });
  hub = await startSecuredHub({ keysDir: keys, dir: join(base, "hub") });
  for (const node of ["edge-a", "edge-b", "edge-c"]) {
    const leaf = await startSecuredLeaf({ node, bundleDir: keys, hubLeafUrl: hub.leafUrl, dir: join(base, node) });
    leaves.set(node, leaf);
    const connection = await connect({ servers: leaf.clientUrl, ...leaf.security.clientConnectOptions });
    connections.push(connection);
    endpoints.set(
      node,
      new RelayEndpoint({
        nats: connection,
        node,
        log: silentLogger(),
        pingIntervalMs: 200,
        idleTimeoutMs: 1_500,
        onChannel: (channel) => {
          if (node === "edge-b") acceptedAtB.push(channel);
          channel.on("error", () => undefined); // resets are asserted through resetReason
          channel.pipe(channel); // echo
        },
      }),
    );
  }
}, 90_000);

afterAll(async () => {
  for (const endpoint of endpoints.values()) endpoint.close();
  for (const connection of connections) await connection.close().catch(() => undefined);
  await stopAllServers();
  if (base) rmSync(base, { recursive: true, force: true });
});

describe("relay channels between per-node accounts", () => {
  it("carry data both ways; revoking a node ends its channels within seconds, another node's channel goes on", async () => {
    const open = (from: string) =>
      eventually(() => endpoints.get(from)!.open("edge-b").catch(() => undefined), 20_000, `a relay channel ${from} → edge-b`);
    const fromA = await open("edge-a");
    const fromC = await open("edge-c");
    fromA.on("error", () => undefined);
    fromC.on("error", () => undefined);
    expect(await echo(fromA, "hello from a")).toContain("hello from a");
    expect(await echo(fromC, "hello from c")).toContain("hello from c");
    const atBFromC = acceptedAtB.find((channel) => channel.peer === "edge-c")!;

    const revokedAt = Date.now();
    await keysInProcess("revoke", "--dir", keys, "--node", "edge-c", "--hub", hub.clientUrl);
    await eventually(async () => (await leafConnections(leaves.get("edge-c")!)) === 0, 5_000, "edge-c cut off");
    // both ends of edge-c's channel notice the silence and reset it
    await eventually(() => fromC.resetReason !== undefined && atBFromC.resetReason !== undefined, 10_000, "edge-c's relayed channel to end at both ends");
    expect(Date.now() - revokedAt).toBeLessThan(10_000);
    // edge-a's channel to edge-b never noticed
    expect(fromA.resetReason).toBeUndefined();
    expect(await echo(fromA, "still here")).toContain("still here");
    // and edge-c cannot open a new one
    await expect(endpoints.get("edge-c")!.open("edge-b")).rejects.toThrow();
  });
});
