/**
 * The trust attack suite: everything a stolen node can try with its valid
 * credentials and certificate, speaking the leafnode protocol itself (no leaf
 * server holding it to its permissions, test/support/rogue-leaf.ts), against a real
 * `leafmesh hub` process with keys (catalog publisher, node records bucket,
 * trust auditor) and two honest nodes (their own leaf servers and clients).
 *
 * Each attack is refused: nothing it sends reaches another node or changes the
 * mesh's data (streams, the catalog, other nodes' records), and where the hub's
 * auditor can see it (what dies in the node's account) the hub's log names it.
 * The honest nodes keep relaying, answering rpc and mirroring the catalog.
 *
 * Not here: a revoked node dialling a peer's tunnel directly (the tunnel's own
 * tests), and what a stolen node CAN still do with the consumer-create call
 * that mirrors need: make many consumers (docs/trust.md, "Known limits").
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copyFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { decode } from "@nats-io/jwt";
import { sampleService, writeManifest } from "../test/support/manifests.ts";
import { eventually } from "../test/support/ports.ts";
import { startHubProcess, stopAllProcesses, tempDir, type HubProcess, runCliOk as cli } from "../test/support/processes.ts";
import { connectRogueLeaf, type RogueLeaf } from "../test/support/rogue-leaf.ts";
import { initKeys, readKeyState } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { mirrorDeliverPrefix } from "./claims.ts";
import { openCatalogMirror } from "../services/controller/agent-controller.ts";
import type { Bus } from "../bus/bus.ts";
import { requireTools, startSecuredLeaf, stopAllServers, type SecuredLeaf } from "../test/support/trust-servers.ts";
import { connect as natsConnect, credsAuthenticator } from "@nats-io/transport-node";
import { createUser, fmtCreds, fromSeed } from "@nats-io/jwt";
import { X509Certificate } from "node:crypto";
import { decodeJoinToken, type JoinToken } from "./tokens.ts";
import { enrolSigningText, type EnrolReply, type EnrolRequest } from "./enrolment.ts";
import { maxFailuresPerMinute } from "./enrolment-service.ts";
import { enrolInboxPrefix } from "./enrolment-claims.ts";
import { makeCertificateRequest } from "./tls.ts";

let base: string;
let keys: string;
let manifests: string;
let hub: HubProcess;
let publisher: NatsConnection;
let jsm: JetStreamManager;
let catalog: KV;
let records: KV;
const leaves = new Map<string, SecuredLeaf>();
const clients = new Map<string, NatsConnection>();
let rogue: RogueLeaf;
let tag = 0;

const streamNames = ["KV_mesh-catalog", "KV_mesh-nodes", "KV_mesh-leases", "KV_mesh-revocations"];

async function stolen(node = "edge-a", credsFile?: string): Promise<RogueLeaf> {
  const bundle = join(keys, "nodes", node);
  const connection = await connectRogueLeaf({
    port: Number(new URL(hub.leafUrl).port),
    creds: credsFile ?? join(bundle, "node.creds"),
    cert: join(bundle, "node.crt"),
    key: join(bundle, "node.key"),
    ca: join(bundle, "ca.crt"),
  });
  connection.subscribe(`_INBOX_${node}.>`);
  await connection.flush();
  return connection;
}

/** Sends a request as the stolen node; returns the reply subject its answer (if any) arrives on. */
function send(subject: string, payload: unknown = "", headers?: Record<string, string>): string {
  const reply = `_INBOX_edge-a.attack${++tag}`;
  const body = typeof payload === "string" ? payload : JSON.stringify(payload);
  if (headers) rogue.publishWithHeaders(subject, headers, body, reply);
  else rogue.publish(subject, body, reply);
  return reply;
}

function answerTo(reply: string): { payload: string } | undefined {
  return rogue.received.find((message) => message.subject === reply);
}

/**
 * Waits until the hub has handled everything the stolen node sent so far: a PING answered,
 * then an allowed JetStream call sent after the attacks answered (the JetStream API answers in order).
 */
async function settled(): Promise<void> {
  await rogue.flush();
  const marker = send("$JS.hub.API.STREAM.INFO.KV_mesh-nodes");
  await eventually(() => answerTo(marker), 10_000, "the stolen node's allowed call after its attacks").catch((error: Error) => {
    throw new Error(`${error.message}; the stolen node's connection: ${JSON.stringify({ errors: rogue.errors, last: rogue.received.slice(-3) })}`, { cause: error });
  });
}

/**
 * What an attack must not change: every stream's config, the catalog (every message), what was
 * written to the node records (their last sequence: records also leave by TTL) and the lease (its
 * holder renews it meanwhile: one message), the catalog's keys, other nodes' records.
 */
async function meshData(): Promise<unknown> {
  const streams = Object.fromEntries(
    await Promise.all(
      streamNames.map(async (name) => {
        const { config, state } = await jsm.streams.info(name);
        const lastSeq = name === "KV_mesh-leases" ? undefined : state.last_seq;
        const messages = name === "KV_mesh-nodes" ? undefined : state.messages;
        return [name, { config, lastSeq, messages }];
      }),
    ),
  );
  const names: string[] = [];
  for await (const name of jsm.streams.names()) names.push(name);
  const catalogKeys: Record<string, number> = {};
  for await (const key of await catalog.keys()) catalogKeys[key] = (await catalog.get(key))!.revision;
  return {
    streams,
    names: names.sort(),
    catalogKeys,
    edgeB: (await records.get("edge-b"))?.string(),
    edgeC: (await records.get("edge-c"))?.string(),
  };
}

