/**
 * A node whose wall clock is set while it carries a relayed stream, as NTP sets an edge box's when it first answers
 * or corrects a drifting RTC: ten minutes on, then an hour back. The stream carries on through both, and the node's
 * own log does not say that the relay path was lost. Before, relay channels timed their pings and their idle timeout on
 * the wall clock: the jump forward reset every relayed stream of the node at once ("no frame for 600000 ms"), and the
 * jump back stopped its pings for the hour, so its peers reset the streams.
 */
import { join } from "node:path";
import type { Socket } from "node:net";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { settableClock } from "../../test/support/clock-skew.ts";
import { startTarget, type FaultTarget } from "../../test/support/fault-targets.ts";
import { freePort } from "../../test/support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, runCliOk as cli } from "../../test/support/processes.ts";
import { echoesThroughSocks, readAtLeast, socksConnect } from "../../test/support/socks-client.ts";
import { requireTools } from "../../test/support/trust-servers.ts";

let echo: FaultTarget;
let edgeA: AgentProcess;
let socks: number;
const clock = settableClock();
const sleep = (ms: number) => new Promise((wake) => setTimeout(wake, ms));

beforeAll(async () => {
  requireTools();
  echo = await startTarget("echo");
  const keys = join(tempDir(), "keys");
  await cli("keys", "init", "--dir", keys);
  for (const node of ["edge-a", "edge-b"]) await cli("keys", "issue", "--dir", keys, "--node", node);
  const hub = await startHubProcess({ name: "hub-1", keys });
  socks = await freePort();
  const hubs = [hub.leafUrl.replace("nats://", "tls://")];
  edgeA = await startAgentProcess({ node: "edge-a", hubs, keys: join(keys, "nodes", "edge-a"), extraArgs: ["--tunnel-ways", "relay", "--mdns", "off", "--socks", `127.0.0.1:${socks}`], env: clock.env });
  await startAgentProcess({ node: "edge-b", hubs, keys: join(keys, "nodes", "edge-b"), extraArgs: ["--tunnel-ways", "relay", "--mdns", "off"] });
  await echoesThroughSocks(socks, "edge-b", echo.port, 30_000, "a relayed stream edge-a → edge-b");
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
  await echo?.close();
});

async function echoes(socket: Socket): Promise<void> {
  const payload = randomBytes(1024);
  socket.write(payload);
  expect((await readAtLeast(socket, payload.length, 5_000)).equals(payload)).toBe(true);
}

describe("a node whose clock is set while it relays", () => {
  it("keeps its relayed stream through ten minutes on and an hour back", async () => {
    const socket = await socksConnect(socks, "edge-b", echo.port);
    let closed = false;
    socket.on("close", () => (closed = true));
    try {
      await echoes(socket);
      clock.set(600);
      // Past a few of the channel's ticks (every second) on the new time.
      await sleep(3_000);
      await echoes(socket);
      clock.set(-3_600);
      // Past the peer's idle timeout (8 s without a frame from this node resets its end).
      await sleep(12_000);
      await echoes(socket);
      expect(closed).toBe(false);
      expect(edgeA.output()).not.toMatch(/relay path lost/);
    } finally {
      socket.destroy();
      clock.set(0);
    }
  }, 60_000);
});
