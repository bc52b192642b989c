/**
 * A node's credentials replaced on a live mesh (`keys issue --rotate --hub`), as docs/trust.md says to: the
 * running node is cut off (its old key and certificate revoked), its new bundle is put in place, and it is
 * started again with the same data directory. Then it must be a full member again: streams to it and from
 * it, in both directions, with the peers that saw its old certificate revoked.
 *
 * A node whose bundle is replaced where it runs from (the rotation writes it in place, or the operator copies it
 * over) does that itself: it notices the new bundle, stops, and starts again in place with it (trust/bundle-watch.ts).
 */
import { copyFileSync, cpSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTarget, type FaultTarget } from "../test/support/fault-targets.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess, runCliOk } from "../test/support/processes.ts";
import { echoesThroughSocks } from "../test/support/socks-client.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";

let keys: string;
let hub: HubProcess;
let echo: FaultTarget;
const agents = new Map<string, { agent: AgentProcess; socks: number }>();

/** Where each node's bundle is: edge-b's is a copy on "its machine", the others run from the keys directory. */
const bundles = new Map<string, string>();

async function startAgent(node: string, ways: string): Promise<void> {
  const socks = await freePort();
  const agent = await startAgentProcess({
    node,
    hubs: [hub.leafUrl.replace("nats://", "tls://")],
    keys: bundles.get(node) ?? join(keys, "nodes", node),
    extraArgs: ["--tunnel-ways", ways, "--mdns", "off", "--socks", `127.0.0.1:${socks}`],
  });
  agents.set(node, { agent, socks });
}

/** A stream from `from`'s SOCKS proxy to the echo server on `to` carries bytes, within `timeoutMs`. */
async function streamWorks(from: string, to: string, timeoutMs = 30_000): Promise<void> {
  await echoesThroughSocks(agents.get(from)!.socks, to, echo.port, timeoutMs, `a stream ${from} → ${to}`);
}

beforeAll(async () => {
  requireTools();
  echo = await startTarget("echo");
  keys = join(tempDir(), "keys");
  // As `leafmesh keys init` and `keys issue` make them (the same functions, without a CLI process each); the
  // rotations under test go through `keys issue --rotate --hub`.
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b", "edge-c"]) await issueNode({ dir: keys, node });
  hub = await startHubProcess({ name: "hub-1", keys });
  bundles.set("edge-b", join(tempDir(), "edge-b"));
  cpSync(join(keys, "nodes", "edge-b"), bundles.get("edge-b")!, { recursive: true });
  await startAgent("edge-a", "direct,relay");
  await startAgent("edge-b", "direct,relay");
  // edge-c reaches the others through the relay only.
  await startAgent("edge-c", "relay");
}, 180_000);

afterAll(async () => {
  await stopAllProcesses();
  await echo?.close();
});

describe("a node whose credentials are rotated on a live mesh", () => {
  it("is cut off; with only its new credentials copied in it says its certificate is still the revoked one; with its whole new bundle it is a member again", async () => {
    for (const [from, to] of [["edge-a", "edge-b"], ["edge-b", "edge-a"], ["edge-c", "edge-b"], ["edge-b", "edge-c"]]) await streamWorks(from, to);
    const edgeB = agents.get("edge-b")!.agent;
    const pid = edgeB.child.pid;
    const taken = () => edgeB.output().match(/keys replaced on disk: stopping/g)?.length ?? 0;
    await runCliOk("keys", "issue", "--dir", keys, "--node", "edge-b", "--rotate", "--hub", hub.clientUrl.replace("nats://", "tls://"));
    // Cut off: its login refused by the hub (and, when the new list reached it before the cut, its certificate listed).
    await eventually(() => /the hub refused this node's login at 127\.0\.0\.1:\d+: credentials revoked|own certificate is on the mesh's revocation list/.test(edgeB.output()) || undefined, 20_000, "edge-b to say it is cut off");
    // The operator copies node.creds alone: a bundle of this node still (the old certificate and its key), taken;
    // the leaf is back, and the node says that its certificate is on the list.
    copyFileSync(join(keys, "nodes", "edge-b", "node.creds"), join(bundles.get("edge-b")!, "node.creds"));
    await eventually(() => taken() === 1 || undefined, 20_000, "edge-b to take the new credentials");
    await eventually(async () => (await edgeB.view().catch(() => undefined))?.status.actors.find((actor) => actor.name === "trust")?.state === "this node revoked" || undefined, 30_000, "edge-b's status to say it is revoked");
    expect(edgeB.output()).toMatch(/own certificate is on the mesh's revocation list[^"]*: put its new bundle where its old one is \(--keys\), and it starts again with it/);
    // Then the whole bundle.
    cpSync(join(keys, "nodes", "edge-b"), bundles.get("edge-b")!, { recursive: true });
    await eventually(() => taken() === 2 || undefined, 20_000, "edge-b to take its whole new bundle");
    for (const [from, to] of [["edge-a", "edge-b"], ["edge-b", "edge-a"], ["edge-c", "edge-b"], ["edge-b", "edge-c"]]) await streamWorks(from, to);
    expect(edgeB.child.pid).toBe(pid);
    expect((await edgeB.view()).status.actors.find((actor) => actor.name === "trust")?.state).toBe("enforcing");
  }, 180_000);

  it("whose new bundle is written where it runs from starts again in place with it, by itself: the same process, and streams both ways", async () => {
    const edgeA = agents.get("edge-a")!.agent;
    const pid = edgeA.child.pid;
    const readyLines = () => edgeA.output().match(/"msg":"agent ready"/g)?.length ?? 0;
    const readyBefore = readyLines();
    // `keys issue --rotate` writes edge-a's new bundle into keys/nodes/edge-a, the directory edge-a runs from.
    await runCliOk("keys", "issue", "--dir", keys, "--node", "edge-a", "--rotate", "--hub", hub.clientUrl.replace("nats://", "tls://"));
    await eventually(() => readyLines() > readyBefore || undefined, 60_000, "edge-a to start again with its new bundle");
    expect(edgeA.output()).toMatch(/keys replaced on disk: stopping, and starting again in place with them/);
    expect(edgeA.child.pid).toBe(pid);
    expect(edgeA.child.exitCode).toBeNull();
    for (const [from, to] of [["edge-a", "edge-b"], ["edge-b", "edge-a"], ["edge-c", "edge-a"], ["edge-a", "edge-c"]]) await streamWorks(from, to);
    // Its status answers with the new identity's local credentials, as before.
    expect((await edgeA.view()).status).toBeDefined();
  }, 180_000);
});
