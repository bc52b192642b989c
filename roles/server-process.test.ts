/** The start-up hub, site and agent share: a start that fails half-way, or is stopped half-way, leaves nothing running. */
import { createServer, connect, type Server } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../lib/log.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { capturedLog } from "../test/support/log-lines.ts";
import { ManifestSource } from "../services/controller/manifest-source.ts";
import { tempDir } from "../test/support/processes.ts";
import { startHub } from "./hub.ts";
import { startAgent } from "./agent.ts";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { renderHubConfig } from "../nats/render.ts";
import { startServerProcess } from "./server-process.ts";
import { agentActors, loopbackClients } from "./agent-actors.ts";

const blockers: Server[] = [];
afterAll(() => blockers.forEach((server) => server.close()));

/** A port some other program already holds. */
async function takenPort(): Promise<number> {
  const port = await freePort();
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  blockers.push(server);
  return port;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("a server process that cannot finish starting", () => {
  it("hub: refuses with the reason and stops its nats-server (its client port is closed again)", async () => {
    const client = await freePort();
    const start = startHub({
      name: "hub-1",
      dataDir: tempDir(),
      client: { host: "127.0.0.1", port: client },
      leaf: { host: "127.0.0.1", port: await freePort() },
      monitor: { host: "127.0.0.1", port: await freePort() },
      metrics: { host: "127.0.0.1", port: await takenPort() },
      log: silentLogger(),
    });
    await expect(start).rejects.toThrow(/--metrics-listen .* the address is in use/);
    expect(await accepts(client)).toBe(false);
  });

  it("agent: the same, after its controller and catalog mirror were already up", async () => {
    const hubClient = await freePort();
    const hubLeaf = await freePort();
    const hub = await startHub({
      name: "hub-1",
      dataDir: tempDir(),
      client: { host: "127.0.0.1", port: hubClient },
      leaf: { host: "127.0.0.1", port: hubLeaf },
      monitor: { host: "127.0.0.1", port: await freePort() },
      log: silentLogger(),
    });
    try {
      const client = await freePort();
      const start = startAgent({
        node: "edge-a",
        upstreams: [`nats://127.0.0.1:${hubLeaf}`],
        dataDir: tempDir(),
        client: { host: "127.0.0.1", port: client },
        monitor: { host: "127.0.0.1", port: await freePort() },
        metrics: { host: "127.0.0.1", port: await takenPort() },
        log: silentLogger(),
      });
      await expect(start).rejects.toThrow(/the address is in use/);
      expect(await accepts(client)).toBe(false);
    } finally {
      await hub.stop();
    }
  });
});

describe("a server process stopped by a signal to its whole group (Ctrl-C, systemd's stop)", () => {
  it("takes its nats-server's exit for the stop while its parts still stop: no failure said, no restart", async () => {
    const { log, lines } = capturedLog("debug");
    const hub = await startHub({
      name: "hub-1",
      dataDir: tempDir(),
      client: { host: "127.0.0.1", port: await freePort() },
      leaf: { host: "127.0.0.1", port: await freePort() },
      monitor: { host: "127.0.0.1", port: await freePort() },
      source: new ManifestSource({ path: tempDir(), log }),
      log,
    });
    await eventually(() => hub.publisher.leading, 10_000, "the hub to hold the publisher lease");
    // The signal reaches the server and leafmesh at once; leafmesh's stop releases its lease first, which now cannot answer (seconds).
    process.kill(hub.server.pid!, "SIGTERM");
    await hub.stop();
    expect(lines.filter((line) => line.level === 50).map((line) => line.msg)).toEqual([]);
    expect(lines.filter((line) => /restart/.test(String(line.msg)))).toEqual([]);
    expect(hub.server.state).toBe("stopped");
  }, 30_000);
});

describe("a server process whose nats-server dies under its first connection", () => {
  it("connects to the server its supervisor starts again, instead of ending with 'cannot connect to NATS'", async () => {
    const dataDir = tempDir();
    const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
    const { log, lines } = capturedLog("debug");
    let killed = 0;
    const node = await startServerProcess({
      name: "hub-1",
      role: "hub",
      client: { host: "127.0.0.1", port: client },
      log,
      // Called while the connection's handshake is under way: the first time, the server is killed there (kill -9),
      // as a crash just after it was ready would.
      connectOptions: {
        authenticator: () => {
          if (killed === 0) {
            killed = Number(readFileSync(join(dataDir, "nats-server.pid"), "utf8"));
            process.kill(killed, "SIGKILL");
          }
          return undefined;
        },
      },
      server: { dataDir, monitor: { host: "127.0.0.1", port: monitor }, configText: renderHubConfig({ serverName: "hub-1", storeDir: join(dataDir, "js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } }) },
    });
    try {
      expect(killed).toBeGreaterThan(0);
      expect(node.server.pid).not.toBe(killed);
      expect(node.connection.isClosed()).toBe(false);
      expect(lines.some((line) => line.msg === "the nats-server exited as this process connected to it; connecting to it again, restarted")).toBe(true);
    } finally {
      await node.stop();
    }
  }, 30_000);
});

/** What a start that should have ended says: its error, or (a start that finished) undefined, the role stopped again. */
async function failureOf(start: Promise<{ stop(): Promise<void> }>): Promise<(Error & { code?: string }) | undefined> {
  return start.then(
    async (role) => void (await role.stop()),
    (error: unknown) => error as Error & { code?: string },
  );
}

describe("a server process stopped while its parts start, its nats-server ready (a Ctrl-C in the start's last second)", () => {
  it("agent: a stop asked as its DNS starts ends the start there, with INTERRUPTED: its DNS and server stopped, its SOCKS proxy never started", async () => {
    const stop = new AbortController();
    // The Ctrl-C comes as the DNS actor, the first of its actors, says it serves.
    const { log } = capturedLog("info", (line) => line.actor === "dns" && stop.abort());
    const [client, dns, socks] = [await freePort(), await freePort(), await freePort()];
    const failure = await failureOf(
      startAgent({
        node: "edge-a",
        upstreams: [`nats://127.0.0.1:${await freePort()}`],
        dataDir: tempDir(),
        client: { host: "127.0.0.1", port: client },
        monitor: { host: "127.0.0.1", port: await freePort() },
        actors: agentActors({ proxyHost: "127.0.0.1", intercept: "off", clusterDomain: "cluster.local", dns: { host: "127.0.0.1", port: dns }, socks: { host: "127.0.0.1", port: socks }, socksClients: loopbackClients }),
        signal: stop.signal,
        log,
      }),
    );
    // Before: the start went on to its end (the SOCKS proxy listening, "agent ready"), and the CLI then stopped it with exit 0.
    expect(stop.signal.aborted).toBe(true);
    expect(failure?.code).toBe("INTERRUPTED");
    expect(failure?.message).toBe("stopped while it was starting, after its nats-server 'edge-a' was ready: nothing is left running");
    expect(await accepts(client)).toBe(false);
    expect(await accepts(dns)).toBe(false);
    expect(await accepts(socks)).toBe(false);
  }, 30_000);

  it("hub: a stop asked as its metrics endpoint opens ends the start there, with INTERRUPTED, its server and metrics stopped", async () => {
    const stop = new AbortController();
    const { log } = capturedLog("info", (line) => line.msg === "metrics and health endpoints listening" && stop.abort());
    const [client, metrics] = [await freePort(), await freePort()];
    const failure = await failureOf(
      startHub({
        name: "hub-1",
        dataDir: tempDir(),
        client: { host: "127.0.0.1", port: client },
        leaf: { host: "127.0.0.1", port: await freePort() },
        monitor: { host: "127.0.0.1", port: await freePort() },
        metrics: { host: "127.0.0.1", port: metrics },
        signal: stop.signal,
        log,
      }),
    );
    // Before: "hub ready", and a clean stop after it.
    expect(stop.signal.aborted).toBe(true);
    expect(failure?.code).toBe("INTERRUPTED");
    expect(failure?.message).toBe("stopped while it was starting, after its nats-server 'hub-1' was ready: nothing is left running");
    expect(await accepts(client)).toBe(false);
    expect(await accepts(metrics)).toBe(false);
  }, 30_000);
});
