/**
 * A stolen site bundle against the hubs (trust/site-claims.ts). The bundle used to hold a user of
 * the system account (`sys.creds`), for account updates to reach the site's resolver; with it a
 * client (or a leaf speaking the protocol itself) deleted every stream of the mesh with one
 * `$JS.API.ACCOUNT.PURGE` and listed every connection of every account. Now the bundle holds a
 * leaf-only user of `site-claims`, which takes the pushed account updates and reaches nothing else.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { connect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { createUser, decode, fmtCreds, type User } from "@nats-io/jwt";
import { systemUserJwt } from "./claims.ts";
import { writeSecretFile } from "./secret-files.ts";
import { initKeys, readKeyState, readSeed, seedFile } from "./key-store.ts";
import { issueNode, revokeNode } from "./node-credentials.ts";
import { issueSite } from "./site-store.ts";
import { pushAccountClaims } from "./push.ts";
import { siteClaimsCredsFile } from "./site-claims.ts";
import { connectRogueLeaf, type RogueLeaf } from "../test/support/rogue-leaf.ts";
import { requireTools, startSecuredHub, stopAllServers, type SecuredHub } from "../test/support/trust-servers.ts";
import { stopAllProcesses, tempDir } from "../test/support/processes.ts";
import { eventually } from "../test/support/ports.ts";

let keys: string;
let bundle: string;
let hub: SecuredHub;
let mesh: NatsConnection;
let rogue: RogueLeaf;

async function streamNames(): Promise<string[]> {
  const names: string[] = [];
  for await (const name of (await jetstreamManager(mesh)).streams.names()) names.push(name);
  return names.sort();
}

beforeAll(async () => {
  requireTools();
  const base = tempDir("leafmesh-site-claims-");
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
  await issueSite({ dir: keys, site: "shop", members: ["edge-a"] });
  bundle = join(keys, "sites", "shop");
  hub = await startSecuredHub({ keysDir: keys, dir: join(base, "hub") });
  mesh = await connect({ servers: hub.clientUrl, ...hub.security.publisherConnectOptions });
  for (const bucket of ["mesh-catalog", "mesh-nodes"]) await (await new Kvm(mesh).create(bucket)).put("k", "v");
  rogue = await connectRogueLeaf({ port: hub.leafPort, creds: join(bundle, siteClaimsCredsFile), cert: join(bundle, "site.crt"), key: join(bundle, "site.key"), ca: join(bundle, "ca.crt") });
  rogue.subscribe("_INBOX.>");
  for (const subject of ["$SYS.REQ.CLAIMS.UPDATE", ">"]) rogue.subscribe(subject);
  await rogue.flush();
}, 60_000);

afterAll(async () => {
  rogue?.close();
  await mesh?.close().catch(() => undefined);
  await stopAllServers();
  await stopAllProcesses();
});

describe("a stolen site bundle", () => {
  it("holds no user of the system account, and its account-update user opens no client connection", async () => {
    const state = readKeyState(keys);
    expect(existsSync(join(bundle, "sys.creds"))).toBe(false);
    const claims = decode<User>(/JWT-----\s*(\S+)/.exec(readFileSync(join(bundle, siteClaimsCredsFile), "utf8"))![1]);
    expect(claims.iss).toBe(state.siteClaimsAccount);
    expect(claims.iss).not.toBe(state.systemAccount);
    const client = await connect({
      servers: hub.clientUrl,
      authenticator: credsAuthenticator(readFileSync(join(bundle, siteClaimsCredsFile))),
      tls: { cert: readFileSync(join(bundle, "site.crt"), "utf8"), key: readFileSync(join(bundle, "site.key"), "utf8"), ca: readFileSync(join(bundle, "ca.crt"), "utf8") },
      reconnect: false,
    }).then(
      async (connection) => {
        await connection.close();
        return "connected";
      },
      (error: Error) => error.message,
    );
    expect(client).toMatch(/Authorization Violation/i);
  });

  it("speaking the leafnode protocol with it, purges nothing and lists no connection", async () => {
    const before = await streamNames();
    expect(before).toEqual(["KV_mesh-catalog", "KV_mesh-nodes"]);
    const state = readKeyState(keys);
    rogue.publish(`$JS.API.ACCOUNT.PURGE.${state.meshAccount}`, "", "_INBOX.purge");
    rogue.publish(`$JS.hub.API.ACCOUNT.PURGE.${state.meshAccount}`, "", "_INBOX.purge-domain");
    rogue.publish("$JS.API.STREAM.DELETE.KV_mesh-catalog", "", "_INBOX.delete");
    rogue.publish("$SYS.REQ.SERVER.PING.CONNZ", "", "_INBOX.connz");
    rogue.publish(`$SYS.REQ.ACCOUNT.${state.meshAccount}.CONNZ`, "", "_INBOX.mesh-connz");
    rogue.publish("$SYS.REQ.SERVER.PING", "", "_INBOX.ping");
    await rogue.flush();
    // a round trip through the hub's JetStream after them: they were handled (or dropped) before
    await (await jetstreamManager(mesh)).streams.info("KV_mesh-catalog");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(rogue.received.filter((message) => message.subject.startsWith("_INBOX."))).toEqual([]);
    expect(await streamNames()).toEqual(before);
  });

  it("issued again, a site whose older bundle held a system-account user has that user revoked at the hubs", async () => {
    // what an older leafmesh wrote into the bundle
    const user = createUser();
    const oldJwt = await systemUserJwt({ userSeed: new TextDecoder().decode(user.getSeed()), accountSeed: readSeed(seedFile(keys, "SYS")) });
    writeSecretFile(join(bundle, "sys.creds"), fmtCreds(oldJwt, user));
    const tls = { cert: readFileSync(join(bundle, "site.crt"), "utf8"), key: readFileSync(join(bundle, "site.key"), "utf8"), ca: readFileSync(join(bundle, "ca.crt"), "utf8") };
    const asOldSystemUser = () => connect({ servers: hub.clientUrl, authenticator: credsAuthenticator(readFileSync(join(keys, "old-sys.creds"))), tls, reconnect: false });
    writeSecretFile(join(keys, "old-sys.creds"), readFileSync(join(bundle, "sys.creds")));
    const before = await asOldSystemUser();
    expect((await before.request("$SYS.REQ.SERVER.PING", "", { timeout: 5_000 })).string()).toMatch(/"server"/);
    const closed = before.closed();
    const again = await issueSite({ dir: keys, site: "shop", members: ["edge-a"] });
    await pushAccountClaims({ servers: [hub.clientUrl], connectOptions: hub.security.systemConnectOptions, jwts: again.changedAccounts });
    await Promise.race([closed, new Promise((_resolve, reject) => setTimeout(() => reject(new Error("the old system user's connection stayed open after the push")), 10_000))]);
    expect(existsSync(join(bundle, "sys.creds"))).toBe(false);
    expect(await asOldSystemUser().then((connection) => connection.close().then(() => "connected"), (error: Error) => error.message)).toMatch(/Authorization Violation/i);
  });

  it("still takes the account updates pushed at the hubs (what the site's resolver needs)", async () => {
    const revoked = await revokeNode({ dir: keys, node: "edge-b" });
    await pushAccountClaims({ servers: [hub.clientUrl], connectOptions: hub.security.systemConnectOptions, jwts: [revoked.accountJwt] });
    await eventually(() => rogue.received.some((message) => message.subject === "$SYS.REQ.CLAIMS.UPDATE" && message.payload === revoked.accountJwt), 10_000, "the pushed update over the site's leaf");
  });
});
