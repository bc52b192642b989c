import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeNodeRecord, decodeNodeRecord, type NodeRecord } from "../bus/node-record.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { signNodeRecord, verifyNodeRecord } from "./record-signature.ts";
import { requireTools } from "../test/support/trust-servers.ts";

const base = mkdtempSync(join(tmpdir(), "leafmesh-record-sig-"));
const keys = join(base, "keys");
const stranger = join(base, "stranger");
afterAll(() => rmSync(base, { recursive: true, force: true }));
beforeAll(async () => {
  requireTools();
  await initKeys({ dir: keys });
  await initKeys({ dir: stranger });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
  await issueNode({ dir: stranger, node: "edge-a" });
}, 60_000);

const read = (dir: string, node: string, file: string) => readFileSync(join(dir, "nodes", node, file), "utf8");
const record: NodeRecord = { node: "edge-a", peerId: "12D3KooWAlice", listen: ["/ip4/10.0.0.1/tcp/4101"], observed: [], nat: "unknown", relay: true, pskFingerprint: "abcd", at: "2026-11-23T22:00:00Z" };

describe("node records signed by the node", () => {
  it("verify when the node's own certificate signed them", () => {
    const envelope = signNodeRecord({ record: encodeNodeRecord(record), certPem: read(keys, "edge-a", "node.crt"), keyPem: read(keys, "edge-a", "node.key") });
    const bytes = verifyNodeRecord({ node: "edge-a", envelope, caPem: read(keys, "edge-a", "ca.crt") });
    expect(decodeNodeRecord(bytes).peerId).toBe("12D3KooWAlice");
  });

  it("are refused, saying why, when another node, another CA or an altered record is involved", () => {
    const ca = read(keys, "edge-a", "ca.crt");
    const byB = signNodeRecord({ record: encodeNodeRecord(record), certPem: read(keys, "edge-b", "node.crt"), keyPem: read(keys, "edge-b", "node.key") });
    expect(() => verifyNodeRecord({ node: "edge-a", envelope: byB, caPem: ca })).toThrow("node record claiming to be 'edge-a' refused: its certificate belongs to 'edge-b'");

    const foreign = signNodeRecord({ record: encodeNodeRecord(record), certPem: read(stranger, "edge-a", "node.crt"), keyPem: read(stranger, "edge-a", "node.key") });
    expect(() => verifyNodeRecord({ node: "edge-a", envelope: foreign, caPem: ca })).toThrow("is not signed by this mesh's CA");

    const genuine = signNodeRecord({ record: encodeNodeRecord(record), certPem: read(keys, "edge-a", "node.crt"), keyPem: read(keys, "edge-a", "node.key") });
    const altered = { ...genuine, record: Buffer.from(encodeNodeRecord({ ...record, peerId: "12D3KooWMallory" })).toString("base64") };
    expect(() => verifyNodeRecord({ node: "edge-a", envelope: altered, caPem: ca })).toThrow("the signature does not match the record");

    // edge-b's key with edge-a's certificate: the signature gives it away
    const borrowed = signNodeRecord({ record: encodeNodeRecord(record), certPem: read(keys, "edge-a", "node.crt"), keyPem: read(keys, "edge-b", "node.key") });
    expect(() => verifyNodeRecord({ node: "edge-a", envelope: borrowed, caPem: ca })).toThrow("the signature does not match the record");

    expect(() => verifyNodeRecord({ node: "edge-a", envelope: genuine, caPem: ca, now: () => Date.parse("2100-01-01") })).toThrow("its certificate is valid only from");
  });
});
