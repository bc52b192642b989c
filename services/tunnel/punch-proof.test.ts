/**
 * Punch requests prove their asker (punch-proof.ts). A stolen node's credentials, speaking the
 * leafnode protocol itself (test/support/rogue-leaf.ts), reach another node's `tunnel-punch`
 * method through a real secured hub; what they claim in `from` is refused unless signed by that
 * node's certificate, before it takes a place that node's own punches need. A genuine request
 * (the asker's own certificate, addressed to this node, now) is taken on.
 *
 * The answering node's NAT observer accepts and never answers, so a punch taken on holds its place
 * for the observer's timeout: long enough to see whose places are taken.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Bus, rpcRequest } from "../../bus/bus.ts";
import { rpc, type PunchReply, type PunchRequest } from "../../bus/rpc.ts";
import { silentLogger } from "../../lib/log.ts";
import { initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { connectRogueLeaf, type RogueLeaf } from "../../test/support/rogue-leaf.ts";
import { requireTools, startSecuredHub, startSecuredLeaf, stopAllServers, type SecuredHub } from "../../test/support/trust-servers.ts";
import { stopAllProcesses, tempDir } from "../../test/support/processes.ts";
import { eventually } from "../../test/support/ports.ts";
import type { NodeIdentity } from "./node-identity.ts";
import { fingerprintOf } from "./peer-trust.ts";
import { PunchCoordinator } from "./punch-coordinator.ts";
import { checkPunchRequest, maxPunchRequestAgeMs, provePunchRequest } from "./punch-proof.ts";

let keys: string;
let hub: SecuredHub;
let observer: Server;
const held: Socket[] = [];
let edgeB: NatsConnection;
let edgeC: NatsConnection;
let coordinator: PunchCoordinator;
let rogue: RogueLeaf;
const revoked = new Set<string>();
let tag = 0;

const identityOf = (node: string): NodeIdentity => {
  const bundle = join(keys, "nodes", node);
  return { certPem: readFileSync(join(bundle, "node.crt"), "utf8"), keyPem: readFileSync(join(bundle, "node.key"), "utf8"), caPem: readFileSync(join(bundle, "ca.crt"), "utf8") };
};

const unsigned = (from: string): PunchRequest => ({ from, peerId: `peer-of-${from}`, nat: "full-cone", mapped: { host: "198.18.0.7", port: 4000 }, purpose: "libp2p" });

/** Sends a punch request as the stolen node edge-a; resolves with edge-b's answer. */
async function asStolen(body: unknown): Promise<PunchReply> {
  const reply = `_INBOX_edge-a.punch${++tag}`;
  rogue.publish("rpc.edge-b.tunnel-punch", JSON.stringify(body), reply);
  const answer = await eventually(() => rogue.received.find((message) => message.subject === reply), 10_000, `edge-b's answer on ${reply}`);
  return JSON.parse(answer.payload) as PunchReply;
}

beforeAll(async () => {
  requireTools();
  const base = tempDir("leafmesh-punch-proof-");
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b", "edge-c"]) await issueNode({ dir: keys, node });
  hub = await startSecuredHub({ keysDir: keys, dir: join(base, "hub") });
  const leafUrl = `tls://127.0.0.1:${hub.leafPort}`;
  const leafB = await startSecuredLeaf({ node: "edge-b", bundleDir: join(keys, "nodes", "edge-b"), hubLeafUrl: leafUrl, dir: join(base, "edge-b") });
  const leafC = await startSecuredLeaf({ node: "edge-c", bundleDir: join(keys, "nodes", "edge-c"), hubLeafUrl: leafUrl, dir: join(base, "edge-c") });
  edgeB = await connect({ servers: leafB.clientUrl, ...leafB.security.clientConnectOptions });
  edgeC = await connect({ servers: leafC.clientUrl, ...leafC.security.clientConnectOptions });
  observer = createServer((socket) => void held.push(socket));
  await new Promise<void>((resolve) => observer.listen(0, "127.0.0.1", resolve));
  const observerPort = (observer.address() as { port: number }).port;
  const identity = identityOf("edge-b");
  coordinator = new PunchCoordinator({
    nats: edgeB,
    bus: new Bus({ connection: edgeB, node: "edge-b", log: silentLogger() }),
    node: "edge-b",
    log: silentLogger(),
    observer: { host: "127.0.0.1", ports: [observerPort, observerPort] },
    recordOf: () => undefined,
    peerId: () => "peer-of-edge-b",
    servesTlsStreams: () => false,
    onPunched: (socket) => void socket.destroy(),
    maxPunchesPerPeer: 2,
    // as the tunnel actor wires it with security on
    proof: {
      sign: (request, to) => provePunchRequest(request, { to, identity, now: Date.now() }),
      check: (request) => checkPunchRequest(request, { node: "edge-b", identity, now: Date.now(), isRevoked: (fingerprint) => fingerprint !== undefined && revoked.has(fingerprint) }),
    },
  });
  coordinator.start();
  await edgeB.flush();
  const bundle = join(keys, "nodes", "edge-a");
  rogue = await connectRogueLeaf({ port: hub.leafPort, creds: join(bundle, "node.creds"), cert: join(bundle, "node.crt"), key: join(bundle, "node.key"), ca: join(bundle, "ca.crt") });
  rogue.subscribe("_INBOX_edge-a.>");
  await rogue.flush();
}, 60_000);

