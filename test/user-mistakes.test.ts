/**
 * The mistakes a new user makes with the documented commands, each typed as a user types it: the
 * command ends at once with a message that names what is wrong and what to do, not a stack trace,
 * not a process that runs on half working.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, runCliOk as cli, stopAllProcesses, tempDir } from "./support/processes.ts";
import { requireTools } from "./support/trust-servers.ts";

let keys: string;
let base: string;

beforeAll(async () => {
  requireTools();
  base = tempDir("leafmesh-mistakes-");
  keys = join(base, "keys");
  await cli("keys", "init", "--dir", keys, "--hub-hosts", "hub-1.example.net,hub-2.example.net");
  await cli("keys", "issue", "--dir", keys, "--node", "edge-a");
}, 60_000);

afterAll(() => stopAllProcesses());

describe("a new user's mistakes", () => {
  it("another node's bundle: the agent refuses to start, naming whose bundle it is", async () => {
    // Before, it ran: attached with edge-a's credentials under the name edge-c, and said only timeouts.
    const result = await runCli(["agent", "--node", "edge-c", "--hub", "tls://127.0.0.1:1", "--data", join(base, "edge-c"), "--keys", join(keys, "nodes", "edge-a"), "--metrics-listen", "off"], 30_000);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("is node 'edge-a''s (its certificate names 'edge-a'), not node 'edge-c''s: give --node edge-a, or the bundle issued for 'edge-c'");
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });
});