/** The honest nodes' records, as their agents keep them (written again before each attack: the bucket's TTL is 30 s). */
async function honestRecords(): Promise<void> {
  await records.put("edge-b", "record of edge-b");
  await records.put("edge-c", "record of edge-c");
}

/** Collects what arrives on `subject` at `connection`. */
function collect(connection: NatsConnection, subject: string): string[] {
  const seen: string[] = [];
  connection.subscribe(subject, { callback: (_error, message) => void seen.push(`${message.subject} ${message.string()}`) });
  return seen;
}

/** The hub's log names each attempt (the auditor, once per node and subject). */
async function auditorSaid(...texts: string[]): Promise<void> {
  await eventually(() => texts.every((text) => hub.output().includes(text)), 10_000, `the hub's auditor to log: ${texts.join(" | ")}`).catch((error: Error) => {
    throw new Error(`${error.message}\n--- hub ---\n${hub.output().split("\n").filter((line) => line.includes("denied")).join("\n")}`, { cause: error });
  });
}

beforeAll(async () => {
  requireTools();
  base = tempDir("leafmesh-attacks-");
  keys = join(base, "keys");
  manifests = join(base, "manifests");
  writeManifest(manifests, "web.yaml", sampleService({ namespace: "shop", name: "web", clusterIP: "198.19.0.10" }));
  // As `leafmesh keys init` and `keys issue` make them (the same functions, without a CLI process each).
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b", "edge-c"]) await issueNode({ dir: keys, node });
  hub = await startHubProcess({ name: "hub-1", keys, manifests, extraArgs: ["--enrol"] });
  publisher = await hub.connection();
  jsm = await jetstreamManager(publisher);
  catalog = await new Kvm(publisher).open("mesh-catalog");
  records = await new Kvm(publisher).open("mesh-nodes");
  await eventually(async () => (await jsm.streams.info("KV_mesh-catalog")).state.messages >= 2, 20_000, "the hub to publish the catalog");
  await eventually(async () => (await jsm.streams.info("KV_mesh-leases").catch(() => undefined)) !== undefined, 20_000, "the publisher lease bucket");
  for (const node of ["edge-b", "edge-c"]) {
    const leaf = await startSecuredLeaf({ node, bundleDir: keys, hubLeafUrl: hub.leafUrl.replace("nats://", "tls://"), dir: join(base, node) });
    leaves.set(node, leaf);
    const { connect } = await import("@nats-io/transport-node");
    clients.set(node, await connect({ servers: leaf.clientUrl, ...leaf.security.clientConnectOptions, name: `agent ${node}` }));
  }
  const b = clients.get("edge-b")!;
  b.subscribe("rpc.edge-b.status", { callback: (_error, message) => void message.respond("edge-b ok") });
  await b.flush();
  // The stolen node listens to everything its account lets it hear: mirror deliveries of old ($JS.M.>) and any other.
  rogue = await stolen();
  rogue.subscribe("$JS.M.>");
  rogue.subscribe(">");
  await rogue.flush();
  // edge-b's catalog mirror, as its agent makes it (services/controller/agent-controller.ts openCatalogMirror)
  const mirror = await openCatalogMirror({ connection: b, node: "edge-b" } as Bus);
  await eventually(async () => (await mirror.status()).values >= 2, 20_000, "edge-b's catalog mirror");
  await honestRecords();
}, 120_000);

afterAll(async () => {
  rogue?.close();
  for (const connection of clients.values()) await connection.close().catch(() => undefined);
  await stopAllServers();
  await stopAllProcesses();
});

