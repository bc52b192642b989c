/**
 * A stolen node's credentials against a hub's resources, speaking the leafnode protocol itself
 * (test/support/rogue-leaf.ts): the hub checks nothing of a leaf's subscriptions but their count
 * and nothing of its connections but their number, so those counts are what the node account
 * bounds (trust/claims.ts nodeConnectionLimits). Unbounded, 200,000 subscriptions took a hub from
 * 14 to 197 MB in 1.5 s and 300 connections were all accepted.
 *
 * An honest node beside it keeps its connection and its traffic.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { initKeys, readKeyState } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { nodeConnectionLimits } from "./claims.ts";
import { connectRogueLeaf, type RogueLeaf } from "../test/support/rogue-leaf.ts";
import { requireTools, startSecuredHub, startSecuredLeaf, stopAllServers, type SecuredHub } from "../test/support/trust-servers.ts";
import { stopAllProcesses, tempDir } from "../test/support/processes.ts";
import { eventually } from "../test/support/ports.ts";

let keys: string;
let hub: SecuredHub;
let meshClient: NatsConnection;
let edgeB: NatsConnection;
const rogues: RogueLeaf[] = [];

async function stolen(): Promise<RogueLeaf> {
  const bundle = join(keys, "nodes", "edge-a");
  const rogue = await connectRogueLeaf({ port: hub.leafPort, creds: join(bundle, "node.creds"), cert: join(bundle, "node.crt"), key: join(bundle, "node.key"), ca: join(bundle, "ca.crt") });
  rogues.push(rogue);
  return rogue;
}

interface Leafz {
  leafs?: { account: string; subscriptions: number }[];
}

async function leafsOf(account: string): Promise<{ account: string; subscriptions: number }[]> {
  const body = (await (await fetch(`http://127.0.0.1:${hub.monitorPort}/leafz`)).json()) as Leafz;
  return (body.leafs ?? []).filter((leaf) => leaf.account === account);
}

/** edge-b's event reaches the mesh account: the honest node's link works. */
async function honestNodeHeard(): Promise<void> {
  const heard: string[] = [];
  const subscription = meshClient.subscribe("mesh.edge-b.>", { callback: (_error, message) => void heard.push(message.string()) });
  await meshClient.flush();
  try {
    await eventually(async () => {
      edgeB.publish("mesh.edge-b.tunnel.path", "honest");
      await edgeB.flush();
      return heard.includes("honest");
    }, 10_000, "edge-b's event at the hub");
  } finally {
    subscription.unsubscribe();
  }
}

beforeAll(async () => {
  requireTools();
  const base = tempDir("leafmesh-exhaustion-");
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
  hub = await startSecuredHub({ keysDir: keys, dir: join(base, "hub") });
  meshClient = await connect({ servers: hub.clientUrl, ...hub.security.publisherConnectOptions });
  const leaf = await startSecuredLeaf({ node: "edge-b", bundleDir: join(keys, "nodes", "edge-b"), hubLeafUrl: `tls://127.0.0.1:${hub.leafPort}`, dir: join(base, "edge-b") });
  edgeB = await connect({ servers: leaf.clientUrl, ...leaf.security.clientConnectOptions });
}, 60_000);

afterAll(async () => {
  for (const rogue of rogues) rogue.close();
  await edgeB?.close().catch(() => undefined);
  await meshClient?.close().catch(() => undefined);
  await stopAllServers();
  await stopAllProcesses();
});

describe("a stolen node cannot exhaust a hub", () => {
  it("its subscriptions per connection stop at the account's limit, with the server's answer", async () => {
    const rogue = await stolen();
    try {
      const tried = nodeConnectionLimits.subs * 5;
      for (let index = 0; index < tried; index++) rogue.subscribe(`relay.edge-a.flood${index}.>`);
      await rogue.flush();
      const account = readKeyState(keys).nodes["edge-a"].account;
      const [held] = await leafsOf(account);
      expect(held.subscriptions).toBeLessThanOrEqual(nodeConnectionLimits.subs);
      expect(rogue.errors.join("\n")).toMatch(/maximum subscriptions exceeded/i);
      await honestNodeHeard();
    } finally {
      rogue.close();
      await rogue.closed;
    }
  });

  it("its leaf connections stop at the account's limit; the honest node keeps its own", async () => {
    const account = readKeyState(keys).nodes["edge-a"].account;
    await eventually(async () => (await leafsOf(account)).length === 0, 10_000, "the previous test's connection to be gone");
    const tried = nodeConnectionLimits.leaf * 2;
    const opened = await Promise.all(Array.from({ length: tried }, () => stolen().catch((error: Error) => error)));
    // Refused ones are closed by the hub right after their CONNECT; give each a round trip to be.
    await Promise.all(opened.map((rogue) => (rogue instanceof Error ? undefined : rogue.flush())));
    const held = await leafsOf(account);
    expect(held.length).toBeGreaterThan(0);
    expect(held.length).toBeLessThanOrEqual(nodeConnectionLimits.leaf);
    const refusals = opened.filter((rogue) => !(rogue instanceof Error) && rogue.errors.some((line) => /Maximum Leafnode Connections Exceeded|maximum account active connections exceeded/i.test(line)));
    expect(refusals.length).toBeGreaterThanOrEqual(tried - nodeConnectionLimits.leaf);
    expect(await leafsOf(readKeyState(keys).nodes["edge-b"].account)).toHaveLength(1);
    await honestNodeHeard();
  });
});
