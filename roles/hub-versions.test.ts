/**
 * A hub's `leafmesh status` in a mesh mid-upgrade lists the hubs and the nodes on another protocol level: the nodes
 * from their records in mesh-nodes (read when status is asked; a signed record read for its level, unchecked), the
 * hubs from their relay-load records. A real `leafmesh hub` process; the older hub and node are their records as an
 * older leafmesh writes them (test/fixtures: node-record-before-levels.json from 8875959 and 90e48a6,
 * hub-load-before-levels.json from 8875959, 90e48a6 and 32d9b99).
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import { decodeNodeRecord, encodeNodeRecord, type NodeRecord } from "../bus/node-record.ts";
import { meshProtocol } from "../bus/protocol.ts";
import { buckets, hubLoadSubject } from "../bus/subjects.ts";
import { formatNodeView } from "../cli/status.ts";
import { startHubProcess, stopAllProcesses, type HubProcess } from "../test/support/processes.ts";
import { eventually } from "../test/support/ports.ts";

const fixtures = resolve(import.meta.dirname, "../test/fixtures");
const olderNode = readFileSync(resolve(fixtures, "node-record-before-levels.json"));
const olderHub = readFileSync(resolve(fixtures, "hub-load-before-levels.json"));

function record(node: string, protocol: number): NodeRecord {
  return { ...decodeNodeRecord(olderNode), node, protocol, at: new Date().toISOString() };
}

let hub: HubProcess;

beforeAll(async () => {
  hub = await startHubProcess({ name: "hub-1" });
}, 60_000);

afterAll(async () => {
  await stopAllProcesses();
});

describe("a hub's status in a mesh mid-upgrade", () => {
  it("lists the hubs and nodes on another protocol level, each with the side to upgrade", async () => {
    const connection = await hub.connection();
    const kv = await new Kvm(connection).open(buckets.nodes);
    await kv.put("edge-old", olderNode);
    await kv.put("edge-new", encodeNodeRecord(record("edge-new", meshProtocol)));
    await kv.put("edge-next", encodeNodeRecord(record("edge-next", meshProtocol + 1)));
    // As a node with keys writes it: the record inside an envelope with its certificate and signature.
    const signed = { record: Buffer.from(encodeNodeRecord(record("edge-one", 1))).toString("base64"), cert: "(a certificate)", signature: "(a signature)" };
    await kv.put("edge-one", JSON.stringify({ signed }));
    await kv.put("edge-junk", "not a record");
    await kv.put("edge-gone", encodeNodeRecord(record("edge-gone", 0)));
    await kv.delete("edge-gone");
    const hubs = setInterval(() => connection.publish(hubLoadSubject("hub-old"), olderHub), 100);
    try {
      await eventually(async () => (await hub.view()).status.versions?.some((skew) => skew.peer === "hub-old"), 15_000, "the hub to hear the older hub");
    } finally {
      clearInterval(hubs);
    }
    const view = await hub.view();
    expect(view.status.versions?.map((skew) => [skew.peer, skew.role ?? "node", skew.level, skew.upgrade])).toEqual([
      ["hub-old", "hub", 0, "peer"],
      ["edge-next", "node", meshProtocol + 1, "this node"],
      ["edge-old", "node", 0, "peer"],
      ["edge-one", "node", 1, "peer"],
    ]);
    expect(view.status.versionsRead).toBeUndefined();
    const text = formatNodeView(view);
    expect(text).toContain(`OTHER LEAFMESH VERSIONS (this node: protocol ${meshProtocol})`);
    expect(text).toMatch(/hub-old \(hub\)\s+0-2 \(not said\)\s+hub-old, first/);
    expect(text).toMatch(/edge-old\s+0 \(before levels\)\s+edge-old/);
    expect(text).toMatch(new RegExp(`edge-next\\s+${meshProtocol + 1}\\s+this node`));
    // And in the hub's log, once.
    expect(hub.output().match(/hub 'hub-old' runs a leafmesh from before hubs said their protocol level/g)).toHaveLength(1);
  });
});