describe("a stolen node's credentials reach its own subjects and nothing else", () => {
  it("publishing as another node, forging its relay frames, its JetStream replies and calling its rpc: nothing arrives", async () => {
    const b = clients.get("edge-b")!;
    const c = clients.get("edge-c")!;
    const atHub = collect(publisher, "mesh.>");
    const relayAtB = collect(b, "relay.edge-b.>");
    const inboxAtB = collect(b, "_INBOX_edge-b.>");
    const rpcAtB = collect(b, "rpc.edge-b.>");
    await Promise.all([publisher.flush(), b.flush()]);

    rogue.publish("mesh.edge-b.tunnel.path", "forged path of edge-b");
    rogue.publish("mesh.hub-1.fabric.server", "forged hub event");
    rogue.publish("relay.edge-b.edge-c.ch1", "forged frame as edge-c");
    rogue.publish("_INBOX_edge-b.reply1", "forged JetStream reply to edge-b");
    const status = send("rpc.edge-b.status");
    send("rpc.hub-1.status");
    rogue.publish("mesh.edge-a.marker", "after the forgeries");
    await settled();
    await eventually(() => atHub.includes("mesh.edge-a.marker after the forgeries"), 10_000, "the stolen node's own event at the hub");
    // edge-c's real frame reaches edge-b after the forged one: the forged one would have come first
    await eventually(async () => {
      c.publish("relay.edge-b.edge-c.ch1", "real frame of edge-c");
      await c.flush();
      return relayAtB.includes("relay.edge-b.edge-c.ch1 real frame of edge-c");
    }, 10_000, "edge-c's frame at edge-b");

    // (the hub publishes its own events under mesh.hub-1.> meanwhile)
    expect(atHub.filter((line) => line.includes("forged") || line.startsWith("mesh.edge-b."))).toEqual([]);
    expect(relayAtB.filter((line) => line.includes("forged"))).toEqual([]);
    expect(inboxAtB).toEqual([]);
    expect(rpcAtB).toEqual([]);
    expect(answerTo(status)).toBeUndefined();
    await auditorSaid("denied: node 'edge-a' publishes as node 'edge-b'", "denied: node 'edge-a' publishes as node 'hub-1'", "denied: node 'edge-a' calls rpc.edge-b", "denied: node 'edge-a' calls rpc.hub-1");
  });

  it("subscribing to another node's subjects, inbox and relay frames: wildcards get nothing of theirs, literal ones cut the connection", async () => {
    const listener = await stolen();
    try {
      for (const subject of [">", "relay.>", "relay.edge-b.>", "rpc.>", "rpc.edge-b.>", "_INBOX_edge-b.>", "mesh.>", "mesh.edge-b.>", "$KV.>", "$JS.API.>", "$SYS.>"]) listener.subscribe(subject);
      await listener.flush();
      const b = clients.get("edge-b")!;
      const c = clients.get("edge-c")!;
      const relayAtB = collect(b, "relay.edge-b.>");
      await b.flush();
      await eventually(async () => {
        c.publish("relay.edge-b.edge-c.secret", "secret frame for edge-b");
        await c.flush();
        return relayAtB.some((line) => line.includes("secret frame for edge-b"));
      }, 10_000, "edge-c's frame at edge-b");
      expect((await publisher.request("rpc.edge-b.status", "secret rpc for edge-b", { timeout: 5_000 })).string()).toBe("edge-b ok");
      // edge-b's own JetStream calls at the hub answer on its inbox
      const remoteRecords = await new Kvm(jetstream(b, { domain: "hub", timeout: 5_000 })).open("mesh-nodes");
      await remoteRecords.put("edge-b", "record of edge-b");
      b.publish("mesh.edge-b.dns.stats", "secret event of edge-b");
      await b.flush();
      await listener.flush();
      const theirs = listener.received.filter(
        (message) => /^(relay\.edge-b|rpc\.edge-b|_INBOX_edge-b|mesh\.edge-b|relay\.edge-c)/.test(message.subject) || /secret/.test(message.payload),
      );
      expect(theirs).toEqual([]);
      expect(listener.errors).toEqual([]);
    } finally {
      listener.close();
    }
    // A literal subscription to another node's subject is checked by the hub, which closes the connection.
    for (const subject of ["rpc.edge-b.status", "relay.edge-b.edge-c.secret", "_INBOX_edge-b.reply1", "mesh.edge-b.dns.stats"]) {
      const literal = await stolen();
      literal.subscribe(subject);
      await literal.closed;
      expect(literal.errors.join("\n"), subject).toMatch(/Permissions Violation for Subscription/);
    }
  });

  it("KV puts to another node's record and to the catalog, in every spelling: nothing changes", async () => {
    await honestRecords();
    const before = await meshData();
    const catalogKey = Object.keys((before as { catalogKeys: Record<string, number> }).catalogKeys)[0];
    for (const subject of [
      "$JS.hub.API.$KV.mesh-nodes.edge-b",
      "$KV.mesh-nodes.edge-b",
      "$JS.API.$KV.mesh-nodes.edge-b",
      "$JS.hub.API.$KV.mesh-nodes.edge-b.extra",
      `$JS.hub.API.$KV.mesh-catalog.${catalogKey}`,
      `$KV.mesh-catalog.${catalogKey}`,
      `$JS.API.$KV.mesh-catalog.${catalogKey}`,
      "$JS.hub.API.$KV.mesh-catalog.svc.shop.evil",
      "$JS.hub.API.$KV.mesh-leases.catalog-publisher",
      "$KV.mesh-leases.catalog-publisher",
      // the revocation list: a node that could write it could undo its own revocation
      "$JS.hub.API.$KV.mesh-revocations.list",
      "$KV.mesh-revocations.list",
      "$JS.API.$KV.mesh-revocations.list",
    ]) {
      send(subject, "forged");
      send(subject, "forged", { "KV-Operation": "PURGE", "Nats-Rollup": "sub" });
    }
    await settled();
    expect(await meshData()).toEqual(before);
    await auditorSaid("denied: node 'edge-a' writes the node record of 'edge-b'", "denied: node 'edge-a' writes the catalog", "denied: node 'edge-a' writes KV bucket mesh-leases");
  });

  it("headers on its own key reach its own key only: roll-ups refused, the others decide only that write", async () => {
    await honestRecords();
    const before = await meshData();
    const own = "$JS.hub.API.$KV.mesh-nodes.edge-a";
    const plain = send(own, "record of edge-a");
    const rollupAll = send(own, "wipe", { "Nats-Rollup": "all" });
    const rollupSub = send(own, "wipe", { "Nats-Rollup": "sub" });
    const otherStream = send(own, "x", { "Nats-Expected-Stream": "KV_mesh-catalog" });
    const wrongSequence = send(own, "x", { "Nats-Expected-Last-Subject-Sequence": "1" });
    const wrongLastSeq = send(own, "x", { "Nats-Expected-Last-Sequence": "1" });
    const msgId1 = send(own, "with id", { "Nats-Msg-Id": "edge-a-1" });
    const msgId2 = send(own, "with id again", { "Nats-Msg-Id": "edge-a-1" });
    const purgeOwn = send(own, "", { "KV-Operation": "PURGE" });
    const deleteOwn = send(own, "", { "KV-Operation": "DEL" });
    await settled();
    const answers = await Promise.all(
      [plain, rollupAll, rollupSub, otherStream, wrongSequence, wrongLastSeq, msgId1, msgId2, purgeOwn, deleteOwn].map((reply) =>
        eventually(() => answerTo(reply), 10_000, `the answer to ${reply}`).then((answer) => JSON.parse(answer.payload) as { seq?: number; duplicate?: boolean; error?: { description: string } }),
      ),
    );
    const [plainAnswer, allAnswer, subAnswer, streamAnswer, sequenceAnswer, lastSeqAnswer, , secondId] = answers;
    expect(plainAnswer.error).toBeUndefined();
    expect(allAnswer.error?.description).toMatch(/rollup not permitted/);
    expect(subAnswer.error?.description).toMatch(/rollup not permitted/);
    expect(streamAnswer.error?.description).toMatch(/expected stream does not match/);
    expect(sequenceAnswer.error?.description).toMatch(/wrong last sequence/);
    expect(lastSeqAnswer.error?.description).toMatch(/wrong last sequence/);
    expect(secondId.duplicate).toBe(true);
    const after = (await meshData()) as { streams: Record<string, { lastSeq: number }>; edgeB?: string; edgeC?: string };
    const was = before as typeof after;
    expect([after.edgeB, after.edgeC]).toEqual([was.edgeB, was.edgeC]);
    expect(after.streams["KV_mesh-catalog"]).toEqual(was.streams["KV_mesh-catalog"]);
    // the node's own key is the only one its writes touched
    const touched = new Set<string>();
    for (let seq = was.streams["KV_mesh-nodes"].lastSeq + 1; seq <= after.streams["KV_mesh-nodes"].lastSeq; seq++) {
      const message = await jsm.streams.getMessage("KV_mesh-nodes", { seq }).catch(() => undefined);
      if (message) touched.add(message.subject);
    }
    expect([...touched]).toEqual(["$KV.mesh-nodes.edge-a"]);
  });

  it("every JetStream API call it does not need, under both API prefixes, is refused and changes nothing", async () => {
    await honestRecords();
    const before = await meshData();
    const catalogConfig = (before as { streams: Record<string, { config: object }> }).streams["KV_mesh-catalog"].config;
    // edge-b's mirror consumer: its name is in the deliveries a stolen node sees (docs/trust.md, Known limits)
    const calls: [string, unknown][] = [
      ["STREAM.CREATE.evil", { name: "evil", subjects: ["evil.>"] }],
      ["STREAM.CREATE.KV_mesh-catalog", catalogConfig],
      ["STREAM.UPDATE.KV_mesh-catalog", { ...catalogConfig, max_msgs: 1, deny_delete: false }],
      ["STREAM.UPDATE.KV_mesh-nodes", { name: "KV_mesh-nodes", subjects: ["$KV.mesh-nodes.>"], allow_rollup_hdrs: true }],
      ["STREAM.DELETE.KV_mesh-catalog", ""],
      ["STREAM.DELETE.KV_mesh-nodes", ""],
      ["STREAM.DELETE.KV_mesh-leases", ""],
      ["STREAM.PURGE.KV_mesh-catalog", {}],
      ["STREAM.PURGE.KV_mesh-nodes", { filter: "$KV.mesh-nodes.edge-b" }],
      ["STREAM.MSG.DELETE.KV_mesh-catalog", { seq: 1 }],
      ["STREAM.MSG.DELETE.KV_mesh-nodes", { seq: 1, no_erase: true }],
      ["STREAM.SNAPSHOT.KV_mesh-catalog", { deliver_subject: "_INBOX_edge-a.snapshot" }],
      ["STREAM.RESTORE.KV_mesh-catalog", { config: catalogConfig, state: {} }],
      ["STREAM.LEADER.STEPDOWN.KV_mesh-catalog", ""],
      ["STREAM.PEER.REMOVE.KV_mesh-catalog", { peer: "hub-1" }],
      ["STREAM.LIST", {}],
      ["STREAM.NAMES", {}],
      ["STREAM.INFO.KV_mesh-leases", ""],
      ["STREAM.MSG.GET.KV_mesh-leases", { last_by_subj: "$KV.mesh-leases.catalog-publisher" }],
      ["DIRECT.GET.KV_mesh-leases", { last_by_subj: "$KV.mesh-leases.catalog-publisher" }],
      ["DIRECT.GET.KV_mesh-leases.$KV.mesh-leases.catalog-publisher", ""],
      ["CONSUMER.LIST.KV_mesh-catalog", {}],
      ["CONSUMER.NAMES.KV_mesh-catalog", {}],
      ["CONSUMER.DURABLE.CREATE.KV_mesh-catalog.evil", { stream_name: "KV_mesh-catalog", config: { durable_name: "evil", ack_policy: "explicit" } }],
      ["CONSUMER.CREATE.KV_mesh-leases", { stream_name: "KV_mesh-leases", config: { ack_policy: "none", deliver_subject: "_INBOX_edge-a.leases" } }],
      ["CONSUMER.LEADER.STEPDOWN.KV_mesh-catalog.x", ""],
      ["META.LEADER.STEPDOWN", {}],
      ["SERVER.REMOVE", { peer: "hub-1" }],
    ];
    // The accounts are no secret (every site bundle holds their JWTs): purge each by its key.
    const state = readKeyState(keys);
    for (const account of [state.meshAccount, state.systemAccount, state.nodes["edge-b"].account, state.nodes["edge-a"].account]) calls.push([`ACCOUNT.PURGE.${account}`, ""]);
    const mirrorConsumers = [...new Set(rogue.received.filter((message) => message.reply?.startsWith("$JS.ACK.KV_mesh-catalog.")).map((message) => message.reply!.split(".")[3]))];
    for (const name of mirrorConsumers) calls.push([`CONSUMER.DELETE.KV_mesh-catalog.${name}`, ""], [`CONSUMER.INFO.KV_mesh-catalog.${name}`, ""]);
    calls.push(["CONSUMER.DELETE.KV_mesh-catalog.any", ""]);
    const replies = calls.flatMap(([call, body]) => [send(`$JS.hub.API.${call}`, body), send(`$JS.API.${call}`, body)]);
    await settled();
    expect(await meshData().catch((error: Error) => `the mesh's data is gone: ${error.message}`)).toEqual(before);
    // Nothing answers them: a node account reaches no JetStream API but what it imports (claims.ts jetStreamInfoApi).
    expect(replies.map((reply) => answerTo(reply)).filter((answer) => answer !== undefined)).toEqual([]);
    await auditorSaid(
      "denied: node 'edge-a' calls JetStream STREAM.DELETE.KV_mesh-catalog on the catalog",
      "denied: node 'edge-a' calls JetStream STREAM.PURGE.KV_mesh-nodes in the hub domain",
      "denied: node 'edge-a' calls JetStream STREAM.CREATE.evil in the hub domain",
      "denied: node 'edge-a' calls JetStream META.LEADER.STEPDOWN in the hub domain",
    );
  });

  it("consumers it may create (a mirror needs that) deliver nothing into the catalog, records, the JetStream API or other nodes' subjects", async () => {
    await honestRecords();
    await send("$JS.hub.API.$KV.mesh-nodes.edge-a", JSON.stringify({ forged: "content under the stolen node's own key" }));
    await settled();
    const before = await meshData();
    const catalogKey = Object.keys((before as { catalogKeys: Record<string, number> }).catalogKeys)[0];
    const b = clients.get("edge-b")!;
    const atHub = collect(publisher, ">");
    const atB = collect(b, ">");
    await Promise.all([publisher.flush(), b.flush()]);
    const targets = [
      `$KV.mesh-catalog.${catalogKey}`,
      "$KV.mesh-catalog.svc.shop.evil",
      "$KV.mesh-nodes.edge-b",
      "$JS.API.STREAM.PURGE.KV_mesh-catalog",
      "$JS.API.STREAM.DELETE.KV_mesh-catalog",
      "$JS.API.STREAM.DELETE.KV_mesh-nodes",
      "mesh.edge-b.tunnel.path",
      "rpc.edge-b.status",
      "relay.edge-b.edge-c.ch1",
      "_INBOX_edge-b.x",
    ];
    const replies = targets.flatMap((deliver) =>
      ["KV_mesh-nodes", "KV_mesh-catalog"].map((stream) =>
        send(`$JS.hub.API.CONSUMER.CREATE.${stream}`, {
          stream_name: stream,
          config: { deliver_subject: deliver, ack_policy: "none", deliver_policy: "all", ...(stream === "KV_mesh-nodes" ? { filter_subject: "$KV.mesh-nodes.edge-a" } : {}) },
        }),
      ),
    );
    await settled();
    await Promise.all(replies.map((reply) => eventually(() => answerTo(reply), 10_000, `the answer to ${reply}`)));
    // A push consumer of 2.9.10 delivers only to a subscription on exactly its deliver subject; give any a moment
    // by waiting for the hub to answer a call made after the consumers exist.
    await settled();
    await publisher.flush();
    await b.flush();
    expect(await meshData()).toEqual(before);
    expect(atHub.filter((line) => line.includes("forged"))).toEqual([]);
    expect(atB.filter((line) => line.includes("forged"))).toEqual([]);
  });

  it("system requests: no account update (not even a replayed one undoing a revocation), no other account's data", async () => {
    // edge-c's account JWT as it is now, before edge-c is revoked: what a replay would push
    const state = readKeyState(keys);
    const edgeCAccount = state.nodes["edge-c"].account;
    copyFileSync(join(keys, "nodes", "edge-c", "node.creds"), join(base, "edge-c-old.creds"));
    const oldEdgeCJwt = readFileSync(join(keys, "accounts", "node-edge-c.jwt"), "utf8").trim();
    await cli("keys", "revoke", "--dir", keys, "--node", "edge-c", "--hub", hub.clientUrl);
    await eventually(async () => (await fetch(`http://127.0.0.1:${hub.monitorPort}/leafz`).then((response) => response.json() as Promise<{ leafs?: { account: string }[] }>)).leafs?.every((leaf) => leaf.account !== edgeCAccount) ?? true, 10_000, "edge-c's leaf connection to be cut");

    const claimsUpdate = send("$SYS.REQ.CLAIMS.UPDATE", oldEdgeCJwt);
    const accountClaimsUpdate = send(`$SYS.REQ.ACCOUNT.${edgeCAccount}.CLAIMS.UPDATE`, oldEdgeCJwt);
    const claimsDelete = send("$SYS.REQ.CLAIMS.DELETE", edgeCAccount);
    const serverPing = send("$SYS.REQ.SERVER.PING", "");
    const varz = send("$SYS.REQ.SERVER.PING.VARZ", "");
    const jsz = send("$SYS.REQ.SERVER.PING.JSZ", "");
    const meshConnz = send(`$SYS.REQ.ACCOUNT.${state.meshAccount}.CONNZ`, "");
    const meshInfo = send(`$SYS.REQ.ACCOUNT.${state.meshAccount}.INFO`, "");
    const claimsLookup = send(`$SYS.REQ.ACCOUNT.${state.meshAccount}.CLAIMS.LOOKUP`, "");
    const ownConnz = send("$SYS.REQ.ACCOUNT.PING.CONNZ", "");
    await settled();
    // The one system call a node account has (its own connections) answers with its own account only.
    const own = await eventually(() => answerTo(ownConnz), 10_000, "the node's own CONNZ");
    const accounts = new Set([...own.payload.matchAll(/"account":"(A[A-Z0-9]{55})"/g)].map((match) => match[1]));
    expect([...accounts].filter((account) => account !== state.nodes["edge-a"].account)).toEqual([]);
    for (const reply of [claimsUpdate, accountClaimsUpdate, claimsDelete, serverPing, varz, jsz, meshConnz, meshInfo, claimsLookup]) expect(answerTo(reply), reply).toBeUndefined();
    // the revocation holds: edge-c's old credentials stay refused
    const edgeC = await stolen("edge-c", join(base, "edge-c-old.creds"));
    await edgeC.closed;
    expect(edgeC.errors.join("\n")).toMatch(/Authorization Violation/i);
    expect(decode(oldEdgeCJwt).sub).toBe(edgeCAccount);
    await auditorSaid("denied: node 'edge-a' sends system request $SYS.REQ.CLAIMS.UPDATE");
  });

  it("hears none of another node's mirror deliveries, so it cannot learn (and then change) that node's mirror consumer", async () => {
    writeManifest(manifests, "watched.yaml", sampleService({ namespace: "shop", name: "watched", clusterIP: "198.19.0.12" }));
    const mirror = await new Kvm(jetstream(clients.get("edge-b")!, { timeout: 5_000 })).open("mesh-catalog");
    await eventually(async () => {
      for await (const key of await mirror.keys()) if (key.includes("watched")) return true;
      return false;
    }, 20_000, "the change in edge-b's mirror");
    const consumers: string[] = [];
    for await (const info of jsm.consumers.list("KV_mesh-catalog")) consumers.push(info.name);
    expect(consumers.length).toBeGreaterThan(0);
    const overheard = rogue.received.filter(
      (message) => message.subject.startsWith("$JS.M.") || message.subject.startsWith(mirrorDeliverPrefix("edge-b")) || consumers.some((name) => `${message.subject} ${message.reply ?? ""}`.includes(name)),
    );
    expect(overheard.map((message) => message.subject)).toEqual([]);
  });

  it("after all of it, the honest node still answers rpc and mirrors the catalog, and logged no violation", async () => {
    const b = clients.get("edge-b")!;
    expect((await publisher.request("rpc.edge-b.status", "", { timeout: 5_000 })).string()).toBe("edge-b ok");
    writeManifest(manifests, "after.yaml", sampleService({ namespace: "shop", name: "after-attacks", clusterIP: "198.19.0.11" }));
    const mirror = await new Kvm(jetstream(b, { timeout: 5_000 })).open("mesh-catalog");
    await eventually(async () => {
      for await (const key of await mirror.keys()) if (key.includes("after-attacks")) return true;
      return false;
    }, 20_000, "the catalog change in edge-b's mirror");
    expect(leaves.get("edge-b")!.log()).not.toMatch(/Violation/);
  });
});

