/**
 * The hub's trust auditor (auditor.ts) under a flood from a stolen node's credentials: what it
 * keeps and what it logs stay bounded whatever the node varies. A stolen node speaking the leafnode
 * protocol itself (test/support/rogue-leaf.ts) publishes under a new subject at every message, and
 * a revoked node's credentials knock again and again; every attempt is counted, the hub's counts
 * hold a bounded number of reasons, and a refused login is one log line, not one per attempt.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Writable } from "node:stream";
import { join } from "node:path";
import { createLogger } from "../lib/log.ts";
import { initKeys } from "./key-store.ts";
import { issueNode, revokeNode } from "./node-credentials.ts";
import { pushAccountClaims } from "./push.ts";
import { maxCountedReasons, startTrustAuditor, type TrustAuditor } from "./auditor.ts";
import { connectRogueLeaf, type RogueLeaf } from "../test/support/rogue-leaf.ts";
import { requireTools, startSecuredHub, stopAllServers, type SecuredHub } from "../test/support/trust-servers.ts";
import { stopAllProcesses, tempDir } from "../test/support/processes.ts";
import { eventually } from "../test/support/ports.ts";

let keys: string;
let hub: SecuredHub;
let auditor: TrustAuditor;
let logText = "";
const rogues: RogueLeaf[] = [];

function stolen(node: string): Promise<RogueLeaf> {
  const bundle = join(keys, "nodes", node);
  return connectRogueLeaf({ port: hub.leafPort, creds: join(bundle, "node.creds"), cert: join(bundle, "node.crt"), key: join(bundle, "node.key"), ca: join(bundle, "ca.crt") }).then((rogue) => {
    rogues.push(rogue);
    return rogue;
  });
}

const total = (counts: Map<string, number>, prefix: string) => [...counts].filter(([key]) => key.startsWith(prefix)).reduce((sum, [, count]) => sum + count, 0);

beforeAll(async () => {
  requireTools();
  const base = tempDir("leafmesh-auditor-flood-");
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-gone"]) await issueNode({ dir: keys, node });
  hub = await startSecuredHub({ keysDir: keys, dir: join(base, "hub") });
  const destination = new Writable({
    write(chunk, _encoding, done) {
      logText += chunk.toString();
      done();
    },
  });
  auditor = await startTrustAuditor({ dir: keys, servers: [hub.clientUrl], tls: hub.security.publisherConnectOptions.tls, systemConnectOptions: hub.security.systemConnectOptions, log: createLogger({ level: "info", destination }) });
}, 60_000);

afterAll(async () => {
  for (const rogue of rogues) rogue.close();
  await auditor?.stop();
  await stopAllServers();
  await stopAllProcesses();
});

describe("the trust auditor under a flood", () => {
  it("counts every overstepping message, in a bounded number of reasons however many subjects the node makes up", async () => {
    const rogue = await stolen("edge-a");
    const sent = maxCountedReasons * 3;
    for (let index = 0; index < sent; index++) rogue.publish(`mesh.made-up-${index}.tunnel.path`, "forged");
    await rogue.flush();
    await eventually(() => total(auditor.counts(), "edge-a ") >= sent, 20_000, `the auditor to count ${sent} denials`).catch((error: Error) => {
      throw new Error(`${error.message}: counted ${total(auditor.counts(), "edge-a ")}`, { cause: error });
    });
    expect(total(auditor.counts(), "edge-a ")).toBe(sent);
    expect([...auditor.counts().keys()].filter((key) => key.startsWith("edge-a ")).length).toBeLessThanOrEqual(maxCountedReasons + 1);
    expect(auditor.counts().get("edge-a other denials")).toBeGreaterThan(0);
  });

  it("a revoked node knocking again and again is counted each time and logged once", async () => {
    const revoked = await revokeNode({ dir: keys, node: "edge-gone" });
    await pushAccountClaims({ servers: [hub.clientUrl], connectOptions: hub.security.systemConnectOptions, jwts: [revoked.accountJwt] });
    const attempts = 30;
    for (let index = 0; index < attempts; index++) {
      const rogue = await stolen("edge-gone");
      await rogue.closed;
    }
    const refusedKey = () => [...auditor.counts().keys()].find((key) => key.startsWith("refused ") && key.includes("edge-gone"));
    await eventually(() => (auditor.counts().get(refusedKey() ?? "") ?? 0) >= attempts, 20_000, `the auditor to count ${attempts} refused logins`).catch((error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify([...auditor.counts()].filter(([key]) => key.startsWith("refused")))}`, { cause: error });
    });
    const lines = logText.split("\n").filter((line) => line.includes("refused a connection") && line.includes("edge-gone"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/were revoked at/);
  });
});
