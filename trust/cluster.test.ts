/**
 * Two hubs in one cluster (routes with TLS of the mesh CA): account updates
 * pushed to ONE hub apply on both without a restart — a node issued while the
 * hubs run joins at the other hub, a node revoked at one hub is cut at the other.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { Writable } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { eventually, freePort } from "../test/support/ports.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { startSecuredHub, startSecuredLeaf, stopAllServers, requireTools, leafConnections, type SecuredHub, type SecuredLeaf } from "../test/support/trust-servers.ts";
import { keysInProcess } from "../test/support/keys-command.ts";
import { startTrustAuditor, type TrustAuditor } from "./auditor.ts";
import { connectRogueLeaf } from "../test/support/rogue-leaf.ts";
import { createLogger } from "../lib/log.ts";

let auditLog = "";
let auditor: TrustAuditor;

let base: string;
let keys: string;
let hubs: SecuredHub[];
const leaves = new Map<string, SecuredLeaf>();
const connections: NatsConnection[] = [];

async function client(node: string): Promise<NatsConnection> {
  const leaf = leaves.get(node)!;
  const connection = await connect({ servers: leaf.clientUrl, ...leaf.security.clientConnectOptions });
  connections.push(connection);
  return connection;
}

/** Resolves once `from` has delivered a relay frame to `to`. */
async function relays(from: NatsConnection, fromNode: string, to: NatsConnection, toNode: string, what: string): Promise<void> {
  const seen: string[] = [];
  const subscription = to.subscribe(`relay.${toNode}.>`, {
    callback: (_error, message) => {
      seen.push(message.string());
    },
  });
  await to.flush();
  try {
    await eventually(async () => {
      from.publish(`relay.${toNode}.${fromNode}.${what}`, what);
      await from.flush();
      return seen.includes(what);
    }, 10_000, `a relay frame ${fromNode} → ${toNode} (${what})`);
  } finally {
    subscription.unsubscribe();
  }
}

beforeAll(async () => {
  requireTools();
  base = mkdtempSync(join(tmpdir(), "leafmesh-trust-cluster-"));
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
  const clusterPorts = [await freePort(), await freePort()];
  hubs = await Promise.all(
    ["hub-1", "hub-2"].map((name, index) => startSecuredHub({ keysDir: keys, dir: join(base, name), name, cluster: { port: clusterPorts[index], routes: clusterPorts } })),
  );
  await eventually(async () => {
    const routes = await Promise.all(hubs.map(async (hub) => ((await (await fetch(`http://127.0.0.1:${hub.monitorPort}/routez`)).json()) as { num_routes: number }).num_routes));
    return routes.every((count) => count >= 1);
  }, 15_000, "the hubs' routes (TLS with the mesh CA)");
  auditor = await startTrustAuditor({
    dir: keys,
    servers: [hubs[0].clientUrl],
    tls: hubs[0].security.publisherConnectOptions.tls,
    log: createLogger({ destination: new Writable({ write: (chunk, _encoding, done) => ((auditLog += chunk.toString()), done()) }) }),
  });
  leaves.set("edge-a", await startSecuredLeaf({ node: "edge-a", bundleDir: keys, hubLeafUrl: hubs[0].leafUrl, dir: join(base, "edge-a") }));
  leaves.set("edge-b", await startSecuredLeaf({ node: "edge-b", bundleDir: keys, hubLeafUrl: hubs[1].leafUrl, dir: join(base, "edge-b") }));
}, 90_000);

afterAll(async () => {
  await auditor?.stop();
  for (const connection of connections) await connection.close().catch(() => undefined);
  await stopAllServers();
  if (base) rmSync(base, { recursive: true, force: true });
});

describe("a hub cluster takes account updates from any one hub", () => {
  it("relays across the cluster between nodes on different hubs", async () => {
    await relays(await client("edge-a"), "edge-a", await client("edge-b"), "edge-b", "across");
  });

  it("a node issued while the hubs run (pushed to hub-1) joins at hub-2 and relays with the others", async () => {
    const output = await keysInProcess("issue", "--dir", keys, "--node", "edge-n", "--hub", hubs[0].clientUrl);
    expect(output).toMatch(/pushed account A\w+ to hub hub-1/);
    leaves.set("edge-n", await startSecuredLeaf({ node: "edge-n", bundleDir: keys, hubLeafUrl: hubs[1].leafUrl, dir: join(base, "edge-n") }));
    await relays(await client("edge-n"), "edge-n", await client("edge-a"), "edge-a", "from-new");
    await relays(await client("edge-a"), "edge-a", await client("edge-n"), "edge-n", "to-new");

    // the hub-1 auditor picks the new node up and sees what it tries at hub-2
    expect(await auditor.rescan()).toEqual(["edge-n"]);
    const bundle = join(keys, "nodes", "edge-n");
    const rogue = await connectRogueLeaf({ port: hubs[1].leafPort, creds: join(bundle, "node.creds"), cert: join(bundle, "node.crt"), key: join(bundle, "node.key"), ca: join(bundle, "ca.crt") });
    try {
      await eventually(() => {
        rogue.publish("mesh.edge-a.dns.stats", "forged by edge-n");
        return auditLog.includes("denied: node 'edge-n' publishes as node 'edge-a'");
      }, 10_000, "the auditor at hub-1 to report edge-n's forgery at hub-2");
    } finally {
      rogue.close();
    }
  });

  it("a node revoked at hub-1 is cut at hub-2 within seconds; the others stay", async () => {
    const before = Date.now();
    await keysInProcess("revoke", "--dir", keys, "--node", "edge-b", "--hub", hubs[0].clientUrl);
    await eventually(async () => (await leafConnections(leaves.get("edge-b")!)) === 0, 5_000, "edge-b's leaf connection to hub-2 to close");
    expect(Date.now() - before).toBeLessThan(5_000);
    expect(await leafConnections(leaves.get("edge-a")!)).toBe(1);
    expect(await leafConnections(leaves.get("edge-n")!)).toBe(1);
    await relays(await client("edge-a"), "edge-a", await client("edge-n"), "edge-n", "after-revoke");
    for (const hub of hubs) expect(hub.log().match(/Server is ready/g)?.length).toBe(1);
  });
});
