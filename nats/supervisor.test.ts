import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NatsServerSupervisor, type NatsServerOptions } from "./supervisor.ts";
import { silentLogger } from "../lib/log.ts";
import { capturedLog } from "../test/support/log-lines.ts";
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

  it("starts a server whose addresses are IPv6: its monitor is asked at http://[::1]:port, not http://::1:port", async () => {
    const dir = tempDir();
    const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
    const server = new NatsServerSupervisor({
      name: "six",
      dataDir: dir,
      monitor: { host: "::1", port: monitor },
      log: silentLogger(),
      configText: renderHubConfig({ serverName: "six", storeDir: join(dir, "js"), client: { host: "::1", port: client }, leaf: { host: "::1", port: leaf }, monitor: { host: "::1", port: monitor } }),
    });
    servers.push(server);
    await server.start();
    expect(server.state).toBe("ready");
    await server.stop();
  });

  it("supervises again once started after a stop: a crash of the second server is restarted, and the actor follows it", async () => {
    const dir = tempDir();
    const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
    const statuses: string[] = [];
    const server = new NatsServerSupervisor({
      name: "again",
      dataDir: dir,
      monitor: { host: "127.0.0.1", port: monitor },
      log: silentLogger(),
      backoffMinMs: 50,
      onStatus: (status) => statuses.push(status),
      configText: renderHubConfig({ serverName: "again", storeDir: join(dir, "js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } }),
    });
    servers.push(server);
    const states: string[] = [];
    server.actor.subscribe((snapshot) => states.push(String(snapshot.value)));
    const warnings: unknown[][] = [];
    const warn = console.warn;
    console.warn = (...args: unknown[]) => void warnings.push(args);
    try {
      await server.start();
      await server.stop();
      expect(server.state).toBe("stopped");
      await server.start();
      expect(server.state).toBe("ready");
      await expect(server.start()).rejects.toThrow(/already ready: started twice/);

      const pid = server.pid!;
      process.kill(pid, "SIGKILL");
      await eventually(() => server.pid !== undefined && server.pid !== pid && server.state === "ready", 15_000, "the second server's crash to be restarted");
      expect(statuses.filter((status) => status === "exited")).toHaveLength(1);
      expect(states).toEqual(["starting", "ready", "stopping", "stopped", "starting", "ready", "backoff", "starting", "ready"]);
      await server.stop();
      expect(server.state).toBe("stopped");
      expect(() => process.kill(pid, 0)).toThrow();
    } finally {
      console.warn = warn;
    }
    // xstate warns when an event is sent to a stopped actor, as it was when "stopped" was final.
    expect(warnings.map((args) => args.join(" "))).toEqual([]);
  });

  it("takes a server's exit that a stop follows at once (a Ctrl-C reaches both) for the stop, not a failure", async () => {
    const dir = tempDir();
    const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
    const statuses: string[] = [];
    const { log, lines } = capturedLog("debug");
    const server = new NatsServerSupervisor({
      name: "ctrl-c",
      dataDir: dir,
      monitor: { host: "127.0.0.1", port: monitor },
      log,
      onStatus: (status) => statuses.push(status),
      configText: renderHubConfig({ serverName: "ctrl-c", storeDir: join(dir, "js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } }),
    });
    servers.push(server);
    await server.start();
    const pid = server.pid!;
    // The terminal's SIGINT goes to the whole process group: the server exits by itself as leafmesh starts its stop.
    process.kill(pid, "SIGINT");
    await eventually(() => server.state === "backoff", 10_000, "the server's exit to be seen");
    await server.stop();
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(lines.filter((line) => line.msg === "nats-server exited unexpectedly; restarting")).toEqual([]);
    expect(statuses).not.toContain("exited");
    expect(server.state).toBe("stopped");
    expect(server.pid).toBeUndefined();
  });

  /**
   * The real nats-server behind a wrapper that first writes `lines` as the server would (its own words, which
   * it writes only in moments a test cannot bring about at will), with a log that keeps every line.
   */
  async function serverWriting(name: string, lines: string[], options: Pick<NatsServerOptions, "explainLine"> = {}) {
    const dir = tempDir();
    const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
    const wrapper = join(dir, "nats-server-wrapper");
    const echoes = lines.map((line) => `echo '${line.replaceAll("'", "'\\''")}'`).join("\n");
    writeFileSync(wrapper, `#!/bin/sh\nif [ "$1" != "-t" ]; then\n${echoes}\nfi\nexec nats-server "$@"\n`, { mode: 0o755 });
    const captured = capturedLog("debug");
    const server = new NatsServerSupervisor({
      name,
      binary: wrapper,
      dataDir: dir,
      monitor: { host: "127.0.0.1", port: monitor },
      log: captured.log,
      ...options,
      configText: renderHubConfig({ serverName: name, storeDir: join(dir, "js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } }),
    });
    servers.push(server);
    await server.start();
    return { server, lines: captured.lines };
  }

  it("takes the health check that fails while the server starts (our own readiness poll) for what it is: not a warning", async () => {
    // The line it writes when our first /healthz poll comes before it is ready, said up front.
    const { server, lines } = await serverWriting("starting", ['[4242] 2026/12/06 12:00:00.000000 [WRN] Healthcheck failed: "failed to be ready for connections after 1ms: server"']);
    // The one written up front, and the server's own when a poll of ours did come early (under load): each at debug.
    const said = lines.filter((line) => String(line.msg).startsWith("Healthcheck failed"));
    expect(said.length).toBeGreaterThanOrEqual(1);
    expect(said.filter((line) => line.level !== 20)).toEqual([]);
    await server.stop();
  });

  it("says an explanation of its lines once a minute per kind, though each line's words differ (a time in each)", async () => {
    const refused = (second: number) => `[4242] 2026/12/06 12:00:0${second}.000000 [ERR] Error trying to connect as leafnode to remote server: x509: certificate has expired or is not yet valid: current time 2026-12-01T08:00:0${second}Z is before 2026-12-06T12:00:00Z`;
    const { server, lines } = await serverWriting("explained", [1, 2, 3].map(refused), {
      explainLine: (line) => {
        const time = /current time (\S+)/.exec(line)?.[1];
        return time ? { kind: "clock-behind", text: `this machine's clock (${time}) is behind` } : undefined;
      },
    });
    await eventually(() => lines.filter((line) => /Error trying to connect/.test(String(line.msg))).length === 3, 5_000, "the three lines");
    expect(lines.filter((line) => /is behind$/.test(String(line.msg))).map((line) => [line.level, line.msg])).toEqual([[50, "this machine's clock (2026-12-01T08:00:01Z) is behind"]]);
    await server.stop();
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

  it("writes its configuration readable by its owner only, also over a file an older leafmesh left readable (it holds the route password)", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "nats-server.conf"), "# an older leafmesh's\n", { mode: 0o644 });
    const monitorPort = await freePort();
    const server = new NatsServerSupervisor({
      name: "private",
      dataDir: dir,
      monitor: { host: "127.0.0.1", port: monitorPort },
      log: silentLogger(),
      configText: `listen: 127.0.0.1:${await freePort()}\nhttp: 127.0.0.1:${monitorPort}\n`,
    });
    servers.push(server);
    await server.start();
    expect(statSync(join(dir, "nats-server.conf")).mode & 0o777).toBe(0o600);
  });

  it("says how to install nats-server when its binary cannot be run, and starts nothing", async () => {
    const dir = tempDir();
    const server = new NatsServerSupervisor({
      name: "missing",
      dataDir: dir,
      binary: join(dir, "no-such-nats-server"),
      monitor: { host: "127.0.0.1", port: await freePort() },
      log: silentLogger(),
      configText: "listen: 127.0.0.1:4222\n",
    });
    const failure = await server.start().catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: "NATS_SERVER_MISSING" });
    expect(String((failure as Error).message)).toMatch(/cannot run '.*no-such-nats-server': .*ENOENT.*apt-get install -y nats-server/);
    expect(server.pid).toBeUndefined();
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

describe("restarting with a new configuration (relay choice moves the leaf link this way)", () => {
  it("moves a leaf to the upstream now rendered first, keeps the old server when nats-server rejects the new config, and stays supervised", async () => {
    const hubs = await Promise.all(
      ["hub-a", "hub-b"].map(async (name) => {
        const dir = tempDir();
        const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
        const hub = new NatsServerSupervisor({
          name,
          dataDir: dir,
          monitor: { host: "127.0.0.1", port: monitor },
          log: silentLogger(),
          configText: renderHubConfig({ serverName: name, storeDir: join(dir, "js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } }),
        });
        servers.push(hub);
        await hub.start();
        return { hub, leafUrl: toLeafUrl(`nats://127.0.0.1:${leaf}`), monitor };
      }),
    );
    const dir = tempDir();
    const [client, monitor] = [await freePort(), await freePort()];
    const render = (upstreams: string[]) =>
      renderLeafConfig({ serverName: "edge-m", domain: "edge-m", storeDir: join(dir, "js"), client: { host: "127.0.0.1", port: client }, monitor: { host: "127.0.0.1", port: monitor }, upstreams });
    const statuses: string[] = [];
    const agent = new NatsServerSupervisor({ name: "edge-m", dataDir: dir, monitor: { host: "127.0.0.1", port: monitor }, log: silentLogger(), onStatus: (status) => statuses.push(status), configText: render(hubs.map((hub) => hub.leafUrl)) });
    servers.push(agent);
    await agent.start();
    await eventually(async () => (await leafz(hubs[0].monitor)).leafnodes === 1, 10_000, "the leaf at hub-a");

    const firstPid = agent.pid;
    await agent.restartWith(render([hubs[1].leafUrl, hubs[0].leafUrl]));
    expect(agent.state).toBe("ready");
    expect(agent.pid).not.toBe(firstPid);
    await eventually(async () => (await leafz(hubs[1].monitor)).leafnodes === 1 && (await leafz(hubs[0].monitor)).leafnodes === 0, 10_000, "the leaf at hub-b only");
    expect(statuses.slice(-4)).toEqual(["exited", "restarting", "starting", "ready"]);

    const pid = agent.pid;
    await expect(agent.restartWith("this is { not a config")).rejects.toThrow(/rejected the new configuration/);
    expect(agent.pid).toBe(pid);
    expect(agent.state).toBe("ready");

    // Still supervised: a crash after the replacement is restarted as before.
    process.kill(agent.pid!, "SIGKILL");
    await eventually(() => agent.state === "ready" && agent.pid !== pid, 15_000, "the replaced server restarted after a crash");
  }, 60_000);
});

describe("a TLS leafnode port probed by agents", () => {
  it("logs a dialler that hung up after INFO (an upstream probe) at debug, not as an error", async () => {
    const { selfSignedCertificate } = await import("../test/support/certificates.ts");
    const { probeLeafPort } = await import("./upstream-probe.ts");
    const { writeFileSync } = await import("node:fs");
    const { Writable } = await import("node:stream");
    const { createLogger } = await import("../lib/log.ts");
    const dir = tempDir();
    const { cert, key } = selfSignedCertificate(["localhost"]);
    writeFileSync(join(dir, "cert.pem"), cert);
    writeFileSync(join(dir, "key.pem"), key);
    const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
    const lines: { level: number; msg: string }[] = [];
    const destination = new Writable({ write: (chunk, _encoding, done) => void (lines.push(JSON.parse(String(chunk))), done()) });
    const hub = new NatsServerSupervisor({
      name: "hub-tls",
      dataDir: dir,
      monitor: { host: "127.0.0.1", port: monitor },
      log: createLogger({ level: "debug", destination }),
      configText: [
        `server_name: hub-tls`,
        `listen: 127.0.0.1:${client}`,
        `http: 127.0.0.1:${monitor}`,
        `leafnodes { listen: 127.0.0.1:${leaf}, tls { cert_file: "${join(dir, "cert.pem")}", key_file: "${join(dir, "key.pem")}", ca_file: "${join(dir, "cert.pem")}", verify: true } }`,
      ].join("\n"),
    });
    servers.push(hub);
    await hub.start();
    const probe = await probeLeafPort("127.0.0.1", leaf, 2_000);
    expect(probe).toMatchObject({ ok: true, server: "hub-tls" });
    const line = await eventually(() => lines.find((entry) => /handshake error: EOF/.test(entry.msg)), 5_000, "the hub's line about the probe");
    expect(line.level, `logged as ${line.level}: ${line.msg}`).toBe(20);
    expect(lines.filter((entry) => entry.level >= 50)).toEqual([]);
  }, 30_000);
});
