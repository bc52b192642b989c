/**
 * A hub restarted from a stale copy of the keys (made before a revocation) keeps
 * the revocation: the full resolver persisted the pushed account JWT in its
 * directory, and nats-server does not let an older preload replace it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { Writable } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "../test/support/ports.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { startSecuredHub, startSecuredLeaf, stopAllServers, requireTools, leafConnections } from "../test/support/trust-servers.ts";
import { runKeysCommand } from "../cli/keys.ts";

let base: string;
beforeAll(() => {
  requireTools();
  base = mkdtempSync(join(tmpdir(), "leafmesh-trust-restart-"));
});
afterAll(async () => {
  await stopAllServers();
  if (base) rmSync(base, { recursive: true, force: true });
});

describe("revocation survives a hub restart", () => {
  it("even when the hub's copy of the keys predates the revocation", async () => {
    const keys = join(base, "keys");
    const hubCopy = join(base, "hub-copy");
    await initKeys({ dir: keys });
    for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
    cpSync(keys, hubCopy, { recursive: true, preserveTimestamps: true });
    const hub = await startSecuredHub({ keysDir: hubCopy, dir: join(base, "hub") });
    const a = await startSecuredLeaf({ node: "edge-a", bundleDir: keys, hubLeafUrl: hub.leafUrl, dir: join(base, "edge-a") });
    const b = await startSecuredLeaf({ node: "edge-b", bundleDir: keys, hubLeafUrl: hub.leafUrl, dir: join(base, "edge-b") });

    let output = "";
    const sink = new Writable({
      write(chunk, _encoding, done) {
        output += chunk.toString();
        done();
      },
    });
    expect(await runKeysCommand(["revoke", "--dir", keys, "--node", "edge-a", "--hub", hub.clientUrl], { stdout: sink, stderr: sink }, {}), output).toBe(0);
    await eventually(async () => (await leafConnections(a)) === 0, 5_000, "edge-a cut");

    const aLogBefore = a.log().length;
    await hub.restart();
    await eventually(async () => (await leafConnections(b)) === 1, 15_000, "edge-b back after the hub restart");
    // edge-a retries about every second: wait until it either got in, or was refused three times in a row
    const since = () => a.log().slice(aLogBefore);
    const gotIn = () => since().includes("Adding JetStream Domain Mapping");
    await eventually(() => gotIn() || (since().match(/Authorization Violation/g) ?? []).length >= 3, 20_000, "edge-a's attempts after the restart").catch((error: Error) => {
      throw new Error(`${error.message}\n--- edge-a ---\n${since().slice(-3000)}`, { cause: error });
    });
    expect(gotIn(), since().slice(-2000)).toBe(false);
    expect(await leafConnections(a)).toBe(0);
  });
});
