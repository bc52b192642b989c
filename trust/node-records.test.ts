/**
 * A stolen node cannot wipe the node directory with a header: a `leafmesh hub`
 * process with keys, records of other nodes in `mesh-nodes`, and a client that
 * speaks the leafnode protocol with edge-a's credentials and writes its own key
 * with `Nats-Rollup: all` (on 2.9.10 that purged every other key of the stream,
 * docs/nats-facts.md). The hub's `mesh-nodes` stream refuses roll-ups
 * (bus/node-record.ts `openNodeRecordsBucket`), also when a hub finds a bucket
 * made before that rule. Nor can it write a record so large that every agent
 * watching the bucket is cut off by its own server (`maxNodeRecordBytes`).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { nanos, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { readFileSync } from "node:fs";
import { maxNodeRecordBytes, nodeRecordTtlMs, type NodeRecord } from "../bus/node-record.ts";
import { encodeDirectoryValue } from "../services/tunnel/node-identity.ts";
import { eventually } from "../test/support/ports.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { startHubProcess, stopAllProcesses, tempDir, type HubProcess } from "../test/support/processes.ts";
import { connectRogueLeaf, type RogueLeaf } from "../test/support/rogue-leaf.ts";
import { requireTools } from "../test/support/trust-servers.ts";

let keys: string;
let hub: HubProcess;
let publisher: NatsConnection;
let nodes: KV;

async function stolenEdgeA(): Promise<RogueLeaf> {
  const bundle = join(keys, "nodes", "edge-a");
  const rogue = await connectRogueLeaf({ port: Number(new URL(hub.leafUrl).port), creds: join(bundle, "node.creds"), cert: join(bundle, "node.crt"), key: join(bundle, "node.key"), ca: join(bundle, "ca.crt") });
  rogue.subscribe("_INBOX_edge-a.>");
  await rogue.flush();
  return rogue;
}

/** Writes edge-a's own key as the stolen node, with `headers`, and returns the hub's JetStream answer. */
async function writeOwnKey(rogue: RogueLeaf, headers: Record<string, string>, payload: string, reply: string): Promise<{ seq?: number; error?: { description: string } }> {
  rogue.publishWithHeaders("$JS.hub.API.$KV.mesh-nodes.edge-a", headers, payload, `_INBOX_edge-a.${reply}`);
  const answer = await eventually(() => rogue.received.find((message) => message.subject === `_INBOX_edge-a.${reply}`), 10_000, `the hub's answer to ${reply}`);
  return JSON.parse(answer.payload) as { seq?: number; error?: { description: string } };
}

async function othersStillThere(): Promise<void> {
  expect((await nodes.get("edge-b"))?.string()).toBe("record of edge-b");
  expect((await nodes.get("edge-c"))?.string()).toBe("record of edge-c");
}

beforeAll(async () => {
  requireTools();
  keys = join(tempDir("leafmesh-node-records-"), "keys");
  // As `leafmesh keys init` and `keys issue` make them (the same functions, without a CLI process each).
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b", "edge-c"]) await issueNode({ dir: keys, node });
  hub = await startHubProcess({ name: "hub-1", keys });
  publisher = await hub.connection();
  nodes = await new Kvm(publisher).open("mesh-nodes");
  // what edge-b and edge-c wrote (the records' contents do not matter here)
  await nodes.put("edge-b", "record of edge-b");
  await nodes.put("edge-c", "record of edge-c");
}, 90_000);

afterAll(() => stopAllProcesses());

