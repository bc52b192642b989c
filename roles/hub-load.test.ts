/**
 * A hub's relay load (hub-load.ts) counts the channels nodes say they opened, from their
 * `mesh.<node>.tunnel.relay` events, and keeps their ids, at most 10,000 per node. A node's events
 * are its own word: a stolen node's credentials, speaking the leafnode protocol itself
 * (test/support/rogue-leaf.ts) against a real secured hub, sent ids of 100 KB each, which the hub
 * kept (10,000 of them would have been a gigabyte in the hub's process). Ids longer than a channel
 * id can be are refused at the edge (bus/events.ts); real ones are still counted.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Bus } from "../bus/bus.ts";
import { silentLogger } from "../lib/log.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { connectRogueLeaf, type RogueLeaf } from "../test/support/rogue-leaf.ts";
import { requireTools, startSecuredHub, stopAllServers, type SecuredHub } from "../test/support/trust-servers.ts";
import { stopAllProcesses, tempDir } from "../test/support/processes.ts";
import { eventually } from "../test/support/ports.ts";
import { startHubLoad } from "./hub-load.ts";

let hub: SecuredHub;
let mesh: NatsConnection;
let rogue: RogueLeaf;

beforeAll(async () => {
  requireTools();
  const keys = join(tempDir("leafmesh-hub-load-"), "keys");
  await initKeys({ dir: keys });
  await issueNode({ dir: keys, node: "edge-a" });
  hub = await startSecuredHub({ keysDir: keys, dir: join(keys, "..", "hub") });
  mesh = await connect({ servers: hub.clientUrl, ...hub.security.publisherConnectOptions });
  const bundle = join(keys, "nodes", "edge-a");
  rogue = await connectRogueLeaf({ port: hub.leafPort, creds: join(bundle, "node.creds"), cert: join(bundle, "node.crt"), key: join(bundle, "node.key"), ca: join(bundle, "ca.crt") });
  // what makes the hub count edge-a as attached to it: its relay interest
  rogue.subscribe("relay.edge-a.>");
  await rogue.flush();
}, 60_000);

afterAll(async () => {
  rogue?.close();
  await mesh?.close().catch(() => undefined);
  await stopAllServers();
  await stopAllProcesses();
});

describe("a hub's relay load", () => {
  it("keeps no channel id longer than one can be, and counts the real ones", async () => {
    const load = startHubLoad({ bus: new Bus({ connection: mesh, node: "hub-1", log: silentLogger() }), monitor: { host: "127.0.0.1", port: hub.monitorPort }, log: silentLogger(), intervalMs: 100 });
    try {
      await mesh.flush();
      const event = (stream: string) => JSON.stringify({ at: new Date().toISOString(), peer: "edge-b", stream, status: "open" });
      for (let index = 0; index < 50; index++) rogue.publish("mesh.edge-a.tunnel.relay", event(`${index}`.padEnd(100_000, "x")));
      rogue.publish("mesh.edge-a.tunnel.relay", event("Ab3dE5gH7jK9"));
      await rogue.flush();
      await mesh.flush();
      // polled after the events arrived: the count is what the hub kept
      await eventually(() => load.current().channels > 0, 10_000, "the hub to count edge-a's channel");
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(load.current().channels).toBe(1);
    } finally {
      load.stop();
    }
  });
});