/**
 * The enrolment service (hub --enrol) is a door for nodes that have no identity yet. What comes
 * through it with a token: one request, answered for the key and name it proves, within the
 * token's bounds; everything else the token's credentials try dies in the enrol account.
 */
describe("the enrolment service: a token gets one node its own identity, and nothing else", () => {
  let token: JoinToken;
  const enrolClients: NatsConnection[] = [];

  async function makeToken(...argv: string[]): Promise<JoinToken> {
    const text = (await cli("keys", "token", "--dir", keys, "--url", hub.clientUrl.replace("nats://", "tls://"), ...argv)).trim();
    return decodeJoinToken(text);
  }

  /** A client with the token's credentials and enrolment certificate, as `agent --join` connects. */
  async function enrolClient(of: JoinToken, inboxPrefix = enrolInboxPrefix(of.id)): Promise<NatsConnection & { violations: string[] }> {
    const connection = await natsConnect({
      servers: of.urls,
      authenticator: credsAuthenticator(fmtCreds(of.jwt, fromSeed(new TextEncoder().encode(of.seed)))),
      tls: { ca: of.ca, cert: of.cert, key: of.key },
      inboxPrefix,
      reconnect: false,
    });
    enrolClients.push(connection);
    const violations: string[] = [];
    void (async () => {
      for await (const status of connection.status()) if (status.type === "error") violations.push(String((status as { error?: unknown }).error ?? status.type));
    })();
    return Object.assign(connection, { violations });
  }

  /** A request as the node side makes it (trust/join.ts), with what an attacker may change. */
  async function enrolRequest(of: JoinToken, node: string, change: { csrFor?: string; at?: number; secret?: string } = {}): Promise<EnrolRequest> {
    const user = createUser();
    const csr = await makeCertificateRequest({ keyFile: join(base, `attack-${node}-${++tag}.key`), commonName: change.csrFor ?? node });
    const unsigned = { token: of.id, secret: change.secret ?? of.secret, node, userKey: user.getPublicKey(), csr, at: change.at ?? Date.now() };
    return { ...unsigned, signature: Buffer.from(user.sign(enrolSigningText(unsigned))).toString("base64") };
  }

  async function ask(connection: NatsConnection, body: unknown): Promise<EnrolReply> {
    return (await connection.request("enrol.join", typeof body === "string" ? body : JSON.stringify(body), { timeout: 30_000 })).json<EnrolReply>();
  }

  beforeAll(async () => {
    token = await makeToken("--uses", "3", "--ttl", "1h");
  }, 60_000);

  afterAll(async () => {
    for (const connection of enrolClients) await connection.close().catch(() => undefined);
  });

  it("its credentials publish nothing but the request, hear no other request or token's answers, and open no leaf", async () => {
    const before = await meshData();
    const state = readKeyState(keys);
    const client = await enrolClient(token);
    const b = clients.get("edge-b")!;
    const atB = collect(b, "rpc.edge-b.>");
    const atHub = collect(publisher, "mesh.>");
    await Promise.all([b.flush(), publisher.flush()]);
    for (const subject of [
      "mesh.edge-b.tunnel.path",
      "rpc.edge-b.status",
      "$KV.mesh-nodes.edge-b",
      "$JS.hub.API.STREAM.PURGE.KV_mesh-catalog",
      "$JS.API.STREAM.DELETE.KV_mesh-nodes",
      `$JS.API.ACCOUNT.PURGE.${state.meshAccount}`,
      "$SYS.REQ.CLAIMS.UPDATE",
      `${enrolInboxPrefix("other")}.x`,
    ]) client.publish(subject, "forged");
    await client.flush();
    // Listening where secrets pass: others' requests (the tokens' secrets), another token's answers.
    client.subscribe("enrol.join");
    client.subscribe(`${enrolInboxPrefix("0000other")}.>`);
    client.subscribe(">");
    await client.flush().catch(() => undefined);
    await eventually(() => client.violations.filter((text) => /Permissions Violation/i.test(text)).length >= 3, 10_000, "the hub's Permissions Violation answers");
    expect(client.violations.join("\n")).toMatch(/Permissions Violation for Publish to "mesh.edge-b.tunnel.path"/);
    expect(client.violations.join("\n")).toMatch(/Permissions Violation for Subscription to "enrol.join"/);
    await settled();
    expect(await meshData()).toEqual(before);
    expect(atB).toEqual([]);
    expect(atHub.filter((line) => line.includes("forged"))).toEqual([]);
    // The enrolment certificate opens no leaf port (its CA is trusted on the hubs' client port only), even with a node's credentials.
    const leafWithEnrolCert = await connectRogueLeaf({
      port: Number(new URL(hub.leafUrl).port),
      creds: join(keys, "nodes", "edge-a", "node.creds"),
      cert: join(keys, "enrol", "client.crt"),
      key: join(keys, "enrol", "client.key"),
      ca: join(keys, "ca", "ca.crt"),
    }).catch(() => undefined);
    if (leafWithEnrolCert) {
      await Promise.race([leafWithEnrolCert.closed, new Promise((_resolve, reject) => setTimeout(() => reject(new Error("the leaf port kept a connection with the enrolment certificate")), 10_000))]);
      expect(leafWithEnrolCert.received).toEqual([]);
    }
  });

  it("a request for another node's name, or a certificate request naming another node, is refused; the issued certificate names only the node", async () => {
    const client = await enrolClient(token);
    const taken = await ask(client, await enrolRequest(token, "edge-b"));
    expect(taken).toMatchObject({ ok: false, code: "node-taken" });
    expect((taken as { reason: string }).reason).toMatch(/node 'edge-b' is already issued to another key: a token cannot take over a node/);
    const otherCsr = await ask(client, await enrolRequest(token, "edge-x1", { csrFor: "edge-b" }));
    expect(otherCsr).toMatchObject({ ok: false, code: "bad-csr" });
    expect((otherCsr as { reason: string }).reason).toMatch(/asks for subject 'CN=edge-b', not CN=edge-x1/);
    expect(readKeyState(keys).nodes["edge-x1"]).toBeUndefined();
    expect(readKeyState(keys).tokens![token.id].used).toEqual([]);
    // edge-b is as it was: it still answers through the hub
    expect((await publisher.request("rpc.edge-b.status", "", { timeout: 5_000 })).string()).toBe("edge-b ok");
  });

  it("a replayed request gets nothing new: the same bytes give the same key its identity again (no use spent), an altered one fails its signature, an old one is stale", async () => {
    const client = await enrolClient(token);
    const request = await enrolRequest(token, "edge-x2");
    const first = await ask(client, request);
    expect(first).toMatchObject({ ok: true, node: "edge-x2" });
    const certificate = new X509Certificate((first as { cert: string }).cert);
    expect(certificate.subject).toBe("CN=edge-x2");
    expect(certificate.subjectAltName).toBe("DNS:edge-x2");
    const replay = await ask(client, request);
    expect(replay).toMatchObject({ ok: true, node: "edge-x2" });
    // for the same public key only: the answer is of no use without the node's private keys
    expect(new X509Certificate((replay as { cert: string }).cert).publicKey.export({ format: "pem", type: "spki" })).toBe(certificate.publicKey.export({ format: "pem", type: "spki" }));
    expect(readKeyState(keys).tokens![token.id].used.map((use) => use.node)).toEqual(["edge-x2"]);
    expect(await ask(client, { ...request, node: "edge-x3" })).toMatchObject({ ok: false, code: "bad-signature" });
    expect(await ask(client, await enrolRequest(token, "edge-x4", { at: Date.now() - 10 * 60_000 }))).toMatchObject({ ok: false, code: "stale-request" });
    expect(readKeyState(keys).nodes["edge-x3"]).toBeUndefined();
    expect(readKeyState(keys).nodes["edge-x4"]).toBeUndefined();
  });

  it("a flood: wrong secrets are cut off per token, a burst is bounded by the queue and the token's uses, connections by the account; the hub keeps serving", async () => {
    const client = await enrolClient(token);
    // Guessing the secret: after the limit, the token's requests are refused unread for a minute.
    const guesses = await Promise.all(Array.from({ length: maxFailuresPerMinute + 5 }, async () => ask(client, await enrolRequest(token, "edge-guess", { secret: "guessed-secret-000000" })).catch((error: Error) => ({ ok: false as const, code: "timeout", reason: error.message }))));
    const codes = guesses.map((reply) => (reply.ok ? "ok" : reply.code));
    expect(codes.filter((code) => code === "wrong-secret").length).toBeGreaterThan(0);
    expect(codes.filter((code) => code === "wrong-secret").length).toBeLessThanOrEqual(maxFailuresPerMinute);
    expect(codes.filter((code) => code === "too-many-failures" || code === "busy").length).toBeGreaterThan(0);
    expect(codes).not.toContain("ok");

    // A burst with a good token (another one) and many names: at most its uses are issued, the rest refused with a reason.
    const burstToken = await makeToken("--uses", "2", "--ttl", "1h");
    const burstClient = await enrolClient(burstToken);
    const requests = await Promise.all(Array.from({ length: 24 }, (_unused, index) => enrolRequest(burstToken, `edge-burst-${index}`)));
    const replies = await Promise.all(requests.map((request) => ask(burstClient, request)));
    const issued = replies.filter((reply) => reply.ok);
    expect(issued.length).toBe(2);
    for (const reply of replies) if (!reply.ok) expect(["busy", "used-up"], reply.reason).toContain(reply.code);
    expect(Object.keys(readKeyState(keys).nodes).filter((node) => node.startsWith("edge-burst-")).length).toBe(2);

    // Connections: the enrol account admits 64 at once.
    const many = await Promise.allSettled(Array.from({ length: 70 }, () => enrolClient(burstToken)));
    expect(many.filter((result) => result.status === "rejected").length).toBeGreaterThan(0);
    for (const result of many) if (result.status === "fulfilled") await result.value.close();

    // The hub still serves: a good request is answered, and the honest node still answers.
    const after = await makeToken("--uses", "1");
    const afterClient = await enrolClient(after);
    expect(await ask(afterClient, await enrolRequest(after, "edge-after-flood"))).toMatchObject({ ok: true });
    expect((await publisher.request("rpc.edge-b.status", "", { timeout: 5_000 })).string()).toBe("edge-b ok");
    expect(hub.output()).toMatch(/enrolment refused: the secret does not match token/);
  });
});
