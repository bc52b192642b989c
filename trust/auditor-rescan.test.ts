/**
 * The trust auditor's rescan under a fleet joining at once (auditor.ts): the enrolling hub asks
 * for a rescan after each node it enrols, so a batch of 16 asks 16 times in the same millisecond.
 * Each node is watched by one connection whatever the number of rescans at once, and a node
 * whose watch could not be made (its account not at the hub yet, a hub too busy to answer) is
 * tried again at the next rescan: before, concurrent rescans each walked the same new nodes
 * (16 rescans opened ~130 connections for 16 nodes, and a busy hub timed some out), and a
 * node whose watch failed was marked watched and never audited.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { silentLogger } from "../lib/log.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { pushAccountClaims } from "./push.ts";
import { startTrustAuditor, type TrustAuditor } from "./auditor.ts";
import { requireTools, startSecuredHub, stopAllServers, type SecuredHub } from "../test/support/trust-servers.ts";
import { stopAllProcesses, tempDir } from "../test/support/processes.ts";

let keys: string;
let hub: SecuredHub;
let auditor: TrustAuditor;

/** The auditor's connections at the hub, per node it watches. */
async function auditorConnections(): Promise<Map<string, number>> {
  const connz = (await (await fetch(`http://127.0.0.1:${hub.monitorPort}/connz?limit=1024`)).json()) as { connections?: { name?: string }[] };
  const perNode = new Map<string, number>();
  for (const { name } of connz.connections ?? []) {
    const node = /^leafmesh trust auditor (?!\()(.+)$/.exec(name ?? "")?.[1];
    if (node) perNode.set(node, (perNode.get(node) ?? 0) + 1);
  }
  return perNode;
}

beforeAll(async () => {
  requireTools();
  const base = tempDir("leafmesh-auditor-rescan-");
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  hub = await startSecuredHub({ keysDir: keys, dir: join(base, "hub") });
  auditor = await startTrustAuditor({ dir: keys, servers: [hub.clientUrl], tls: hub.security.publisherConnectOptions.tls, log: silentLogger() });
}, 60_000);

afterAll(async () => {
  await auditor?.stop();
  await stopAllServers();
  await stopAllProcesses();
});

describe("the trust auditor's rescan", () => {
  it("watches each new node once when a batch's rescans come at once", async () => {
    const nodes = Array.from({ length: 8 }, (_, index) => `edge-${index}`);
    const jwts: string[] = [];
    for (const node of nodes) jwts.push(...(await issueNode({ dir: keys, node })).changedAccounts);
    await pushAccountClaims({ servers: [hub.clientUrl], connectOptions: hub.security.systemConnectOptions, jwts });
    const added = await Promise.all(nodes.map(() => auditor.rescan()));
    expect(added.flat().sort()).toEqual([...nodes].sort());
    expect(Object.fromEntries(await auditorConnections())).toEqual(Object.fromEntries(nodes.map((node) => [node, 1])));
  }, 60_000);

  it("tries a node again at the next rescan when its watch could not be made", async () => {
    // Issued in the keys directory, its account not yet at the hub: its audit user's login is refused.
    const { changedAccounts } = await issueNode({ dir: keys, node: "edge-late" });
    await expect(auditor.rescan()).rejects.toThrow();
    await pushAccountClaims({ servers: [hub.clientUrl], connectOptions: hub.security.systemConnectOptions, jwts: changedAccounts });
    expect(await auditor.rescan()).toEqual(["edge-late"]);
    expect((await auditorConnections()).get("edge-late")).toBe(1);
  }, 60_000);
});