afterAll(async () => {
  coordinator?.stop();
  rogue?.close();
  for (const socket of held) socket.destroy();
  observer?.close();
  await edgeB?.close().catch(() => undefined);
  await edgeC?.close().catch(() => undefined);
  await stopAllServers();
  await stopAllProcesses();
});

describe("a punch request proves who asks", () => {
  it("a stolen node naming another node, or none, is refused before it takes that node's places; that node's own requests are taken on", async () => {
    const a = identityOf("edge-a");
    const forged = [
      unsigned("edge-c"),
      // edge-a's own certificate, claiming edge-c
      { ...provePunchRequest(unsigned("edge-a"), { to: "edge-b", identity: a, now: Date.now() }), from: "edge-c" },
      provePunchRequest(unsigned("edge-c"), { to: "edge-b", identity: a, now: Date.now() }),
      // a made-up name: no record, so no peer id to compare
      provePunchRequest(unsigned("edge-made-up"), { to: "edge-b", identity: a, now: Date.now() }),
    ];
    const answers = await Promise.all(forged.map((body) => asStolen(body)));
    expect(answers[0].error).toMatch(/claiming to be from 'edge-c' is not signed/);
    expect(answers[1].error).toMatch(/punch request claiming to be 'edge-c' refused: (its certificate belongs to 'edge-a'|the signature does not match)/);
    expect(answers[2].error).toMatch(/punch request claiming to be 'edge-c' refused: its certificate belongs to 'edge-a'/);
    expect(answers[3].error).toMatch(/punch request claiming to be 'edge-made-up' refused: its certificate belongs to 'edge-a'/);
    expect(coordinator.refused.get("asker not proven")).toBe(forged.length);

    // edge-c's own two requests, through its own leaf, while its places would still be held by the forged ones
    const c = identityOf("edge-c");
    const genuine = await Promise.all(
      [1, 2].map(() => rpcRequest(edgeC, "edge-b", rpc.tunnelPunch, provePunchRequest(unsigned("edge-c"), { to: "edge-b", identity: c, now: Date.now() }), 15_000).catch((error: Error) => ({ error: error.message }))),
    );
    // taken on: they fail later at the silent observer, never for edge-c's limit or its proof
    for (const answer of genuine) expect(answer.error ?? "").not.toMatch(/its limit|refused|not signed/);
    expect(coordinator.refused.get("peer over its punch limit")).toBeUndefined();
  });

  it("a genuine request replayed to another node, too old, altered, or signed with a revoked certificate is refused", () => {
    const c = identityOf("edge-c");
    const now = Date.now();
    const check = (request: PunchRequest) => checkPunchRequest(request, { node: "edge-b", identity: identityOf("edge-b"), now, isRevoked: (fingerprint) => fingerprint !== undefined && revoked.has(fingerprint) });
    const good = provePunchRequest(unsigned("edge-c"), { to: "edge-b", identity: c, now });
    expect(check(good)).toBeUndefined();
    expect(check(provePunchRequest(unsigned("edge-c"), { to: "edge-d", identity: c, now }))).toMatch(/addressed to 'edge-d', not to this node/);
    expect(check(provePunchRequest(unsigned("edge-c"), { to: "edge-b", identity: c, now: now - maxPunchRequestAgeMs - 1_000 }))).toMatch(/more than 120 s from this node's clock/);
    expect(check({ ...good, mapped: { host: "198.18.0.99", port: 22 } })).toMatch(/the signature does not match the punch request/);
    // An asker whose clock is 10 minutes slow: judged on this node's clock through the offset its record shows.
    const slow = provePunchRequest(unsigned("edge-c"), { to: "edge-b", identity: c, now: now - 600_000 });
    expect(check(slow)).toMatch(/more than 120 s from this node's clock$/);
    const checkWithOffset = (request: PunchRequest) => checkPunchRequest(request, { node: "edge-b", identity: identityOf("edge-b"), now, peerClockOffsetMs: 600_000 });
    expect(checkWithOffset(slow)).toBeUndefined();
    expect(checkWithOffset(provePunchRequest(unsigned("edge-c"), { to: "edge-b", identity: c, now: now - 600_000 - maxPunchRequestAgeMs - 1_000 }))).toMatch(
      /more than 120 s from this node's clock \(its clock is 600 s behind this node's, by its node record\)/,
    );
    expect(check({ ...good, purpose: "tls-stream" })).toMatch(/the signature does not match the punch request/);
    revoked.add(fingerprintOf(c.certPem)!);
    try {
      expect(check(good)).toMatch(/signed with a revoked certificate/);
    } finally {
      revoked.clear();
    }
  });
});
