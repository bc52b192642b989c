/**
 * Nodes that join with a token while their clock is wrong, as an edge box's is on its first boot (no RTC, NTP not
 * yet answering): the hub refuses the request as signed too far from its clock, and tells its time; the node signs
 * again by it, once, says that its clock is wrong by how much, and joins. Before, it exited with "stale-request"
 * and joined only once its clock had been set. A token that expired by the node's own clock says so, and which
 * time that clock reads.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { skewedClock } from "../test/support/clock-skew.ts";
import { eventually } from "../test/support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type HubProcess, runCliOk as cli } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys } from "./key-store.ts";

let keys: string;
let hub: HubProcess;
let tokenFile: string;

beforeAll(async () => {
  requireTools();
  keys = join(tempDir("leafmesh-enrol-clock-"), "keys");
  // As `leafmesh keys init` makes them (the same function, without a CLI process).
  await initKeys({ dir: keys });
  hub = await startHubProcess({ name: "hub-1", keys, extraArgs: ["--enrol"] });
  const token = (await cli("keys", "token", "--dir", keys, "--url", hub.clientUrl.replace("nats://", "tls://"), "--ttl", "24h", "--uses", "5")).trim();
  tokenFile = join(tempDir(), "token");
  writeFileSync(tokenFile, token, { mode: 0o600 });
}, 120_000);

afterAll(() => stopAllProcesses());

describe("joining with a wrong clock", () => {
  for (const [node, skewSeconds, said] of [
    ["edge-slow", -600, /this machine's clock is 10 min \d+ s behind the hub's: the enrolment request is signed again by the hub's clock/],
    ["edge-fast", 240 + 180, /this machine's clock is 7 min \d+ s ahead of the hub's/],
    ["edge-days", -3 * 86_400, /this machine's clock is (2 d 23 h|3 d 0 h) behind the hub's/],
  ] as const) {
    it(`a node whose clock is ${skewSeconds} s off joins, and says its clock is wrong`, async () => {
      const agent = await startAgentProcess({ node, hubs: [hub.leafUrl.replace("nats://", "tls://")], joinFile: tokenFile, env: skewedClock(skewSeconds), waitReady: false });
      await eventually(() => agent.child.exitCode !== null || /"msg":"agent ready"/.test(agent.output()) || undefined, 45_000, `${node} to join`);
      expect(agent.child.exitCode, agent.output().slice(-2000)).toBeNull();
      expect(agent.output()).toMatch(said);
      expect(agent.output()).toMatch(new RegExp(`node '${node}' joined the mesh`));
      expect(hub.output()).toMatch(new RegExp(`node '${node}' enrolled with token`));
    }, 60_000);
  }

  it("a token that expired by the node's own clock says so, with the time that clock reads", async () => {
    const agent = await startAgentProcess({ node: "edge-late", hubs: [hub.leafUrl.replace("nats://", "tls://")], joinFile: tokenFile, env: skewedClock(2 * 86_400), waitReady: false });
    await eventually(() => agent.child.exitCode !== null || undefined, 30_000, "edge-late to exit");
    expect(agent.child.exitCode).not.toBe(0);
    expect(agent.output()).toMatch(/token \w+ expired at \S+ by this machine's clock, which reads \S+: make a new one with 'leafmesh keys token' \(or, if this clock is wrong, set it and start again\)/);
  }, 60_000);
});
