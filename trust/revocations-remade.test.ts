/**
 * A hub that lost its JetStream store writes the revocation list again from revision 1 (from its keys
 * directory at start). The agents' mirrors asked only for revisions after their last, so the next
 * revocations published to that hub never reached them: a revoked node stayed trusted. Now an agent finds
 * the upstream stream made again (bus/mirror-lineage.ts) and reads the list again; an older list still
 * cannot replace the one in force.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "../test/support/ports.ts";
import { runCli, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, trustOf, type AgentProcess, type HubProcess } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";

let keys: string;
let hub: HubProcess;
let agent: AgentProcess;

async function revoke(node: string): Promise<void> {
  const result = await runCli(["keys", "revoke", "--dir", keys, "--node", node, "--hub", hub.clientUrl.replace("nats://", "tls://")]);
  expect(result.code, `${result.stdout}${result.stderr}`).toBe(0);
}

const revoked = () => trustOf(agent);

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

describe("the revocation list after its hub lost its store", () => {
  it("reaches the agent again: a revocation published after the loss is enforced", { timeout: 240_000 }, async () => {
    await revoke("edge-c");
    await revoke("edge-d");
    await eventually(async () => (await revoked())?.revocationList === 2, 30_000, "edge-a to hold list version 2");

    await hub.stop();
    rmSync(join(hub.dataDir, "jetstream"), { recursive: true, force: true });
    hub = await hub.restart();
    // The new stream: version 2 from the hub's keys directory at revision 1, version 3 at revision 2, both at or
    // below the revision the agent's mirror had reached (2).
    await revoke("edge-e");
    await eventually(async () => (await revoked())?.revoked.includes("edge-e"), 120_000, "edge-a to enforce the revocation published after the hub lost its store");
    expect(await revoked()).toEqual({ revocationList: 3, revoked: ["edge-c", "edge-d", "edge-e"] });
    expect(agent.output()).toContain("the revocation list's upstream stream was made again");
    // Errors: only its nats-server's leaf dials while the hub was down.
    const errors = agent.output().split("\n").filter((line) => line.includes('"level":50') && !line.includes("connect as leafnode"));
    expect(errors).toEqual([]);
  });
});
