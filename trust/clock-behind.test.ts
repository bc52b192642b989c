/**
 * A node whose clock is more than a week behind (certificates are backdated by 7 days: trust/tls.ts), as an edge
 * box's is when it boots without an RTC and NTP never answers: every peer's certificate looks not yet valid to it.
 * It cannot work so, but it must say why: at start and in status, that its clock reads a time before the start of its
 * own certificate, and, on each refused record, which time its clock reads. Before, it said only that each peer's
 * certificate "is valid only from … to …", as though the peers were at fault.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { skewedClock } from "../test/support/clock-skew.ts";
import { eventually } from "../test/support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess, runCliOk as cli } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";

let keys: string;
let hub: HubProcess;
let behind: AgentProcess;

beforeAll(async () => {
  requireTools();
  keys = join(tempDir("leafmesh-clock-behind-"), "keys");
  // As `leafmesh keys init` and `keys issue` make them (the same functions, without a CLI process each).
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
  hub = await startHubProcess({ name: "hub-1", keys });
  const hubs = [hub.leafUrl.replace("nats://", "tls://")];
  behind = await startAgentProcess({ node: "edge-a", hubs, keys: join(keys, "nodes", "edge-a"), env: skewedClock(-10 * 86_400) });
  await startAgentProcess({ node: "edge-b", hubs, keys: join(keys, "nodes", "edge-b") });
}, 120_000);

afterAll(() => stopAllProcesses());

describe("a node whose clock is ten days behind", () => {
  it("says at start that its clock is before its certificate's start, and to set it", () => {
    expect(behind.output()).toMatch(/node edge-a: this machine's clock reads \S+, before the start of the certificate it runs with \(\S+\): its peers' certificates look not yet valid to it, and their node records and tunnels are refused\. Set this clock \(NTP\)/);
  });

  it("says so in status", async () => {
    const view = JSON.parse(await cli("status", "--json", "--keys", keys, "--node", "edge-a", "--nats", behind.clientUrl)) as { status: { actors: { name: string; state: string }[] } };
    expect(view.status.actors.find((actor) => actor.name === "trust")?.state).toBe("clock before the certificate's start");
  });

  it("names its own clock when it refuses a peer's record", async () => {
    await eventually(() => /node record claiming to be 'edge-b' refused: its certificate is valid only from .* to .*; this machine's clock reads \S+: if that is wrong, set it \(NTP\)/.test(behind.output()) || undefined, 30_000, "edge-a to refuse edge-b's record, naming its clock");
  }, 40_000);
});
