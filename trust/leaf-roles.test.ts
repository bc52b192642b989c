/**
 * A stolen node's leaf connection claiming another role in its CONNECT (test/support/rogue-leaf.ts):
 * the hub's side of the link (`hub: true`), the hubs' JetStream domain or another node's. nats-server
 * decides JetStream domain mappings and denies per connection and per account; whatever the node
 * claims, it stays in its own account, where nothing of another node's or of the mesh's JetStream
 * arrives and nothing it sends deletes a stream. A regression test for what the per-node accounts
 * hold (docs/trust.md, "Who may do what").
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { jetstreamManager } from "@nats-io/jetstream";
import { initKeys, readKeyState } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { connectRogueLeaf } from "../test/support/rogue-leaf.ts";
import { requireTools, startSecuredHub, startSecuredLeaf, stopAllServers, type SecuredHub } from "../test/support/trust-servers.ts";
import { stopAllProcesses, tempDir } from "../test/support/processes.ts";

let keys: string;
let hub: SecuredHub;
let mesh: NatsConnection;
let edgeB: NatsConnection;

async function streamNames(): Promise<string[]> {
  const names: string[] = [];
  for await (const name of (await jetstreamManager(mesh)).streams.names()) names.push(name);
  return names;
}

beforeAll(async () => {
  requireTools();
  const base = tempDir("leafmesh-leaf-roles-");
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
  hub = await startSecuredHub({ keysDir: keys, dir: join(base, "hub") });
  mesh = await connect({ servers: hub.clientUrl, ...hub.security.publisherConnectOptions });
  await (await new Kvm(mesh).create("mesh-catalog")).put("k", "v");
  const leaf = await startSecuredLeaf({ node: "edge-b", bundleDir: join(keys, "nodes", "edge-b"), hubLeafUrl: `tls://127.0.0.1:${hub.leafPort}`, dir: join(base, "edge-b") });
  edgeB = await connect({ servers: leaf.clientUrl, ...leaf.security.clientConnectOptions });
}, 60_000);

afterAll(async () => {
  await edgeB?.close().catch(() => undefined);
  await mesh?.close().catch(() => undefined);
  await stopAllServers();
  await stopAllProcesses();
});

describe("a stolen node claiming another role on its leaf connection", () => {
  for (const claim of [{ hub: true }, { domain: "hub", jetstream: true }, { domain: "hub", jetstream: true, hub: true }, { domain: "edge-b", jetstream: true }]) {
    it(`${JSON.stringify(claim)}: hears nothing of edge-b's or the hubs' JetStream, deletes nothing`, async () => {
      const bundle = join(keys, "nodes", "edge-a");
      const rogue = await connectRogueLeaf({ port: hub.leafPort, creds: join(bundle, "node.creds"), cert: join(bundle, "node.crt"), key: join(bundle, "node.key"), ca: join(bundle, "ca.crt"), connect: claim });
      try {
        for (const subject of [">", "$JS.hub.API.>", "$JS.API.>", "_INBOX.>", "$JS.edge-b.API.>"]) rogue.subscribe(subject);
        await rogue.flush();
        rogue.publish(`$JS.API.ACCOUNT.PURGE.${readKeyState(keys).meshAccount}`, "", "_INBOX_edge-a.purge");
        rogue.publish("$JS.hub.API.STREAM.DELETE.KV_mesh-catalog", "", "_INBOX_edge-a.delete");
        rogue.publish("$JS.API.STREAM.DELETE.KV_mesh-catalog", "", "_INBOX_edge-a.delete-plain");
        // edge-b's own JetStream calls, in its domain and the hubs': a shadowing leaf would take them
        await edgeB.request("$JS.edge-b.API.INFO", "", { timeout: 5_000 });
        await edgeB.request("$JS.hub.API.STREAM.INFO.KV_mesh-catalog", "", { timeout: 5_000 });
        await rogue.flush();
        expect(rogue.errors).toEqual([]);
        expect(rogue.received.map((message) => message.subject)).toEqual([]);
        expect(await streamNames()).toEqual(["KV_mesh-catalog"]);
      } finally {
        rogue.close();
      }
    });
  }
});
