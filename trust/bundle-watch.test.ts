/**
 * The bundle watch (trust/bundle-watch.ts) on real bundles made by `keys init` and `keys issue` (openssl): a whole
 * new bundle of this node is taken once it reads the same twice; files of two issues, another node's, another
 * mesh's or a secret left readable are said once and never taken. The agent that starts again with it:
 * trust/rotation.test.ts.
 */
import { chmodSync, copyFileSync, cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import pino from "pino";
import { Writable } from "node:stream";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { bundleProblem, watchBundle } from "./bundle-watch.ts";
import { eventually } from "../test/support/ports.ts";
import { tempDir } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";

let keys: string;
let otherMesh: string;
const names = ["node.creds", "node.crt", "node.key", "ca.crt", "swarm.key"] as const;
const filesIn = (dir: string) => ({ creds: join(dir, "node.creds"), cert: join(dir, "node.crt"), key: join(dir, "node.key"), ca: join(dir, "ca.crt"), psk: join(dir, "swarm.key") });
const sleep = (ms: number) => new Promise((wake) => setTimeout(wake, ms));

/** A copy of `node`'s bundle as it is now, in a directory of its own (as on the node). */
function copyOfBundle(node: string, from = keys): string {
  const dir = tempDir("leafmesh-bundle-");
  cpSync(join(from, "nodes", node), dir, { recursive: true });
  return dir;
}

function capture() {
  const lines: { msg: string; level: number }[] = [];
  const log = pino({ level: "info" }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString())), done()) }));
  return { log, lines };
}

const watches: { stop(): void }[] = [];
afterEach(() => watches.splice(0).forEach((watch) => watch.stop()));

beforeAll(async () => {
  requireTools();
  keys = join(tempDir(), "keys");
  otherMesh = join(tempDir(), "keys");
  await initKeys({ dir: keys });
  await initKeys({ dir: otherMesh });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
  await issueNode({ dir: otherMesh, node: "edge-a" });
}, 60_000);

describe("a node's bundle replaced on disk", () => {
  it("says what is wrong with a bundle this node cannot start with", async () => {
    const running = copyOfBundle("edge-a");
    const ca = readFileSync(join(running, "ca.crt"), "utf8");
    expect(bundleProblem(filesIn(running), "edge-a", ca)).toBeUndefined();

    const otherNode = copyOfBundle("edge-b");
    expect(bundleProblem(filesIn(otherNode), "edge-a", ca)).toMatch(/is node 'edge-b''s certificate, not 'edge-a''s/);

    const foreign = copyOfBundle("edge-a", otherMesh);
    expect(bundleProblem(filesIn(foreign), "edge-a", ca)).toMatch(/is another CA than the one this node runs with/);

    // The certificate of a new issue beside the key of the old one: a copy half done.
    const mixed = copyOfBundle("edge-a");
    await issueNode({ dir: keys, node: "edge-a", rotate: true });
    copyFileSync(join(keys, "nodes", "edge-a", "node.crt"), join(mixed, "node.crt"));
    expect(bundleProblem(filesIn(mixed), "edge-a", ca)).toMatch(/node.key is not the key of .*node.crt/);

    const loose = copyOfBundle("edge-a");
    chmodSync(join(loose, "node.key"), 0o644);
    expect(bundleProblem(filesIn(loose), "edge-a", ca)).toMatch(/chmod 600/);

    const notCreds = copyOfBundle("edge-a");
    writeFileSync(join(notCreds, "node.creds"), "not a creds file\n", { mode: 0o600 });
    expect(bundleProblem(filesIn(notCreds), "edge-a", ca)).toMatch(/does not hold a NATS user JWT/);
  }, 60_000);

  it("takes a whole new bundle once it has settled, and only once", async () => {
    const running = copyOfBundle("edge-a");
    const { log } = capture();
    const replaced: string[] = [];
    watches.push(watchBundle({ files: filesIn(running), node: "edge-a", log, intervalMs: 50, onReplaced: (what) => replaced.push(what) }));
    await sleep(200);
    expect(replaced).toEqual([]);
    await issueNode({ dir: keys, node: "edge-a", rotate: true });
    for (const name of names) copyFileSync(join(keys, "nodes", "edge-a", name), join(running, name));
    await eventually(() => replaced.length > 0 || undefined, 5_000, "the new bundle taken");
    expect(replaced[0]).toMatch(/^certificate \w+ → \w+$/);
    writeFileSync(join(running, "node.crt"), readFileSync(join(running, "node.crt")));
    await sleep(300);
    expect(replaced).toHaveLength(1);
  }, 60_000);

  it("says once that a new bundle is not this node's, runs on, and takes the right one copied after it", async () => {
    const running = copyOfBundle("edge-a");
    const { log, lines } = capture();
    const replaced: string[] = [];
    watches.push(watchBundle({ files: filesIn(running), node: "edge-a", log, intervalMs: 50, onReplaced: (what) => replaced.push(what) }));
    // edge-b's bundle copied over edge-a's by mistake.
    for (const name of names) copyFileSync(join(keys, "nodes", "edge-b", name), join(running, name));
    await eventually(() => lines.some((line) => line.level === 50) || undefined, 5_000, "the refusal said");
    await sleep(300);
    expect(replaced).toEqual([]);
    expect(lines.filter((line) => line.level === 50).map((line) => line.msg)).toEqual([
      expect.stringMatching(/^the node's bundle changed on disk, but this node cannot start with it: .*is node 'edge-b''s certificate, not 'edge-a''s; it runs on with the bundle it loaded$/),
    ]);
    // The operator rotates edge-a and copies its new bundle.
    await issueNode({ dir: keys, node: "edge-a", rotate: true });
    for (const name of names) copyFileSync(join(keys, "nodes", "edge-a", name), join(running, name));
    await eventually(() => replaced.length > 0 || undefined, 5_000, "edge-a's own bundle taken");
  }, 60_000);
});
