/**
 * The keys directory's lock keeps every writer of state.json apart: the CLI's `keys` commands and an
 * enrolling hub (another process, the same directory). A revocation written while an enrolment held
 * the state it had read would be lost when that enrolment wrote its copy back, and the next re-signing
 * would make the revoked key valid again.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initKeys, readKeyState, resignAccounts, writeKeyState } from "./key-store.ts";
import { issueNode, revokeNode } from "./node-credentials.ts";
import { issueSite } from "./site-store.ts";
import { withKeysLock } from "./keys-lock.ts";
import { requireTools } from "../test/support/trust-servers.ts";

let base: string;
let keys: string;
const sleep = (ms: number) => new Promise((wake) => setTimeout(wake, ms));

beforeAll(async () => {
  requireTools();
  base = mkdtempSync(join(tmpdir(), "leafmesh-keys-lock-"));
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
}, 60_000);

afterAll(() => rmSync(base, { recursive: true, force: true }));

/** What an enrolling hub does under the lock: read state.json, work for a while, write its copy back. */
async function slowWriter(ms: number): Promise<void> {
  await withKeysLock(keys, async () => {
    const state = readKeyState(keys);
    await sleep(ms);
    state.nodes["edge-b"].tags = ["written-by-the-slow-writer"];
    writeKeyState(keys, state);
  });
}

describe("the keys directory's lock", () => {
  it("a revocation made while another writer holds the state waits for it and is not lost", async () => {
    const writer = slowWriter(400);
    await sleep(50);
    const revoked = await revokeNode({ dir: keys, node: "edge-a" });
    await writer;
    const state = readKeyState(keys);
    expect(state.nodes["edge-a"].user).toBeUndefined();
    expect(state.nodes["edge-a"].revocations[revoked.revokedUser]).toBeGreaterThan(0);
    expect(state.nodes["edge-b"].tags).toEqual(["written-by-the-slow-writer"]);
    // the re-signed account keeps the revocation
    const jwts = await resignAccounts(keys);
    expect(jwts.length).toBeGreaterThan(0);
    expect(readKeyState(keys).nodes["edge-a"].revocations[revoked.revokedUser]).toBeGreaterThan(0);
  });

  it("an issue, a rotation and a site's issue wait for it too, and each nested change runs in its caller's hold", async () => {
    const writer = slowWriter(300);
    await sleep(50);
    const started = Date.now();
    // issueSite issues its server as a node inside its own hold: it must not wait for itself
    const [, rotated, site] = await Promise.all([
      issueNode({ dir: keys, node: "edge-c" }),
      issueNode({ dir: keys, node: "edge-b", rotate: true }),
      issueSite({ dir: keys, site: "site-1", members: ["edge-a"] }),
      writer,
    ]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(200);
    const state = readKeyState(keys);
    expect(Object.keys(state.nodes).sort()).toEqual(["edge-a", "edge-b", "edge-c", "site-1"]);
    expect(state.nodes["edge-b"].user).toBe(rotated.node.user);
    expect(state.nodes["edge-b"].revocations[rotated.revoked!.revokedUser]).toBeGreaterThan(0);
    expect(state.nodes["edge-b"].tags).toEqual(["written-by-the-slow-writer"]);
    expect(state.sites?.["site-1"].servers).toEqual(site.site.servers);
    expect(existsSync(join(keys, ".lock"))).toBe(false);
  }, 60_000);

  it("a lock left by a process that is gone is taken over; one held by a live process is waited for, then refused", async () => {
    writeFileSync(join(keys, ".lock"), "999999999");
    expect(await withKeysLock(keys, async () => "taken over")).toBe("taken over");
    writeFileSync(join(keys, ".lock"), String(process.ppid));
    await expect(withKeysLock(keys, async () => "never", 200)).rejects.toThrow(`is locked by process ${process.ppid}`);
    rmSync(join(keys, ".lock"));
  });

  it("a lock whose pid another process has now (a reboot after a power cut) is taken over", async () => {
    // The pid is alive (this test's parent), but it started at another time: not the process that took the lock.
    writeFileSync(join(keys, ".lock"), JSON.stringify({ pid: process.ppid, start: 1 }));
    expect(await withKeysLock(keys, async () => "taken over", 2_000)).toBe("taken over");
    expect(existsSync(join(keys, ".lock"))).toBe(false);
  });

  it("a lock file a crash left empty is taken over once it is a second old", async () => {
    writeFileSync(join(keys, ".lock"), "");
    const started = Date.now();
    expect(await withKeysLock(keys, async () => "taken over", 5_000)).toBe("taken over");
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it("processes that find the same stale lock at once take it one at a time", async () => {
    // Each child, at every round's signal, takes the lock and marks itself inside (a file made exclusively):
    // two inside at once is an overlap. Before the take-over was guarded, 6 processes over 30 rounds overlapped ~15 times.
    const dir = join(base, "race");
    mkdirSync(dir);
    const child = join(base, "race-child.mjs");
    writeFileSync(
      child,
      `import { existsSync, writeFileSync, rmSync } from "node:fs";
const { withKeysLock } = await import(${JSON.stringify(join(import.meta.dirname, "keys-lock.ts"))});
const [dir, rounds] = [process.argv[2], Number(process.argv[3])];
const sleep = (ms) => new Promise((wake) => setTimeout(wake, ms));
let overlaps = 0;
for (let round = 0; round < rounds; round++) {
  for (let waits = 0; !existsSync(dir + "/go-" + round) && waits < 30000; waits++) await sleep(1);
  await withKeysLock(dir, async () => {
    try { writeFileSync(dir + "/inside", "", { flag: "wx" }); } catch { overlaps++; return; }
    await sleep(5);
    rmSync(dir + "/inside");
  });
  writeFileSync(dir + "/done-" + round + "-" + process.pid, "");
}
process.stdout.write(String(overlaps));
`,
    );
    const processes = 6;
    const rounds = 30;
    const children = Array.from({ length: processes }, () => spawn(process.execPath, [child, dir, String(rounds)], { stdio: ["ignore", "pipe", "inherit"] }));
    try {
      const overlaps = children.map(
        (running) =>
          new Promise<number>((done) => {
            let out = "";
            running.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
            running.on("exit", () => done(Number(out)));
          }),
      );
      await sleep(1_500); // the children are up and waiting
      for (let round = 0; round < rounds; round++) {
        // A lock left by a process that is gone, found by all of them within a millisecond.
        writeFileSync(join(dir, ".lock"), JSON.stringify({ pid: 999_999_999, start: 1 }));
        writeFileSync(join(dir, `go-${round}`), "");
        for (let waits = 0; readdirSync(dir).filter((name) => name.startsWith(`done-${round}-`)).length < processes; waits++) {
          if (waits > 2_000) throw new Error(`round ${round} did not finish`);
          await sleep(5);
        }
      }
      expect(await Promise.all(overlaps)).toEqual(Array(processes).fill(0));
      expect(readdirSync(dir).filter((name) => name.startsWith(".lock"))).toEqual([]);
    } finally {
      for (const running of children) running.kill("SIGKILL");
    }
  }, 60_000);

  it("a directory with no mesh says so, not that its lock could not be made", async () => {
    await expect(issueNode({ dir: join(base, "nowhere"), node: "edge-a" })).rejects.toThrow("holds no mesh keys (no state.json)");
  });
});
