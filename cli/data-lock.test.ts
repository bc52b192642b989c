/**
 * One leafmesh process per data directory: a second agent on the first's --data is refused and the first goes on
 * unharmed; a lock left by a kill -9 is taken over; a lock whose pid was reused by another process is stale too.
 */
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { freePort } from "../test/support/ports.ts";
import { runCli, startAgentProcess, stopAllProcesses, tempDir } from "../test/support/processes.ts";
import { lockDataDirectory } from "./data-lock.ts";

afterEach(stopAllProcesses);

describe("the data directory's lock", () => {
  it("refuses a second agent on a running agent's --data, and the first keeps its own nats-server", async () => {
    const dataDir = tempDir();
    const first = await startAgentProcess({ node: "edge-a", hubs: ["nats://127.0.0.1:1"], dataDir });
    const config = readFileSync(join(dataDir, "nats-server.conf"), "utf8");
    const second = await runCli(["agent", "--insecure", "--node", "edge-a", "--hub", "nats://127.0.0.1:1", "--data", dataDir, "--nats-listen", `127.0.0.1:${await freePort()}`, "--monitor-listen", `127.0.0.1:${await freePort()}`, "--metrics-listen", "off"], 20_000);
    expect(second.code).toBe(2);
    expect(second.stderr).toContain(`--data ${dataDir} is in use by leafmesh agent (pid ${first.child.pid})`);
    // Before the lock, the second wrote its own ports into this file and killed the first's server as a leftover.
    expect(readFileSync(join(dataDir, "nats-server.conf"), "utf8")).toBe(config);
    expect(first.output()).not.toContain("nats-server exited unexpectedly");
    expect((await first.view()).status.role).toBe("agent");
  });

  it("takes over a lock whose process is gone (kill -9), and one whose pid now belongs to another process", async () => {
    const dataDir = tempDir();
    const first = await startAgentProcess({ node: "edge-a", hubs: ["nats://127.0.0.1:1"], dataDir });
    first.child.kill("SIGKILL");
    await new Promise((resolve) => first.child.once("exit", resolve));
    const again = await startAgentProcess({ node: "edge-a", hubs: ["nats://127.0.0.1:1"], dataDir });
    expect(JSON.parse(readFileSync(join(dataDir, "leafmesh.lock"), "utf8")).pid).toBe(again.child.pid);
    await again.stop();

    // A live process under the recorded pid, but not the one that wrote it (its start time differs): stale.
    const other = tempDir();
    const sleeper = spawn("sleep", ["30"]);
    try {
      writeFileSync(join(other, "leafmesh.lock"), JSON.stringify({ pid: sleeper.pid, start: 1, role: "agent" }));
      expect(() => lockDataDirectory(other, "agent")).not.toThrow();
      expect(JSON.parse(readFileSync(join(other, "leafmesh.lock"), "utf8")).pid).toBe(process.pid);
    } finally {
      sleeper.kill();
    }
  });
});
