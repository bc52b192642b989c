/**
 * The bus's payload schemas (node records, RPC requests, mesh events, a path's why) against zod's reading of
 * them (test/support/zod-twin.ts), on sample payloads and 500 random alterations of each: the kinds the catalog's
 * schemas do not hold are here (a tuple, strict objects, nullable fields, records of unknown values).
 */
import { describe, expect, it } from "vitest";
import { alter, random } from "../test/support/alterations.ts";
import { comparerWithZod } from "../test/support/zod-twin.ts";
import { meshEvents } from "./events.ts";
import { nodeRecordSchema } from "./node-record.ts";
import { pathWhySchema } from "./path-why.ts";
import { punchRequestSchema, snapshotRequestSchema } from "./rpc.ts";
import type * as z from "../lib/schema/index.ts";

const at = "2026-12-07T16:00:00.000Z";
const samples: [string, z.Schema<unknown, unknown>, unknown][] = [
  [
    "a node record",
    nodeRecordSchema,
    {
      node: "edge-a", peerId: "12D3KooW", listen: ["/ip4/10.0.0.1/tcp/4001"], observed: [{ host: "203.0.113.7", port: 40_000 }], site: "shop-1", nat: "port-restricted",
      natEvidence: { mapping: [{ host: "203.0.113.7", port: 40_000 }, { host: "203.0.113.7", port: 40_000 }], filtering: { otherAddress: "timeout", otherPort: "answered" } },
      relay: true, pskFingerprint: "ab12cd34", at, protocol: 3,
    },
  ],
  ["a punch request (strict)", punchRequestSchema, { from: "edge-a", peerId: "12D3KooW", nat: "full-cone", mapped: { host: "203.0.113.7", port: 40_000 }, purpose: "tls-stream", to: "edge-b", at: 1, proof: { cert: "PEM", signature: "sig" } }],
  ["a snapshot request (strict)", snapshotRequestSchema, { after: "svc.bench.svc-1", limit: 500 }],
  ["a state event (nullable)", meshEvents.state, { at, from: null, to: "online", reason: "started" }],
  ["a heartbeat (a record of unknown values)", meshEvents.heartbeat, { at, state: "online", uptimeMs: 5, detail: { objects: 3, nested: { a: [1] } } }],
  [
    "an upstream event (lists of nullable scores)",
    meshEvents.upstream,
    { at, from: null, to: "nats://hub-b:7422", reason: "loss", scores: [{ url: "nats://hub-a:7422", server: "hub-a", rttMs: 3, loss: 0.5, probes: 4, load: { channels: 1, bytesPerSecond: 10 }, score: null }], movedInMs: 40, after: [] },
  ],
  [
    "a path's why",
    pathWhySchema,
    {
      node: "edge-a", peer: "edge-b", at, path: "relayed", rttMs: 2, connections: ["relay"],
      nat: { local: { node: "edge-a", type: "symmetric", source: "measured", at }, peer: { node: "edge-b", type: "symmetric", source: "record" } },
      punchPlan: "relay", reason: { code: "nat-pair-unpunchable", text: "both symmetric" }, wouldChange: ["a port-forward"],
      attempts: [{ at, way: "relay", outcome: "connected", ms: 4, detail: "ok" }],
    },
  ],
];

describe("the bus's payload schemas against zod's reading of them", () => {
  it.each(samples)("agrees with zod on %s and its alterations", (_what, schema, sample) => {
    const compare = comparerWithZod(schema);
    expect(compare(JSON.parse(JSON.stringify(sample)))).toEqual({ accepted: true, kept: true });
    const next = random(7);
    const outcomes = { kept: 0, copied: 0, refused: 0 };
    for (let round = 0; round < 500; round++) {
      const result = compare(alter(sample, next));
      outcomes[result.kept ? "kept" : result.accepted ? "copied" : "refused"]++;
    }
    expect(outcomes.refused).toBeGreaterThan(50);
    expect(outcomes.kept + outcomes.copied).toBeGreaterThan(20);
  });
});