describe("roll-up headers on a node's own key", () => {
  it("a fresh hub makes the bucket refusing roll-ups and reports no update of a bucket it just made", async () => {
    const { config } = await (await jetstreamManager(publisher)).streams.info("KV_mesh-nodes");
    expect(config.allow_rollup_hdrs).toBe(false);
    // The hub answers status (startHubProcess) a moment before it logs that it is ready.
    await eventually(() => hub.output().includes("hub ready"), 15_000, "the hub to log that it is ready");
    expect(hub.output()).not.toContain("node records bucket updated");
  });

  it("a plain write of its own record goes through", async () => {
    const rogue = await stolenEdgeA();
    try {
      const answer = await writeOwnKey(rogue, {}, "record of edge-a", "plain");
      expect(answer.error).toBeUndefined();
      expect((await nodes.get("edge-a"))?.string()).toBe("record of edge-a");
    } finally {
      rogue.close();
    }
  });

  it("a value over the bucket's size is refused and changes nothing; a signed record with many addresses fits", async () => {
    const rogue = await stolenEdgeA();
    try {
      const big = await writeOwnKey(rogue, {}, "r".repeat(2 * 1024 * 1024), "big");
      expect(big.error?.description, JSON.stringify(big)).toMatch(/message size exceeds maximum allowed/);
      expect((await nodes.get("edge-a"))?.string()).toBe("record of edge-a");
      const bundle = join(keys, "nodes", "edge-a");
      const identity = { certPem: readFileSync(join(bundle, "node.crt"), "utf8"), keyPem: readFileSync(join(bundle, "node.key"), "utf8"), caPem: readFileSync(join(bundle, "ca.crt"), "utf8") };
      const record: NodeRecord = {
        node: "edge-a",
        peerId: "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
        listen: Array.from({ length: 64 }, (_unused, index) => `/ip6/fd00:198:18::${index.toString(16)}/tcp/4101/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo`),
        observed: [{ host: "198.18.0.1", port: 40_000 }],
        nat: "port-restricted",
        relay: true,
        pskFingerprint: "0123456789abcdef",
        at: new Date().toISOString(),
      };
      const signed = new TextDecoder().decode(encodeDirectoryValue(record, identity));
      expect(signed.length).toBeLessThan(maxNodeRecordBytes);
      expect((await writeOwnKey(rogue, {}, signed, "signed")).error).toBeUndefined();
      await nodes.put("edge-a", "record of edge-a");
    } finally {
      rogue.close();
    }
  });

  it("`Nats-Rollup: all` and `Nats-Rollup: sub` are refused and every other record stays", async () => {
    const rogue = await stolenEdgeA();
    try {
      const answers = [];
      for (const rollup of ["all", "sub"]) answers.push(await writeOwnKey(rogue, { "Nats-Rollup": rollup }, "wiped", `rollup-${rollup}`));
      await othersStillThere();
      for (const answer of answers) expect(answer.error?.description, JSON.stringify(answer)).toMatch(/rollup not permitted/);
      expect((await nodes.get("edge-a"))?.string()).toBe("record of edge-a");
    } finally {
      rogue.close();
    }
  });

  it("a hub that finds the bucket as an older hub made it (roll-ups allowed, records kept 30 s) sets it as records need at start", async () => {
    const jsm = await jetstreamManager(publisher);
    const { config } = await jsm.streams.info("KV_mesh-nodes");
    expect(config.max_age).toBe(nanos(nodeRecordTtlMs));
    await jsm.streams.update("KV_mesh-nodes", { ...config, allow_rollup_hdrs: true, max_age: nanos(30_000), duplicate_window: nanos(30_000), max_msg_size: -1 });
    await hub.stop();
    hub = await hub.restart();
    expect(hub.output()).toContain("node records bucket updated");
    publisher = await hub.connection();
    nodes = await new Kvm(publisher).open("mesh-nodes");
    expect(hub.output()).toContain("max_age: 30 s → 150 s");
    expect(hub.output()).toContain(`max_msg_size: -1 → ${maxNodeRecordBytes}`);
    const after = (await (await jetstreamManager(publisher)).streams.info("KV_mesh-nodes")).config;
    expect(after.allow_rollup_hdrs).toBe(false);
    // A 30 s TTL would expire a record between two keep-alives (nodeRecordKeepaliveMs, 60 s).
    expect(after.max_age).toBe(nanos(nodeRecordTtlMs));
    // written again: records expire after the bucket's TTL
    await nodes.put("edge-b", "record of edge-b");
    await nodes.put("edge-c", "record of edge-c");
    const rogue = await stolenEdgeA();
    try {
      const answer = await writeOwnKey(rogue, { "Nats-Rollup": "all" }, "wiped", "after-restart");
      expect(answer.error?.description).toMatch(/rollup not permitted/);
      expect((await writeOwnKey(rogue, {}, "r".repeat(2 * 1024 * 1024), "big-after-restart")).error?.description).toMatch(/message size exceeds maximum allowed/);
      await othersStillThere();
    } finally {
      rogue.close();
    }
  });
});
