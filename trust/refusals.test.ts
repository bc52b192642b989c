/**
 * Strangers and stale identities at a secured hub: wrong, expired and revoked
 * credentials, certificates of another CA, plaintext to a TLS port. Each is
 * refused, and the logs (the hub's, the agent leaf's) say which it was.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { Writable } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, type Logger } from "../lib/log.ts";
import { eventually } from "../test/support/ports.ts";
import { explainUserKey, initKeys } from "./key-store.ts";
import { issueNode, revokeNode } from "./node-credentials.ts";
import { pushAccountClaims } from "./push.ts";
import { startSecuredHub, startSecuredLeaf, stopAllServers, requireTools, leafConnections, type SecuredHub, type SecuredLeaf } from "../test/support/trust-servers.ts";
import { startTrustAuditor, type TrustAuditor } from "./auditor.ts";
import { certificateFingerprint, verifyRevocationList } from "./revocation-list.ts";
import { classifyServerLogLine, diagnoseCredentialsFile, explainLeafRefusal, type RefusalCause } from "./denials.ts";
import { readFileSync } from "node:fs";

function capturingLogger(): { log: Logger; lines: () => string } {
  let text = "";
  const destination = new Writable({
    write(chunk, _encoding, done) {
      text += chunk.toString();
      done();
    },
  });
  return { log: createLogger({ level: "info", destination }), lines: () => text };
}

let base: string;
let keys: string;
let strangerKeys: string;
let hub: SecuredHub;
let auditor: TrustAuditor;
const hubLog = capturingLogger();

const quote = JSON.stringify;
function remote(options: { creds: string; cert?: string; key?: string; ca?: string }): string {
  return [
    `credentials: ${quote(options.creds)}`,
    ...(options.cert ? [`tls { cert_file: ${quote(options.cert)}, key_file: ${quote(options.key!)}, ca_file: ${quote(options.ca!)}, timeout: 2 }`] : []),
  ].join("\n");
}
const bundleFile = (dir: string, node: string, file: string) => join(dir, "nodes", node, file);

function causes(log: string): RefusalCause[] {
  return log.split("\n").flatMap((line) => classifyServerLogLine(line)?.cause ?? []);
}

/** Starts a leaf that will not get in, waits until its log or the hub's classifies the refusal, and stops it. */
async function refusedLeaf(name: string, remoteFragment: string, expected: { leaf?: RefusalCause; hub?: RefusalCause }): Promise<SecuredLeaf> {
  const hubLogBefore = hub.log().length;
  const leaf = await startSecuredLeaf({ node: "edge-a", bundleDir: keys, hubLeafUrl: hub.leafUrl, dir: join(base, name), remoteFragment, waitConnected: false });
  try {
    await eventually(
      () => (!expected.leaf || causes(leaf.log()).includes(expected.leaf)) && (!expected.hub || causes(hub.log().slice(hubLogBefore)).includes(expected.hub)),
      10_000,
      `${name}: refusal ${JSON.stringify(expected)}`,
    ).catch((error: Error) => {
      throw new Error(`${error.message}\n--- leaf ---\n${leaf.log().slice(-2000)}\n--- hub ---\n${hub.log().slice(hubLogBefore).slice(-2000)}`, { cause: error });
    });
    expect(await leafConnections(leaf)).toBe(0);
    return leaf;
  } finally {
    await leaf.stop();
  }
}

beforeAll(async () => {
  requireTools();
  base = mkdtempSync(join(tmpdir(), "leafmesh-trust-refusals-"));
  keys = join(base, "keys");
  strangerKeys = join(base, "stranger-keys");
  await initKeys({ dir: keys });
  await initKeys({ dir: strangerKeys });
  await issueNode({ dir: keys, node: "edge-a" });
  await issueNode({ dir: strangerKeys, node: "edge-a" });
  hub = await startSecuredHub({ keysDir: keys, dir: join(base, "hub") });
  auditor = await startTrustAuditor({ dir: keys, servers: [hub.clientUrl], tls: hub.security.publisherConnectOptions.tls, systemConnectOptions: hub.security.systemConnectOptions, log: hubLog.log });
}, 60_000);

afterAll(async () => {
  await auditor?.stop();
  await stopAllServers();
  if (base) rmSync(base, { recursive: true, force: true });
});

