/**
 * The bundle watch (trust/bundle-watch.ts) on real bundles made by `keys init` and `keys issue` (openssl): a whole
 * new bundle of this node is taken once it reads the same twice; files of two issues, another node's, another
 * mesh's or a secret left readable are said once and never taken. The agent that starts again with it:
 * trust/rotation.test.ts.
 */
import { X509Certificate } from "node:crypto";
import { chmodSync, copyFileSync, cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import pino from "pino";
import { Writable } from "node:stream";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { bundleProblem, hubCertificateProblem, siteBundleProblem, watchBundle } from "./bundle-watch.ts";
import { issueSite } from "./site-store.ts";
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
  await issueSite({ dir: keys, site: "shop", members: ["edge-b"] });
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
      expect.stringMatching(/^node edge-a's files changed on disk, but it cannot start with them: .*is node 'edge-b''s certificate, not 'edge-a''s; it runs on with those it loaded$/),
    ]);
    // The operator rotates edge-a and copies its new bundle.
    await issueNode({ dir: keys, node: "edge-a", rotate: true });
    for (const name of names) copyFileSync(join(keys, "nodes", "edge-a", name), join(running, name));
    await eventually(() => replaced.length > 0 || undefined, 5_000, "edge-a's own bundle taken");
  }, 60_000);

  it("says once a day, not more, when the certificate it runs with ends within 30 days", async () => {
    const running = copyOfBundle("edge-b");
    const ends = Date.parse(new X509Certificate(readFileSync(join(running, "node.crt"))).validTo);
    let now = ends - 40 * 86_400_000;
    const { log, lines } = capture();
    const ending = () => lines.filter((line) => line.level === 40).map((line) => line.msg);
    watches.push(watchBundle({ files: filesIn(running), node: "edge-b", log, intervalMs: 20, now: () => now, onReplaced: () => undefined }));
    await sleep(100);
    expect(ending()).toEqual([]);
    now = ends - 10 * 86_400_000;
    await sleep(100);
    now += 3_600_000;
    await sleep(100);
    expect(ending()).toEqual([
      "node edge-b's certificate ends in 10 days: peers refuse it from then on. Issue its bundle again (leafmesh keys issue --node edge-b --rotate) and put it where the old one is: the node starts again with it.",
    ]);
    now += 86_400_000;
    await sleep(100);
    expect(ending()).toHaveLength(2);
    expect(ending()[1]).toMatch(/^node edge-b's certificate ends in 8 days/);
  });

  it("tells a node that joined with a token that its renewal has not got through, not to issue a bundle it cannot be given", async () => {
    const running = copyOfBundle("edge-b");
    writeFileSync(join(running, "joined.json"), `${JSON.stringify({ node: "edge-b", token: "d13d8d7403f4", tags: [] })}\n`);
    const ends = Date.parse(new X509Certificate(readFileSync(join(running, "node.crt"))).validTo);
    const { log, lines } = capture();
    watches.push(watchBundle({ files: filesIn(running), node: "edge-b", log, intervalMs: 20, now: () => ends - 10 * 86_400_000, onReplaced: () => undefined }));
    await sleep(100);
    const said = lines.filter((line) => line.level === 40).map((line) => line.msg);
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/^node edge-b's certificate ends in 10 days: peers refuse it from then on\. It joined with a token and renews its certificate itself/);
    expect(said[0]).toContain(`remove ${running} and start it again with a join token`);
    expect(said[0]).not.toContain("keys issue");
  });

  it("says when NATS credentials issued with an expiry end within 30 days", async () => {
    const running = copyOfBundle("edge-b");
    await issueNode({ dir: keys, node: "edge-c", expires: Math.floor((Date.now() + 20 * 86_400_000) / 1000) });
    const bundle = copyOfBundle("edge-c");
    const { log, lines } = capture();
    watches.push(watchBundle({ files: filesIn(bundle), node: "edge-c", log, intervalMs: 20, onReplaced: () => undefined }));
    watches.push(watchBundle({ files: filesIn(running), node: "edge-b", log, intervalMs: 20, onReplaced: () => undefined }));
    await sleep(100);
    expect(lines.filter((line) => line.level === 40).map((line) => line.msg)).toEqual([
      expect.stringMatching(/^node edge-c's NATS credentials end in 19 days: the hubs refuse them from then on\. Issue its bundle again/),
    ]);
  });

  it("judges a hub's certificate files: its key, the mesh CA, the end date", async () => {
    const hub = join(keys, "hub");
    const files = { cert: join(hub, "hub.crt"), key: join(hub, "hub.key"), ca: join(hub, "ca.crt") };
    const ca = readFileSync(files.ca, "utf8");
    expect(hubCertificateProblem(files, ca)).toBeUndefined();
    expect(hubCertificateProblem({ ...files, key: join(keys, "nodes", "edge-a", "node.key") }, ca)).toMatch(/node\.key is not the key of .*hub\.crt/);
    expect(hubCertificateProblem(files, readFileSync(join(otherMesh, "hub", "ca.crt"), "utf8"))).toMatch(/is another CA than the one this hub runs with/);
    expect(hubCertificateProblem(files, ca, () => Date.parse("2040-01-01T00:00:00Z"))).toMatch(/hub\.crt expired at/);
  });

  it("judges a site server's bundle: its site, its server, its certificate and credentials", () => {
    const bundle = join(keys, "sites", "shop");
    const ca = readFileSync(join(bundle, "ca.crt"), "utf8");
    expect(siteBundleProblem(bundle, { site: "shop", server: "shop" }, ca)).toBeUndefined();
    expect(siteBundleProblem(bundle, { site: "mall", server: "shop" }, ca)).toBe("the bundle is site 'shop''s, not 'mall''s");
    expect(siteBundleProblem(bundle, { site: "shop", server: "shop-2" }, ca)).toMatch(/server 'shop-2' is not one of the bundle's servers \(shop\)/);
    expect(siteBundleProblem(bundle, { site: "shop", server: "shop" }, readFileSync(join(otherMesh, "ca", "ca.crt"), "utf8"))).toMatch(/another CA than the one this site server runs with/);
  });
});
