/**
 * The node's local nkey derived from node.key (trust/local-nkey.ts): a user seed nkeys takes, the same for the agent
 * and `status`, another for another key or node; nothing written into the bundle, so a read-only bundle (a Secret
 * volume; here a read-only bind mount) runs an agent that `leafmesh status` then reads. Before, the agent stopped at
 * start with "unexpected error: EROFS".
 */
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createUser, fromSeed } from "@nats-io/jwt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, runCliOk as cli } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { derivedLocalSeed } from "./local-nkey.ts";
import { loadNodeSecurity } from "./security.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";

let keys: string;

beforeAll(async () => {
  requireTools();
  keys = join(tempDir("leafmesh-local-nkey-"), "keys");
  // As `leafmesh keys init` and `keys issue` make them (the same functions, without a CLI process each).
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
}, 60_000);

afterAll(() => stopAllProcesses());

describe("the node's local nkey", () => {
  it("is an nkeys user seed derived from node.key and the node's name, and nothing is written into the bundle", () => {
    const keyA = readFileSync(join(keys, "nodes", "edge-a", "node.key"));
    const seed = derivedLocalSeed(keyA, "edge-a");
    expect(seed).toMatch(/^SU[A-Z2-7]{56}$/);
    expect(fromSeed(new TextEncoder().encode(seed)).getPublicKey()).toMatch(/^U[A-Z2-7]{55}$/);
    expect(derivedLocalSeed(keyA, "edge-a")).toBe(seed);
    expect(derivedLocalSeed(keyA, "edge-b")).not.toBe(seed);
    expect(derivedLocalSeed(readFileSync(join(keys, "nodes", "edge-b", "node.key")), "edge-a")).not.toBe(seed);
    const before = readdirSync(join(keys, "nodes", "edge-a")).sort();
    const security = loadNodeSecurity(join(keys, "nodes", "edge-a"), "edge-a");
    expect(readdirSync(join(keys, "nodes", "edge-a")).sort()).toEqual(before);
    expect(security.localAuthFragment).toContain(fromSeed(new TextEncoder().encode(seed)).getPublicKey());
  });

  it("is the local.nk an earlier leafmesh wrote into the bundle, where there is one", () => {
    const bundle = join(tempDir("leafmesh-legacy-"), "edge-a");
    cpSync(join(keys, "nodes", "edge-a"), bundle, { recursive: true });
    const legacy = createUser();
    writeFileSync(join(bundle, "local.nk"), new TextDecoder().decode(legacy.getSeed()), { mode: 0o600 });
    expect(loadNodeSecurity(bundle, "edge-a").localAuthFragment).toContain(legacy.getPublicKey());
  });

  it("runs an agent from a read-only bundle, and `leafmesh status` on the node reads it", async () => {
    if (process.getuid?.() !== 0) throw new Error("this test bind-mounts the bundle read-only: run it as root (CI does)");
    const source = join(tempDir("leafmesh-ro-"), "edge-b");
    cpSync(join(keys, "nodes", "edge-b"), source, { recursive: true });
    const mount = join(tempDir("leafmesh-ro-"), "bundle");
    mkdirSync(mount);
    execFileSync("mount", ["--bind", source, mount]);
    try {
      execFileSync("mount", ["-o", "remount,bind,ro", mount]);
      const hub = await startHubProcess({ name: "hub-1", keys });
      const agent = await startAgentProcess({ node: "edge-b", hubs: [hub.leafUrl.replace("nats://", "tls://")], keys: mount, extraArgs: ["--mdns", "off"] });
      const view = JSON.parse(await cli("status", "--json", "--keys", mount, "--node", "edge-b", "--nats", agent.clientUrl)) as { status: { node: string } };
      expect(view.status.node).toBe("edge-b");
      expect(existsSync(join(mount, "local.nk"))).toBe(false);
      await agent.stop();
      await hub.stop();
    } finally {
      execFileSync("umount", ["-l", mount]);
      rmSync(source, { recursive: true, force: true });
    }
  }, 90_000);
});
