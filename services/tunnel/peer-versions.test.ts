/**
 * A mesh mid-upgrade, where the nodes meet: a node record written by a leafmesh from before protocol levels is
 * still read, is known for what it is (level 0), and makes this node say, once, in its log and its status, which
 * peer runs the older leafmesh, what goes wrong, and that the peer must be upgraded; a newer peer makes it say
 * that this node must be.
 *
 * test/fixtures/node-record-before-levels.json is the record as an older leafmesh encodes it: written by
 * `encodeNodeRecord` of the trees at 8875959 (2026-12-05) and 90e48a6 (2026-12-07 07:22), which give the same bytes.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { decodeNodeRecord, encodeNodeRecord, type NodeRecord } from "../../bus/node-record.ts";
import { meshProtocol, protocolOf, protocolSkew } from "../../bus/protocol.ts";
import { formatVersions } from "../../cli/status.ts";
import { capturedLog } from "../../test/support/log-lines.ts";
import { keepaliveBeside, keepaliveBesideOlderMs, PeerVersions } from "./peer-versions.ts";

const olderBytes = readFileSync(resolve(import.meta.dirname, "../../test/fixtures/node-record-before-levels.json"));

function current(node: string, protocol = meshProtocol): NodeRecord {
  return { ...decodeNodeRecord(olderBytes), node, protocol, at: new Date().toISOString() };
}

describe("peer versions", () => {
  it("reads an older leafmesh's record as level 0, and writes its own level in a record that older schemas still take", () => {
    const older = decodeNodeRecord(olderBytes);
    expect(older.node).toBe("edge-old");
    expect(protocolOf(older)).toBe(0);
    const written = JSON.parse(new TextDecoder().decode(encodeNodeRecord(current("edge-new")))) as Record<string, unknown>;
    expect(written.protocol).toBe(meshProtocol);
    // Only an added field: every field of the older record keeps its name and type, so an older node's schema
    // (zod, which drops fields it does not know) still takes the newer record.
    const olderFields = JSON.parse(olderBytes.toString("utf8")) as Record<string, unknown>;
    for (const [name, value] of Object.entries(olderFields)) expect(typeof written[name], name).toBe(typeof value);
    expect(Object.keys(written).filter((name) => !(name in olderFields)).sort()).toEqual(["protocol"]);
  });

  it("names the older peer, what it gets wrong and that it must be upgraded; for a newer peer, this node", () => {
    const older = protocolSkew({ peer: "edge-old", level: 0, own: 1 })!;
    expect(older.upgrade).toBe("peer");
    expect(older.message).toContain("node 'edge-old' runs a leafmesh from before protocol levels");
    expect(older.message).toContain("internalTrafficPolicy: Local");
    expect(older.message).toMatch(/Upgrade 'edge-old'$/);
    const newer = protocolSkew({ peer: "edge-next", level: 2, own: 1 })!;
    expect(newer.upgrade).toBe("this node");
    expect(newer.message).toMatch(/runs a newer leafmesh \(protocol 2\) than this node \(protocol 1\).*Upgrade this node$/);
    expect(protocolSkew({ peer: "edge-same", level: 1, own: 1 })).toBeUndefined();
    // A level-1 peer is told only what came after level 1: its streams are opened without early bytes.
    const one = protocolSkew({ peer: "edge-one", level: 1, own: 2 })!;
    expect(one.message).toContain("frame headers");
    expect(one.message).not.toContain("internalTrafficPolicy");
    // A hub: to be upgraded first, told what an older hub gets wrong (not what an older agent does).
    const hub = protocolSkew({ peer: "hub-2", level: 0, own: 2, role: "hub" })!;
    expect([hub.role, hub.upgrade]).toEqual(["hub", "peer"]);
    expect(hub.message).toMatch(/^hub 'hub-2' runs a leafmesh from before hubs said their protocol level.*: a hub from before 2026-12-05 17:00 keeps node records 30 s.*Upgrade hub 'hub-2' first: hubs, then sites, then agents$/);
    expect(hub.message).not.toMatch(/internalTrafficPolicy|frame headers/);
    expect(protocolSkew({ peer: "hub-2", level: 1, own: 2, role: "hub" })!.message).toBe("hub 'hub-2' runs an older leafmesh (protocol 1); this node speaks protocol 2. Upgrade hub 'hub-2' first: hubs, then sites, then agents");
    expect(protocolSkew({ peer: "hub-3", level: 3, own: 2, role: "hub" })!.upgrade).toBe("this node");
  });

  it("logs each peer once per level it shows, and lists the peers on another level for status", async () => {
    const { log, lines } = capturedLog("info");
    const versions = new PeerVersions({ log });
    const older = decodeNodeRecord(olderBytes);
    versions.saw(older);
    versions.saw(older); // its keep-alive: said already
    versions.saw(current("edge-b"));
    versions.saw({ ...older, protocol: meshProtocol }); // upgraded
    await new Promise((settle) => setImmediate(settle));
    const said = lines.filter((line) => line.peer !== undefined).map((line) => [line.level, line.peer, line.upgrade ?? null, String(line.msg).split(" (")[0].split(";")[0]]);
    expect(said).toEqual([
      [40, "edge-old", "peer", "node 'edge-old' runs a leafmesh from before protocol levels"],
      [30, "edge-old", null, "node 'edge-old' now runs this node's leafmesh protocol"],
    ]);

    const skews = PeerVersions.skews([current("edge-b"), older, current("edge-next", meshProtocol + 1)]);
    expect(skews.map((skew) => [skew.peer, skew.upgrade])).toEqual([
      ["edge-next", "this node"],
      ["edge-old", "peer"],
    ]);
    const view = formatVersions(skews).join("\n");
    expect(view).toContain(`OTHER LEAFMESH VERSIONS (this node: protocol ${meshProtocol})`);
    expect(view).toMatch(/edge-old\s+0 \(before levels\)\s+edge-old/);
    expect(view).toMatch(new RegExp(`edge-next\\s+${meshProtocol + 1}\\s+this node`));
    expect(formatVersions([])).toEqual([]);
  });

  it("keeps this node's record alive every 20 s while a peer from before levels is listed, else at its own pace", () => {
    expect(keepaliveBeside(60_000, [current("edge-b")])).toBe(60_000);
    expect(keepaliveBeside(60_000, [current("edge-b"), decodeNodeRecord(olderBytes)])).toBe(keepaliveBesideOlderMs);
    expect(keepaliveBeside(5_000, [decodeNodeRecord(olderBytes)])).toBe(5_000);
  });
});
