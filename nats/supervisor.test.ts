import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NatsServerSupervisor } from "./supervisor.ts";
import { silentLogger } from "../lib/log.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { renderHubConfig, renderLeafConfig, toLeafUrl } from "./render.ts";

const dirs: string[] = [];
const servers: NatsServerSupervisor[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => server.stop()));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "leafmesh-nats-"));
  dirs.push(dir);
  return dir;
}

async function leafz(monitorPort: number): Promise<{ leafnodes: number; leafs?: { name: string }[] }> {
  const response = await fetch(`http://127.0.0.1:${monitorPort}/leafz`);
  return (await response.json()) as { leafnodes: number; leafs?: { name: string }[] };
}

describe("nats-server configs and supervisor", () => {
  it("renders configs that nats-server accepts, connects a leaf to its hub, and restarts a crashed server", async () => {
    const hubDir = tempDir();
    const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
    const hub = new NatsServerSupervisor({
      name: "hub-1",
      dataDir: hubDir,
      monitor: { host: "127.0.0.1", port: monitor },
      log: silentLogger(),
      configText: renderHubConfig({
        serverName: "hub-1",
        storeDir: join(hubDir, "js"),
        client: { host: "127.0.0.1", port: client },
        leaf: { host: "127.0.0.1", port: leaf },
        monitor: { host: "127.0.0.1", port: monitor },
      }),
    });
    servers.push(hub);
    await hub.start();
    expect(hub.state).toBe("ready");

    const agentDir = tempDir();
    const [agentClient, agentMonitor] = [await freePort(), await freePort()];
    const statuses: string[] = [];
    const agent = new NatsServerSupervisor({
      name: "edge-a",
      dataDir: agentDir,
      monitor: { host: "127.0.0.1", port: agentMonitor },
      log: silentLogger(),
      backoffMinMs: 50,
      onStatus: (status) => statuses.push(status),
      configText: renderLeafConfig({
        serverName: "edge-a",
        domain: "edge-a",
        storeDir: join(agentDir, "js"),
        client: { host: "127.0.0.1", port: agentClient },
        monitor: { host: "127.0.0.1", port: agentMonitor },
        upstreams: [toLeafUrl(`nats://127.0.0.1:${leaf}`)],
      }),
    });
    servers.push(agent);
    await agent.start();
    await eventually(async () => (await leafz(monitor)).leafnodes === 1, 10_000, "the leaf to connect to the hub");

    const firstPid = agent.pid!;
    process.kill(firstPid, "SIGKILL");
    await eventually(() => agent.pid !== undefined && agent.pid !== firstPid && agent.state === "ready", 15_000, "the supervisor to restart the server");
    expect(statuses).toContain("exited");
    await eventually(async () => (await leafz(monitor)).leafnodes === 1, 10_000, "the restarted leaf to reconnect");

    await agent.stop();
    expect(agent.state).toBe("stopped");
    expect(() => process.kill(firstPid, 0)).toThrow();
  });

  it("refuses a config nats-server rejects, quoting its error", async () => {
    const dir = tempDir();
    const server = new NatsServerSupervisor({
      name: "bad",
      dataDir: dir,
      monitor: { host: "127.0.0.1", port: await freePort() },
      log: silentLogger(),
      configText: "listen: 127.0.0.1:notaport\njetstream { bogus_option: { } }\n",
    });
    await expect(server.start()).rejects.toThrow(/rejected the configuration/);
    expect(server.state).toBe("failed");
  });

  it("rejects upstream URLs that are not URLs", () => {
    expect(() =>
      renderLeafConfig({
        serverName: "x",
        domain: "x",
        storeDir: "/tmp/x",
        client: { host: "127.0.0.1", port: 1 },
        monitor: { host: "127.0.0.1", port: 2 },
        upstreams: ["hub.example:7422x"],
      }),
    ).toThrow(/upstream/);
  });
});
