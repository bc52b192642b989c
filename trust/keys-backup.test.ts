/**
 * A keys directory restored from a backup made before a revocation: the next ordinary change
 * (issuing another node with --hub) must not bring the revoked node back.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect } from "@nats-io/transport-node";
import { Writable } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "../test/support/ports.ts";
import { initKeys, readKeyState } from "./key-store.ts";
import { createUser, type Account } from "@nats-io/jwt";
import { resignSystemAccountWith } from "./site-claims.ts";
import { accountRevocations, lookupAccountJwt } from "./hub-revocations.ts";
import { verifiedClaims } from "./jwt-claims.ts";
import { issueNode } from "./node-credentials.ts";
import { startSecuredHub, startSecuredLeaf, stopAllServers, requireTools, leafConnections } from "../test/support/trust-servers.ts";
import { runKeysCommand } from "../cli/keys.ts";
import { loadHubSecurity } from "./security.ts";
import { certificateFingerprint, verifyRevocationList, type RevocationList } from "./revocation-list.ts";
import { openRevocationsBucket } from "./revocations.ts";
import { revocationListKey } from "../bus/subjects.ts";

let base: string;
beforeAll(() => {
  requireTools();
  base = mkdtempSync(join(tmpdir(), "leafmesh-keys-backup-"));
});
afterAll(async () => {
  await stopAllServers();
  if (base) rmSync(base, { recursive: true, force: true });
});

async function keys(args: string[]): Promise<{ code: number; output: string }> {
  let output = "";
  const sink = new Writable({ write(chunk, _encoding, done) { output += chunk.toString(); done(); } });
  const code = await runKeysCommand(args, { stdout: sink, stderr: sink }, {});
  return { code, output };
}

describe("a keys directory restored from a backup", () => {
  it("does not undo a revocation the hubs already hold", async () => {
    const dir = join(base, "keys");
    const backup = join(base, "backup");
    await initKeys({ dir });
    for (const node of ["edge-a", "edge-b"]) await issueNode({ dir, node });
    cpSync(dir, backup, { recursive: true, preserveTimestamps: true });
    const hub = await startSecuredHub({ keysDir: dir, dir: join(base, "hub") });
    const a = await startSecuredLeaf({ node: "edge-a", bundleDir: backup, hubLeafUrl: hub.leafUrl, dir: join(base, "edge-a") });
    const revoked = await keys(["revoke", "--dir", dir, "--node", "edge-a", "--hub", hub.clientUrl]);
    expect(revoked.code, revoked.output).toBe(0);
    await eventually(async () => (await leafConnections(a)) === 0, 5_000, "edge-a cut");

    rmSync(dir, { recursive: true, force: true });
    cpSync(backup, dir, { recursive: true, preserveTimestamps: true });
    const issued = await keys(["issue", "--dir", dir, "--node", "edge-c", "--hub", hub.clientUrl]);
    expect(issued.code, issued.output).toBe(0);
    // edge-a retries about every second: wait until it either got in, or was refused three times in a row
    const aLog = a.log().length;
    const since = () => a.log().slice(aLog);
    const gotIn = () => since().includes("Adding JetStream Domain Mapping");
    await eventually(() => gotIn() || (since().match(/Authorization Violation/g) ?? []).length >= 3, 20_000, "edge-a's attempts after the push");
    expect(gotIn(), since().slice(-2000)).toBe(false);
    expect(await leafConnections(a)).toBe(0);
    expect(issued.output).toContain("revocation(s) of node 'edge-a'");
    // and the directory knows it again: edge-a is revoked there, so the next change keeps it out too
    const listed = await keys(["list", "--dir", dir]);
    expect(listed.output).toMatch(/edge-a\s+revoked/);
  });

  it("nor at a hub restart, when the change made there was not pushed", async () => {
    const dir = join(base, "keys-2");
    const backup = join(base, "backup-2");
    await initKeys({ dir });
    for (const node of ["edge-a", "edge-b"]) await issueNode({ dir, node });
    cpSync(dir, backup, { recursive: true, preserveTimestamps: true });
    const hub = await startSecuredHub({ keysDir: dir, dir: join(base, "hub-2") });
    const a = await startSecuredLeaf({ node: "edge-a", bundleDir: backup, hubLeafUrl: hub.leafUrl, dir: join(base, "edge-a-2") });
    const revoked = await keys(["revoke", "--dir", dir, "--node", "edge-a", "--hub", hub.clientUrl]);
    expect(revoked.code, revoked.output).toBe(0);
    await eventually(async () => (await leafConnections(a)) === 0, 5_000, "edge-a cut");

    rmSync(dir, { recursive: true, force: true });
    cpSync(backup, dir, { recursive: true, preserveTimestamps: true });
    // JWTs carry their time in seconds, and the hub keeps its stored one at an equal time: sign in a later second
    const revokedIn = Math.floor(Date.now() / 1000);
    await eventually(() => Math.floor(Date.now() / 1000) > revokedIn, 3_000, "the next second");
    // signed in the restored directory, pushed nowhere: the hub reads it at its next start
    const issued = await keys(["issue", "--dir", dir, "--node", "edge-c"]);
    expect(issued.code, issued.output).toBe(0);
    const aLog = a.log().length;
    await hub.restart();
    const since = () => a.log().slice(aLog);
    const gotIn = () => since().includes("Adding JetStream Domain Mapping");
    await eventually(() => gotIn() || (since().match(/Authorization Violation/g) ?? []).length >= 3, 20_000, "edge-a's attempts after the restart");
    expect(gotIn(), since().slice(-2000)).toBe(false);
    expect(await leafConnections(a)).toBe(0);
    // what the hub process logs as an error at start
    expect(loadHubSecurity(dir, { resolverDir: join(base, "hub-2", "hub-accounts") }).revocationsKept.join("\n")).toContain("node 'edge-a'");
  });

  it("keeps the certificates the hubs' revocation list names, and a revocation made there reaches the hubs' list", async () => {
    const dir = join(base, "keys-3");
    const backup = join(base, "backup-3");
    await initKeys({ dir });
    for (const node of ["edge-a", "edge-b", "edge-c"]) await issueNode({ dir, node });
    cpSync(dir, backup, { recursive: true, preserveTimestamps: true });
    const hub = await startSecuredHub({ keysDir: dir, dir: join(base, "hub-3") });
    const fingerprint = (node: string) => certificateFingerprint(readFileSync(join(backup, "nodes", node, "node.crt")));
    expect((await keys(["revoke", "--dir", dir, "--node", "edge-a", "--hub", hub.clientUrl])).code).toBe(0);
    expect((await hubList(hub.clientUrl, dir)).revoked.map((entry) => entry.certificate)).toEqual([fingerprint("edge-a")]);

    rmSync(dir, { recursive: true, force: true });
    cpSync(backup, dir, { recursive: true, preserveTimestamps: true });
    const revoked = await keys(["revoke", "--dir", dir, "--node", "edge-b", "--hub", hub.clientUrl]);
    expect(revoked.code, revoked.output).toBe(0);
    const list = await hubList(hub.clientUrl, dir);
    expect(list.revoked.map((entry) => entry.certificate).sort(), revoked.output).toEqual([fingerprint("edge-a"), fingerprint("edge-b")].sort());
    // and what the command said is what the hubs hold
    expect(revoked.output).toContain(`revocation list version ${list.version} published`);
  });
  it("keeps a system user's revocation the hubs hold (a site's older system user), and pushes", async () => {
    const dir = join(base, "keys-4");
    const backup = join(base, "backup-4");
    await initKeys({ dir });
    await issueNode({ dir, node: "edge-a" });
    cpSync(dir, backup, { recursive: true, preserveTimestamps: true });
    const hub = await startSecuredHub({ keysDir: dir, dir: join(base, "hub-4") });
    // what `keys issue-site` does to an older site bundle's system user
    const revokedUser = createUser().getPublicKey();
    await resignSystemAccountWith(dir, { [revokedUser]: Math.floor(Date.now() / 1000) });
    expect((await keys(["push", "--dir", dir, "--hub", hub.clientUrl])).code).toBe(0);

    rmSync(dir, { recursive: true, force: true });
    cpSync(backup, dir, { recursive: true, preserveTimestamps: true });
    const pushed = await keys(["push", "--dir", dir, "--hub", hub.clientUrl]);
    expect(pushed.code, pushed.output).toBe(0);
    expect(pushed.output).toContain("revocation(s) of the system account");
    const security = loadHubSecurity(dir, { resolverDir: join(dir, "unused") });
    const connection = await connect({ ...security.systemConnectOptions, servers: [hub.clientUrl], reconnect: false });
    try {
      const held = await lookupAccountJwt(connection, readKeyState(dir).systemAccount, 5_000);
      expect(Object.keys(accountRevocations(verifiedClaims<Account>(held!)))).toContain(revokedUser);
    } finally {
      await connection.close();
    }
  });
});

async function hubList(url: string, dir: string): Promise<RevocationList> {
  const security = loadHubSecurity(dir, { resolverDir: join(dir, "unused") });
  const connection = await connect({ ...security.publisherConnectOptions, servers: [url], reconnect: false });
  try {
    const entry = await (await openRevocationsBucket(connection)).get(revocationListKey);
    return verifyRevocationList(entry!.value, readFileSync(join(dir, "ca", "ca.crt"), "utf8"));
  } finally {
    await connection.close();
  }
}