describe("refused, saying which", () => {
  it("the node's own identity gets in (the control)", async () => {
    const leaf = await startSecuredLeaf({ node: "edge-a", bundleDir: keys, hubLeafUrl: hub.leafUrl, dir: join(base, "control") });
    expect(await leafConnections(leaf)).toBe(1);
    await leaf.stop();
  });

  it("credentials of another mesh", async () => {
    const creds = bundleFile(strangerKeys, "edge-a", "node.creds");
    await refusedLeaf("wrong-creds", remote({ creds, cert: bundleFile(keys, "edge-a", "node.crt"), key: bundleFile(keys, "edge-a", "node.key"), ca: bundleFile(keys, "edge-a", "ca.crt") }), { leaf: "credentials-refused" });
    const jwt = /JWT-----\s*(\S+)/.exec(readFileSync(creds, "utf8"))![1];
    expect(explainUserKey(keys, jwt)).toMatch(/signed by account A\w+, which this mesh does not know/);
    expect(diagnoseCredentialsFile(creds)).toMatch(/not expired: the hub refuses them because they were revoked or belong to another mesh/);
  });

  it("expired credentials", async () => {
    const issued = await issueNode({ dir: keys, node: "edge-old", expires: Math.floor(Date.now() / 1000) - 60 });
    await pushAccountClaims({ servers: [hub.clientUrl], connectOptions: hub.security.systemConnectOptions, jwts: issued.changedAccounts });
    const creds = join(issued.bundleDir, "node.creds");
    const leaf = await refusedLeaf("expired", remote({ creds, cert: join(issued.bundleDir, "node.crt"), key: join(issued.bundleDir, "node.key"), ca: join(issued.bundleDir, "ca.crt") }), { leaf: "credentials-refused" });
    expect(diagnoseCredentialsFile(creds)).toMatch(/node 'edge-old'\) expired at/);
    // what the agent's supervisor would log for the leaf's own refusal line
    const explained = leaf.log().split("\n").map((line) => explainLeafRefusal(line, { credsFile: creds })).filter(Boolean);
    expect(explained[0]).toMatch(/the hub refused this node's login at 127\.0\.0\.1:\d+: .* expired at/);
  });

  it("revoked credentials", async () => {
    const issued = await issueNode({ dir: keys, node: "edge-gone" });
    const creds = join(issued.bundleDir, "node.creds");
    const revoked = await revokeNode({ dir: keys, node: "edge-gone" });
    await pushAccountClaims({ servers: [hub.clientUrl], connectOptions: hub.security.systemConnectOptions, jwts: [...issued.changedAccounts, revoked.accountJwt] });
    await refusedLeaf("revoked", remote({ creds, cert: join(issued.bundleDir, "node.crt"), key: join(issued.bundleDir, "node.key"), ca: join(issued.bundleDir, "ca.crt") }), { leaf: "credentials-refused" });
    const jwt = /JWT-----\s*(\S+)/.exec(readFileSync(creds, "utf8"))![1];
    expect(explainUserKey(keys, jwt)).toMatch(/node 'edge-gone' .* were revoked at/);
    // issued again: a new key, which the revocation does not cover, gets in (the account changed nothing: no push)
    const again = await issueNode({ dir: keys, node: "edge-gone" });
    expect(again.changedAccounts).toEqual([]);
    expect(again.node.user).not.toBe(revoked.revokedUser);
    const back = await startSecuredLeaf({ node: "edge-gone", bundleDir: keys, hubLeafUrl: hub.leafUrl, dir: join(base, "reissued") });
    expect(await leafConnections(back)).toBe(1);
    await back.stop();
  });

  it("credentials replaced with --rotate: the old key is refused from the push on, the new one gets in; a plain second issue is refused", async () => {
    const issued = await issueNode({ dir: keys, node: "edge-rotated" });
    await pushAccountClaims({ servers: [hub.clientUrl], connectOptions: hub.security.systemConnectOptions, jwts: issued.changedAccounts });
    // the copy already on the node: the bundle directory is written over by the rotation
    const old = join(base, "edge-rotated-old");
    cpSync(issued.bundleDir, old, { recursive: true });
    const before = readFileSync(join(issued.bundleDir, "node.creds"), "utf8");
    await expect(issueNode({ dir: keys, node: "edge-rotated" })).rejects.toThrow(/node 'edge-rotated' already has credentials \(user U\w+, .*Give --rotate/);
    expect(readFileSync(join(issued.bundleDir, "node.creds"), "utf8")).toBe(before);

    const rotated = await issueNode({ dir: keys, node: "edge-rotated", rotate: true });
    expect(rotated.revoked?.revokedUser).toBe(issued.node.user);
    expect(rotated.node.user).not.toBe(issued.node.user);
    // the old certificate is on the signed list peers enforce
    expect(verifyRevocationList(rotated.revoked!.revocationList, readFileSync(join(keys, "ca", "ca.crt"), "utf8")).revoked.map((entry) => entry.certificate)).toContain(
      certificateFingerprint(readFileSync(join(old, "node.crt"))),
    );
    await pushAccountClaims({ servers: [hub.clientUrl], connectOptions: hub.security.systemConnectOptions, jwts: [rotated.revoked!.accountJwt] });
    await refusedLeaf("rotated-old", remote({ creds: join(old, "node.creds"), cert: join(old, "node.crt"), key: join(old, "node.key"), ca: join(old, "ca.crt") }), { leaf: "credentials-refused" });
    const fresh = await startSecuredLeaf({ node: "edge-rotated", bundleDir: keys, hubLeafUrl: hub.leafUrl, dir: join(base, "rotated-new") });
    expect(await leafConnections(fresh)).toBe(1);
    await fresh.stop();
  });

  it("a hub certificate from another CA (the node trusts only its mesh's CA)", async () => {
    await refusedLeaf(
      "foreign-hub-ca",
      remote({ creds: bundleFile(keys, "edge-a", "node.creds"), cert: bundleFile(keys, "edge-a", "node.crt"), key: bundleFile(keys, "edge-a", "node.key"), ca: bundleFile(strangerKeys, "edge-a", "ca.crt") }),
      { leaf: "foreign-ca" },
    );
  });

  it("a node certificate from another CA", async () => {
    await refusedLeaf(
      "foreign-node-cert",
      remote({ creds: bundleFile(keys, "edge-a", "node.creds"), cert: bundleFile(strangerKeys, "edge-a", "node.crt"), key: bundleFile(strangerKeys, "edge-a", "node.key"), ca: bundleFile(keys, "edge-a", "ca.crt") }),
      { hub: "foreign-node-certificate" },
    );
  });

  it("plaintext to the TLS leaf port", async () => {
    const before = hub.log().length;
    const socket = tcpConnect({ host: "127.0.0.1", port: hub.leafPort });
    socket.on("error", () => undefined);
    socket.once("data", () => socket.write('CONNECT {"name":"plaintext"}\r\nPING\r\n'));
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    await eventually(() => causes(hub.log().slice(before)).includes("plaintext-to-tls"), 10_000, "the hub's log to name a plaintext connection").catch((error: Error) => {
      throw new Error(`${error.message}\n--- hub ---\n${hub.log().slice(before)}`, { cause: error });
    });
    await closed;
  });

  it("the hub's auditor says for each refused node which it was: another mesh's, expired, revoked", async () => {
    const expected = ["which this mesh does not know", "credentials of node 'edge-old' expired at", "credentials of node 'edge-gone' (user U"];
    await eventually(() => expected.every((text) => hubLog.lines().includes(text)), 5_000, "refusals in the auditor's log").catch((error: Error) => {
      throw new Error(`${error.message}\n--- auditor ---\n${hubLog.lines()}`, { cause: error });
    });
    expect(hubLog.lines()).toMatch(/refused a connection from 127\.0\.0\.1 \(\w+ 'edge-a'\): credentials of node 'edge-gone' .* were revoked at|revoked at/);
    // no secret and no JWT in the log
    // No JWT (its header always encodes to eyJ0eXAiOiJKV1Qi) and no seed (S + type + 56, standing alone:
    // "SU" inside a public key followed by 50 more characters matched now and then, on random keys).
    expect(hubLog.lines()).not.toMatch(/eyJ0eXAiOiJKV1Qi|(?<![A-Z2-7])S[AUO][A-Z2-7]{56}(?![A-Z2-7])/);
  });
});
