/**
 * A relayed transfer whose far side stalls or loses its own server, with real
 * agent processes whose only path is the relay through the hub (--tunnel-ways
 * relay); a client downloads from a source behind edge-c through edge-a's SOCKS
 * proxy (by node name). test/relay-kill.test.ts holds the kills of the far agent
 * and of the hub; these are the faults beside them (probed with
 * lab/live-ops-probe.ts, which also runs them on direct paths):
 *
 * - edge-c frozen (SIGSTOP; the probe held it 30 s): its relay channels go silent, and edge-a
 *   resets them after the idle timeout (relay-channel.ts), so the client reads
 *   ECONNRESET while edge-c is still frozen, not a wait without end and never a
 *   clean end; edge-a says why on mesh.edge-a.tunnel.relay. Once edge-c runs
 *   again (SIGCONT) a new stream works.
 * - edge-c's own nats-server killed (-9): the relay loses frames, the channel
 *   resets (a sequence gap, never bytes skipped), the agent starts its server
 *   again and says so, and a new stream works.
 */
import { execFileSync } from "node:child_process";
import type { Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTarget, watchEnding, type Ending, type FaultTarget } from "./support/fault-targets.ts";
import { writePsk } from "./support/manifests.ts";
import { eventually, freePort } from "./support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess } from "./support/processes.ts";
import { echoesThroughSocks, readAtLeast, socksConnect } from "./support/socks-client.ts";

let hub: HubProcess;
let source: FaultTarget;
let echo: FaultTarget;
let edgeA: AgentProcess;
let edgeC: AgentProcess;
let socksPort: number;

beforeAll(async () => {
  // Never ends by itself: any end the client reads is a cut.
  [source, echo] = await Promise.all([startTarget("source", { bytes: 64 * 1024 * 1024 * 1024 }), startTarget("echo")]);
  const psk = writePsk(tempDir());
  hub = await startHubProcess({ name: "hub-1" });
  socksPort = await freePort();
  const tunnelArgs = ["--psk", psk, "--mdns", "off", "--tunnel-ways", "relay"];
  [edgeA, edgeC] = await Promise.all([
    startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], extraArgs: [...tunnelArgs, "--socks", `127.0.0.1:${socksPort}`] }),
    startAgentProcess({ node: "edge-c", hubs: [hub.leafUrl], extraArgs: tunnelArgs }),
  ]);
  await echoesThroughSocks(socksPort, "edge-c", echo.port, 30_000, "a relayed stream edge-a → edge-c");
}, 90_000);

afterAll(async () => {
  await stopAllProcesses();
  await Promise.all([source, echo].map((target) => target?.close()));
});

/** A download from behind edge-c, 4 MiB of it read: the transfer is under way. */
async function downloadUnderWay(): Promise<Socket> {
  const client = await socksConnect(socksPort, "edge-c", source.port);
  client.on("error", () => undefined);
  await readAtLeast(client, 4 * 1024 * 1024, 15_000);
  return client;
}

describe("a relayed transfer whose far side stalls or loses its server", () => {
  it("edge-c frozen (SIGSTOP): the client reads ECONNRESET within 30 s, while edge-c is still frozen, edge-a says why, and a new stream works once it runs", { timeout: 75_000 }, async () => {
    const bus = await edgeA.connection();
    const resets: string[] = [];
    bus.subscribe("mesh.edge-a.tunnel.relay", { callback: (_error, message) => {
      const event = message.json<{ status: string; reason?: string }>();
      if (event.status === "reset") resets.push(event.reason ?? "");
    } });
    await bus.flush();
    const client = await downloadUnderWay();
    const ending = watchEnding(client);
    process.kill(edgeC.child.pid!, "SIGSTOP");
    let result: Ending;
    try {
      result = await Promise.race([ending, new Promise<Ending>((resolve) => setTimeout(() => resolve({ bytes: 0, how: "still open after 30 s of edge-c frozen" }), 30_000))]);
    } finally {
      process.kill(edgeC.child.pid!, "SIGCONT");
      client.destroy();
    }
    expect(result.how).toBe("ECONNRESET");
    // Published as the channel resets, so it may land a moment after the client's RST.
    await eventually(() => resets.some((reason) => /no frame from edge-c for \d+ ms \(relay path lost\)/.test(reason)), 5_000, `a reset on mesh.edge-a.tunnel.relay that says why (seen: ${JSON.stringify(resets)})`);
    await echoesThroughSocks(socksPort, "edge-c", echo.port, 20_000, "a new stream once edge-c runs again");
  });

  it("edge-c's own nats-server killed: the client reads ECONNRESET, edge-c starts its server again and says so, and a new stream works", { timeout: 60_000 }, async () => {
    const client = await downloadUnderWay();
    const ending = watchEnding(client);
    const [serverPid] = execFileSync("pgrep", ["-f", `nats-server.*${edgeC.dataDir}`], { encoding: "utf8" }).trim().split("\n").map(Number);
    process.kill(serverPid, "SIGKILL");
    const result = await Promise.race([ending, new Promise<Ending>((resolve) => setTimeout(() => resolve({ bytes: 0, how: "still open 20 s after the kill" }), 20_000))]);
    client.destroy();
    expect(result.how).toBe("ECONNRESET");
    await echoesThroughSocks(socksPort, "edge-c", echo.port, 20_000, "a new stream after edge-c's server came back");
    expect(edgeC.output()).toMatch(/"detail":"killed by SIGKILL","restarts":1/);
  });
});
