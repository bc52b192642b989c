import { describe, expect, it } from "vitest";
import { decode, createAccount, createOperator, createUser, type Account, type User } from "@nats-io/jwt";
import { rpcMethods } from "../bus/rpc.ts";
import { nodeAccountJwt, nodeUserJwt, meshAccountJwt, oversteppingReason, subjectMatches, nodeInboxPrefix, nodeUserPermissions, localClientPermissions } from "./claims.ts";
import { outdatedAccountReason } from "./outdated-accounts.ts";

const seed = (key: { getSeed(): Uint8Array }) => new TextDecoder().decode(key.getSeed());

describe("subjectMatches", () => {
  it.each([
    ["mesh.edge-a.>", "mesh.edge-a.dns.stats", true],
    ["mesh.edge-a.>", "mesh.edge-a", false],
    ["relay.*.edge-a.>", "relay.edge-b.edge-a.c1", true],
    ["relay.*.edge-a.>", "relay.edge-b.edge-c.c1", false],
    ["$JS.API.STREAM.INFO.KV_mesh-catalog", "$JS.API.STREAM.INFO.KV_mesh-catalog", true],
    ["$JS.API.STREAM.INFO.KV_mesh-catalog", "$JS.API.STREAM.INFO.KV_mesh-catalog.x", false],
    ["a.*", "a.b.c", false],
  ])("%s ~ %s = %s", (pattern, subject, expected) => expect(subjectMatches(pattern, subject)).toBe(expected));
});

describe("oversteppingReason (what the hub's auditor reports)", () => {
  it.each([
    ["mesh.edge-a.dns.stats", undefined],
    ["mesh.edge-b.dns.stats", "publishes as node 'edge-b'"],
    ["$KV.mesh-nodes.edge-a", undefined],
    ["$KV.mesh-nodes.edge-b", "writes the node record of 'edge-b'"],
    ["$KV.mesh-catalog.services.shop.web", "writes the catalog"],
    ["$JS.API.$KV.mesh-catalog.x", "writes the catalog"],
    ["$JS.hub.API.$KV.mesh-nodes.edge-b", "writes the node record of 'edge-b'"],
    ["$JS.API.CONSUMER.CREATE.KV_mesh-catalog", undefined],
    ["$JS.API.STREAM.INFO.KV_mesh-nodes", undefined],
    ["$JS.API.DIRECT.GET.KV_mesh-nodes.$KV.mesh-nodes.edge-b", undefined],
    ["$JS.API.STREAM.PURGE.KV_mesh-catalog", "calls JetStream STREAM.PURGE.KV_mesh-catalog on the catalog"],
    ["$JS.API.STREAM.CREATE.KV_mesh-nodes", "calls JetStream STREAM.CREATE.KV_mesh-nodes in the hub domain"],
    ["rpc.edge-b.status", "calls rpc.edge-b.status"],
    // a peer's punch method is imported for every peer; its own rpc is its own business
    ["rpc.edge-b.tunnel-punch", undefined],
    ["rpc.edge-a.status", undefined],
    ["$SYS.REQ.SERVER.PING", "sends system request"],
  ])("%s → %s", (subject, expected) => {
    const reason = oversteppingReason("edge-a", subject);
    if (expected === undefined) expect(reason).toBeUndefined();
    else expect(reason).toContain(expected);
  });
});

describe("node user permissions survive an account update at the hub", () => {
  it("every subject a node subscribes to is in its publish list too (a hub re-checks a leaf's subscriptions against it)", () => {
    const permissions = nodeUserPermissions("edge-a");
    const published = permissions.pub?.allow ?? [];
    for (const subject of permissions.sub?.allow ?? []) expect(published, subject).toContain(subject);
  });

  it("the node's local clients are still held to what the node publishes", () => {
    const local = localClientPermissions("edge-a").publish.allow;
    expect(local).not.toContain("relay.edge-a.>");
    expect(local).not.toContain("$JS.M.>");
    expect(local).toContain("relay.*.edge-a.>");
  });
});

