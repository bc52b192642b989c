/**
 * Nodes whose clocks are wrong, as edge boxes' are without an RTC or NTP: edge-b's 10 minutes slow, edge-c's 10
 * minutes fast, edge-a's right (test/support/clock-skew.ts moves a process's wall clock). Every node reaches every
 * other, direct (a ↔ b) and through the relay (c). Before, a node's record in mesh-nodes was judged fresh by the time
 * written in it, on the writer's clock: edge-b's record looked 10 minutes old to every other node, past its 150 s
 * TTL, and no stream could reach edge-b.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, it } from "vitest";
import { skewedClock } from "../../test/support/clock-skew.ts";
import { startTarget, type FaultTarget } from "../../test/support/fault-targets.ts";
import { freePort } from "../../test/support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess, runCliOk as cli } from "../../test/support/processes.ts";
import { echoesThroughSocks } from "../../test/support/socks-client.ts";
import { requireTools } from "../../test/support/trust-servers.ts";

let keys: string;
let hub: HubProcess;
let echo: FaultTarget;
const agents = new Map<string, { agent: AgentProcess; socks: number }>();

async function startAgent(node: string, ways: string, skewSeconds: number): Promise<void> {
  const socks = await freePort();
  const agent = await startAgentProcess({
    node,
    hubs: [hub.leafUrl.replace("nats://", "tls://")],
    keys: join(keys, "nodes", node),
    extraArgs: ["--tunnel-ways", ways, "--mdns", "off", "--socks", `127.0.0.1:${socks}`],
    env: skewSeconds ? skewedClock(skewSeconds) : undefined,
  });
  agents.set(node, { agent, socks });
}

beforeAll(async () => {
  requireTools();
  echo = await startTarget("echo");
  keys = join(tempDir(), "keys");
  await cli("keys", "init", "--dir", keys);
  for (const node of ["edge-a", "edge-b", "edge-c"]) await cli("keys", "issue", "--dir", keys, "--node", node);
  hub = await startHubProcess({ name: "hub-1", keys });
  await startAgent("edge-a", "direct,relay", 0);
  await startAgent("edge-b", "direct,relay", -600);
  // edge-c reaches the others through the relay only.
  await startAgent("edge-c", "relay", 600);
}, 180_000);

afterAll(async () => {
  await stopAllProcesses();
  await echo?.close();
});

describe("nodes whose clocks are wrong", () => {
  for (const [from, to] of [["edge-a", "edge-b"], ["edge-b", "edge-a"], ["edge-c", "edge-b"], ["edge-b", "edge-c"], ["edge-a", "edge-c"], ["edge-c", "edge-a"]]) {
    it(`a stream ${from} → ${to} carries bytes`, async () => {
      await echoesThroughSocks(agents.get(from)!.socks, to, echo.port, 20_000, `a stream ${from} → ${to}`).catch((error: Error) => {
        throw new Error(`${error.message}\n--- ${from}'s warnings and errors\n${agents.get(from)!.agent.output().split("\n").filter((line) => /"level":[45]0/.test(line)).slice(-6).join("\n")}`);
      });
    }, 40_000);
  }
});
