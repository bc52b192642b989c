/**
 * The hub auditor's own login refused because the node's account is not on the hub yet (a node issued in the
 * hub's keys directory, its push still to come: bench/herd saw `keys issue --hub` race the auditor's rescan) is
 * said as that, a push pending; only a key the keys directory never issued is "not its current ones".
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { connect, jwtAuthenticator } from "@nats-io/transport-node";
import { createUser } from "@nats-io/jwt";
import { createLogger } from "../lib/log.ts";
import { eventually } from "../test/support/ports.ts";
import { initKeys, readSeed, seedFile } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { nodeAccountName, nodeUserJwt } from "./claims.ts";
import { pushAccountClaims } from "./push.ts";
import { startTrustAuditor, type TrustAuditor } from "./auditor.ts";
import { startSecuredHub, stopAllServers, requireTools, type SecuredHub } from "../test/support/trust-servers.ts";

let base: string;
let keys: string;
let hub: SecuredHub;
let auditor: TrustAuditor;
let said = "";
const refusals = () => said.split("\n").filter((line) => line.includes("refused a connection from"));

beforeAll(async () => {
  requireTools();
  base = mkdtempSync(join(tmpdir(), "leafmesh-auditor-pending-"));
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  await issueNode({ dir: keys, node: "edge-a" });
  hub = await startSecuredHub({ keysDir: keys, dir: join(base, "hub") });
  const destination = new Writable({ write: (chunk, _encoding, done) => void ((said += chunk.toString()), done()) });
  auditor = await startTrustAuditor({
    dir: keys,
    servers: [hub.clientUrl],
    tls: hub.security.publisherConnectOptions.tls,
    systemConnectOptions: hub.security.systemConnectOptions,
    resolverDir: hub.security.files.resolverDir,
    log: createLogger({ level: "info", destination }),
  });
}, 60_000);

afterAll(async () => {
  await auditor?.stop();
  await stopAllServers();
  if (base) rmSync(base, { recursive: true, force: true });
});

describe("the auditor's login refused before the node's account is pushed", () => {
  it("says the push is pending, not that the credentials are someone else's", async () => {
    const { changedAccounts } = await issueNode({ dir: keys, node: "edge-b" });
    await expect(auditor.rescan()).rejects.toThrow(/could not watch node 'edge-b'/);
    await eventually(() => refusals().some((line) => line.includes("edge-b")), 5_000, "the auditor's refused login in its log");
    const refused = refusals().filter((line) => line.includes("edge-b"));
    expect(refused.join("\n")).toMatch(/the hub's trust auditor for node 'edge-b' \(hub\/audit\/edge-b\.creds\): refused because the node's account A\w+ is not on this hub yet \(its push is pending/);
    expect(refused.join("\n")).not.toContain("not its current ones");

    // Pushed: the auditor gets in at its next rescan.
    await pushAccountClaims({ servers: [hub.clientUrl], connectOptions: hub.security.systemConnectOptions, jwts: changedAccounts, keysDir: keys });
    expect(await auditor.rescan()).toEqual(["edge-b"]);
  });

  it("still says 'not its current ones' of a key of the node's account that the keys directory never issued", async () => {
    const stray = createUser();
    const seed = new TextDecoder().decode(stray.getSeed());
    const jwt = await nodeUserJwt({ node: "edge-b", userSeed: seed, accountSeed: readSeed(seedFile(keys, nodeAccountName("edge-b"))) });
    // A node user may only be a leaf: as a client it is refused, and the hub's event carries the JWT presented.
    await expect(connect({ servers: hub.clientUrl, tls: hub.security.publisherConnectOptions.tls, authenticator: jwtAuthenticator(jwt, stray.getSeed()), reconnect: false, name: "stray" })).rejects.toThrow();
    await eventually(() => refusals().some((line) => line.includes("'stray'")), 5_000, "the stray key's refusal in the auditor's log");
    expect(refusals().find((line) => line.includes("'stray'"))).toContain(`credentials of node 'edge-b' are not its current ones (user ${stray.getPublicKey()}`);
  });
});
