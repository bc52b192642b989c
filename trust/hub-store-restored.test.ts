/**
 * A hub's data directory restored from a backup (the machine rebuilt from last week's snapshot): its streams
 * come back as they were, with the same creation times and fewer revisions than the agents' mirrors hold. An
 * agent away while the restored hub took as many writes as it had lost was not told: its mirror asked for the
 * revisions after its last, and the ones the restored stream wrote up to there (a revocation) never reached it.
 */
import { cpSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "../test/support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, trustOf, type AgentProcess, type HubProcess } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { keysInProcess } from "../test/support/keys-command.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";

let keys: string;
let hub: HubProcess;
let agent: AgentProcess;

/** `keys revoke --hub`, run in this process (the same command, without a CLI process each: it is not what is tested here). */
async function revoke(node: string): Promise<void> {
  await keysInProcess("revoke", "--dir", keys, "--node", node, "--hub", hub.clientUrl.replace("nats://", "tls://"));
}

beforeAll(async () => {
  requireTools();
  keys = join(tempDir(), "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-c", "edge-d", "edge-e"]) await issueNode({ dir: keys, node });
  hub = await startHubProcess({ name: "hub-1", keys });
  // Its mirrors checked against the hub's streams every second, not every 30 s (--mirror-check-interval): the test
  // waited out the default's 30 s for the one check that finds the hub's changed store.
  agent = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl.replace("nats://", "tls://")], keys: join(keys, "nodes", "edge-a"), extraArgs: ["--mirror-check-interval", "1000"] });
}, 120_000);

afterAll(stopAllProcesses);

describe("the revocation list after its hub's store was restored from a backup", () => {
  it("reaches an agent that was away while the restored hub caught up", { timeout: 240_000 }, async () => {
    const backup = join(tempDir(), "hub-backup");
    await hub.stop();
    cpSync(hub.dataDir, backup, { recursive: true });
    hub = await hub.restart();
    await revoke("edge-c");
    await revoke("edge-d");
    await eventually(async () => (await trustOf(agent))?.revocationList === 2, 30_000, "edge-a to hold list version 2");

    // The agent is away; the hub comes back from its backup, takes its keys' list (version 2) and one revocation more.
    await agent.stop();
    await hub.stop();
    rmSync(hub.dataDir, { recursive: true, force: true });
    cpSync(backup, hub.dataDir, { recursive: true });
    hub = await hub.restart();
    await revoke("edge-e");
    agent = await agent.restart();
    await eventually(async () => (await trustOf(agent))?.revoked.includes("edge-e"), 90_000, "edge-a to enforce the revocation published after the restore");
    expect(await trustOf(agent)).toEqual({ revocationList: 3, revoked: ["edge-c", "edge-d", "edge-e"] });
  });
});