describe("claims", () => {
  it("node accounts set every limit explicitly, export only the node's own subjects and import relay frames per peer", async () => {
    const operator = createOperator();
    const mesh = createAccount();
    const a = createAccount();
    const b = createAccount();
    const jwt = await nodeAccountJwt({ node: "edge-a", operatorSeed: seed(operator), accountSeed: seed(a), meshAccount: mesh.getPublicKey(), peers: [{ node: "edge-a", account: a.getPublicKey() }, { node: "edge-b", account: b.getPublicKey() }], revocations: { UABC: 5 } });
    const claims = decode<Account>(jwt);
    expect(claims.iss).toBe(operator.getPublicKey());
    // subscriptions and leaf connections bounded (trust/exhaustion.test.ts), the rest stated
    expect(claims.nats.limits).toMatchObject({ conn: -1, leaf: 16, subs: 1024, data: -1, payload: -1, imports: -1, exports: -1, disk_storage: 0 });
    expect(claims.nats.exports?.map((entry) => entry.subject).sort()).toEqual(["mesh.edge-a.>", "relay.*.edge-a.>", "rpc.edge-a.>"]);
    const relayImports = claims.nats.imports?.filter((entry) => entry.subject.startsWith("relay."));
    expect(relayImports).toEqual([expect.objectContaining({ subject: "relay.edge-a.edge-b.>", account: b.getPublicKey(), type: "stream" })]);
    expect(claims.nats.imports?.some((entry) => entry.subject === "$KV.mesh-nodes.edge-a")).toBe(true);
    expect(claims.nats.imports?.some((entry) => entry.subject.startsWith("$KV.mesh-catalog"))).toBe(false);
    expect(claims.nats.revocations).toEqual({ UABC: 5 });
    // its own $JS.API.INFO import keeps nats-server from importing the system account's whole JetStream API
    expect(claims.nats.imports).toContainEqual(expect.objectContaining({ subject: "$JS.API.INFO", account: mesh.getPublicKey(), type: "service" }));
    expect(outdatedAccountReason(claims)).toBeUndefined();
    expect(outdatedAccountReason({ ...claims, nats: { ...claims.nats, imports: claims.nats.imports?.filter((entry) => entry.subject !== "$JS.API.INFO") } })).toMatch(/could purge the mesh's JetStream/);
    // signed before the limits: unbounded subscriptions and leaf connections at the hubs
    expect(outdatedAccountReason({ ...claims, nats: { ...claims.nats, limits: { ...claims.nats.limits, subs: -1, leaf: -1 } } })).toMatch(/could exhaust a hub's memory/);
    expect(outdatedAccountReason({ ...claims, nats: { ...claims.nats, limits: { ...claims.nats.limits, leaf: -1 } } })).toMatch(/subs 1024, leaf -1/);

    const meshJwt = decode<Account>(await meshAccountJwt({ operatorSeed: seed(operator), accountSeed: seed(mesh), nodes: [{ node: "edge-a", account: a.getPublicKey() }] }));
    expect(meshJwt.nats.limits).toMatchObject({ conn: -1, disk_storage: -1, mem_storage: -1, streams: -1, consumer: -1 });
    expect(meshJwt.nats.imports?.map((entry) => entry.subject).sort()).toEqual(["mesh.edge-a.>", "rpc.edge-a.>"]);
  });

  it("node users are leaf-only, with the node's inbox prefix allowed and an expiry when asked", async () => {
    const account = createAccount();
    const user = createUser();
    const claims = decode<User>(await nodeUserJwt({ node: "edge-a", userSeed: seed(user), accountSeed: seed(account), expires: 2_000_000_000 }));
    expect(claims.nats.allowed_connection_types).toEqual(["LEAFNODE"]);
    expect(claims.exp).toBe(2_000_000_000);
    expect(claims.nats.sub?.allow).toContain(`${nodeInboxPrefix("edge-a")}.>`);
    expect(claims.nats.pub?.allow).toContain("mesh.edge-a.>");
    expect(claims.nats.pub?.allow?.some((subject) => subject.startsWith("mesh.") && subject !== "mesh.edge-a.>")).toBe(false);
  });
});

describe("newestAccountJwts (what a hub preloads)", () => {
  it("prefers the resolver's stored JWT when it is as new or newer than the keys copy, and the keys copy otherwise", async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const { newestAccountJwts } = await import("./security.ts");
    // Only the issue time matters here: JWT-shaped text with a chosen iat (@nats-io/jwt always stamps "now").
    const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const operator = createOperator();
    const jwtAt = (iat: number, name: string) => {
      const signed = `${b64({ typ: "JWT", alg: "ed25519-nkey" })}.${b64({ iat, name, sub: "ACCOUNT", iss: operator.getPublicKey(), jti: name, nats: { type: "account", version: 2 } })}`;
      return `${signed}.${Buffer.from(operator.sign(new TextEncoder().encode(signed))).toString("base64url")}`;
    };
    const resolverDir = mkdtempSync(join(tmpdir(), "leafmesh-resolver-"));
    try {
      const older = jwtAt(1_000, "older");
      const newer = jwtAt(2_000, "newer");
      const stored = join(resolverDir, "ACCOUNT.jwt");
      expect(newestAccountJwts([{ account: "ACCOUNT", jwt: older }], resolverDir)[0].jwt).toBe(older); // nothing stored yet
      writeFileSync(stored, newer);
      expect(newestAccountJwts([{ account: "ACCOUNT", jwt: older }], resolverDir)[0].jwt).toBe(newer); // a pushed revocation wins over a stale copy
      writeFileSync(stored, older);
      expect(newestAccountJwts([{ account: "ACCOUNT", jwt: newer }], resolverDir)[0].jwt).toBe(newer); // a newer keys copy wins
      writeFileSync(stored, jwtAt(1_000, "pushed"));
      expect(newestAccountJwts([{ account: "ACCOUNT", jwt: older }], resolverDir)[0].jwt).toBe(jwtAt(1_000, "pushed")); // a tie: the pushed one
      writeFileSync(stored, "garbage");
      expect(newestAccountJwts([{ account: "ACCOUNT", jwt: older }], resolverDir)[0].jwt).toBe(older);
    } finally {
      rmSync(resolverDir, { recursive: true, force: true });
    }
  });
});

describe("rpc permissions come from the method table (bus/rpc.ts)", () => {
  /** Who can reach `rpc.<node>.<method>` of edge-a, read off the signed claims as nats-server would apply them. */
  async function reachable() {
    const operator = createOperator();
    const mesh = createAccount();
    const a = createAccount();
    const b = createAccount();
    const peers = [{ node: "edge-a", account: a.getPublicKey() }, { node: "edge-b", account: b.getPublicKey() }];
    const accountA = decode<Account>(await nodeAccountJwt({ node: "edge-a", operatorSeed: seed(operator), accountSeed: seed(a), meshAccount: mesh.getPublicKey(), peers }));
    const accountB = decode<Account>(await nodeAccountJwt({ node: "edge-b", operatorSeed: seed(operator), accountSeed: seed(b), meshAccount: mesh.getPublicKey(), peers }));
    const meshAccount = decode<Account>(await meshAccountJwt({ operatorSeed: seed(operator), accountSeed: seed(mesh), nodes: peers }));
    const userB = nodeUserPermissions("edge-b");
    const userA = nodeUserPermissions("edge-a");
    const exported = (subject: string) => accountA.nats.exports?.some((entry) => entry.type === "service" && subjectMatches(entry.subject!, subject)) ?? false;
    const result: Record<string, string[]> = {};
    for (const method of rpcMethods) {
      const subject = `rpc.edge-a.${method.name}`;
      const callers: string[] = [];
      // The node's own processes: its local server (local permissions) serves it directly. (`rpc.*.<m>` is
      // how a node calls a peer's method: that it also matches the node's own name is no permission of the table's.)
      const localAllow = localClientPermissions("edge-a").publish.allow.filter((pattern) => !pattern.startsWith("rpc.*."));
      if (localAllow.some((pattern) => subjectMatches(pattern, subject))) callers.push("local");
      // The hubs: the mesh account imports the method from edge-a's account, which exports it; edge-a's leaf subscribes to it.
      const hubImports = meshAccount.nats.imports?.some((entry) => entry.type === "service" && entry.account === a.getPublicKey() && subjectMatches(entry.subject!, subject));
      const leafServes = userA.sub?.allow?.some((pattern) => subjectMatches(pattern, subject)) ?? false;
      if (hubImports && exported(subject) && leafServes) callers.push("hub");
      // A peer: edge-b's account imports it from edge-a's, and edge-b's leaf may send it.
      const peerImports = accountB.nats.imports?.some((entry) => entry.type === "service" && entry.account === a.getPublicKey() && subjectMatches(entry.subject!, subject));
      const peerSends = userB.pub?.allow?.some((pattern) => subjectMatches(pattern, subject)) ?? false;
      if (peerImports && exported(subject) && peerSends && leafServes) callers.push("peers");
      result[method.name] = callers.sort();
    }
    return result;
  }

  it("lets exactly the callers each method names reach it, and no rpc beyond the table", async () => {
    expect(await reachable()).toEqual(Object.fromEntries(rpcMethods.map((method) => [method.name, [...method.callers].sort()])));
    // Nothing exported or imported covers a method that is not in the table.
    expect(oversteppingReason("edge-b", "rpc.edge-a.traffic.listeners")).toMatch(/may only call tunnel-punch/);
    expect(oversteppingReason("edge-b", "rpc.edge-a.tunnel-punch")).toBeUndefined();
  });

  it("is used by every server and caller in the code: no method name written as a string", async () => {
    const { execFileSync } = await import("node:child_process");
    const { resolve } = await import("node:path");
    const root = resolve(import.meta.dirname, "..");
    let hits = "";
    try {
      hits = execFileSync("git", ["grep", "-nE", "\\.serve\\(\"|rpcRequest\\([^)]*\"(status|catalog|traffic|tunnel)|rpc\\.\\$\\{[^}]+\\}\\.(status|tunnel-punch|catalog|traffic)", "--", "*.ts", ":!*.test.ts"], { cwd: root, encoding: "utf8" });
    } catch (error) {
      if ((error as { status?: number }).status !== 1) throw error; // 1: nothing found
    }
    expect(hits).toBe("");
  });
});
