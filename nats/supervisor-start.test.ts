/**
 * A first start that goes wrong, with real nats-server processes: the start fails, saying why, and leaves nothing
 * running; a server of another process answering on the monitor address is not taken for ours; a stop asked
 * while the server starts, or while its binary is checked (a hung wrapper script), ends the start.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NatsServerSupervisor } from "./supervisor.ts";
import { capturedLog } from "../test/support/log-lines.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { renderHubConfig, type ClusterOptions } from "./render.ts";

const dirs: string[] = [];
const servers: NatsServerSupervisor[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => server.stop()));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A supervised hub-style server on loopback; `monitor` given: that monitor port (another server's, in a test). */
async function supervised(name: string, monitor?: number, extra: { cluster?: (port: number) => ClusterOptions; readyTimeoutMs?: number; binary?: string } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "leafmesh-start-"));
  dirs.push(dir);
  const ports = { client: await freePort(), leaf: await freePort(), monitor: monitor ?? (await freePort()) };
  const captured = capturedLog("debug");
  const server = new NatsServerSupervisor({
    name,
    dataDir: dir,
    monitor: { host: "127.0.0.1", port: ports.monitor },
    log: captured.log,
    backoffMinMs: 50,
    readyTimeoutMs: extra.readyTimeoutMs,
    binary: extra.binary,
    configText: renderHubConfig({
      serverName: name,
      storeDir: join(dir, "js"),
      client: { host: "127.0.0.1", port: ports.client },
      leaf: { host: "127.0.0.1", port: ports.leaf },
      monitor: { host: "127.0.0.1", port: ports.monitor },
      cluster: extra.cluster?.(await freePort()),
    }),
  });
  servers.push(server);
  return { server, lines: captured.lines, ports };
}

/** Whether a process runs (a zombie, exited and not yet reaped, does not). */
function running(pid: number): boolean {
  return existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z ");
}

const restarts = (lines: Record<string, unknown>[]) => lines.filter((line) => line.msg === "nats-server exited unexpectedly; restarting");

describe("a nats-server's first start", () => {
  it("whose monitor address another nats-server serves: fails, saying its server exited and why, and does not take the other's health for its own", { timeout: 30_000 }, async () => {
    const other = await supervised("other");
    await other.server.start();
    const { server, lines } = await supervised("second", other.ports.monitor);
    // Before: the other server's /healthz answered, start() resolved, and its own server exited, restarted in a loop.
    const failure = (await server.start().then(() => undefined, (error: unknown) => error)) as Error | undefined;
    expect(failure?.message).toMatch(/nats-server 'second' exited with code 1 while starting\. Its last lines:/);
    expect(failure?.message).toContain("address already in use");
    expect(failure?.message).toContain("Another process holds one of its addresses");
    // Given a moment in which a restart (500 ms backoff at most here) would have come.
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(restarts(lines)).toEqual([]);
    expect(server.pid).toBeUndefined();
    expect(server.state).toBe("failed");
    expect(other.server.state).toBe("ready");
  });

  it("whose server is killed (kill -9) while it starts: fails at once, saying it was killed, and starts no other", { timeout: 30_000 }, async () => {
    const { server, lines } = await supervised("killed");
    let pid = 0;
    const failure = (await server
      .start(() => {
        pid = server.pid!;
        process.kill(pid, "SIGKILL");
      })
      .then(() => undefined, (error: unknown) => error)) as Error | undefined;
    // Before: "did not become ready … Its last lines: (none)", and the server was started again behind the failed start.
    expect(failure?.message).toMatch(/^nats-server 'killed' killed by SIGKILL while starting\./);
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(restarts(lines)).toEqual([]);
    expect(server.pid).toBeUndefined();
  });

  it("stopped by a signal while its server starts: the server is stopped and the start ends with INTERRUPTED", { timeout: 30_000 }, async () => {
    const { server } = await supervised("interrupted");
    const stop = new AbortController();
    let pid = 0;
    const failure = (await server
      .start(() => {
        pid = server.pid!;
        stop.abort();
      }, stop.signal)
      .then(() => undefined, (error: unknown) => error)) as (Error & { code?: string }) | undefined;
    // Before: the signal was not heard, and the start went on until the server was ready.
    expect(failure?.code).toBe("INTERRUPTED");
    expect(failure?.message).toContain("stopped while its nats-server 'interrupted' was starting");
    expect(pid).toBeGreaterThan(0);
    expect(running(pid)).toBe(false);
    expect(server.pid).toBeUndefined();
    await server.stop();
    expect(server.state).toBe("stopped");
  });

  it("stopped by a signal while its binary hangs (a broken wrapper script): the binary and what it started are killed, and the start ends with INTERRUPTED", { timeout: 30_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "leafmesh-hung-"));
    dirs.push(dir);
    // Runs for --version and for -t alike; each run notes its own pid and its sleep's.
    const binary = join(dir, "nats-server");
    writeFileSync(binary, `#!/bin/sh\necho $$ >> ${dir}/pids\nsleep 60 &\necho $! >> ${dir}/pids\nwait\n`);
    chmodSync(binary, 0o755);
    const pids = () => (existsSync(join(dir, "pids")) ? readFileSync(join(dir, "pids"), "utf8").trim().split("\n").map(Number) : []);
    const { server } = await supervised("hung", undefined, { binary });
    const stop = new AbortController();
    const start = server.start(undefined, stop.signal).then(() => undefined, (error: unknown) => error as Error & { code?: string });
    await eventually(() => pids().length === 4, 10_000, "both runs of the binary and their sleeps");
    stop.abort();
    // Before: the start waited for the runs' 30 s timeout, and the sleeps ran on after it.
    const failure = await Promise.race([start, new Promise<string>((resolve) => setTimeout(() => resolve("still starting 10 s after the stop"), 10_000))]);
    expect(typeof failure === "string" ? failure : failure?.code).toBe("INTERRUPTED");
    expect((failure as Error).message).toContain("stopped while its nats-server 'hung' was starting");
    await eventually(() => pids().every((pid) => !running(pid)), 5_000, "the binary's runs and their sleeps to be gone");
    expect(server.pid).toBeUndefined();
  });

  it("asked to stop before it spawns anything: starts nothing", async () => {
    const { server } = await supervised("never");
    const failure = (await server.start(undefined, AbortSignal.abort()).then(() => undefined, (error: unknown) => error)) as (Error & { code?: string }) | undefined;
    expect(failure?.code).toBe("INTERRUPTED");
    expect(server.pid).toBeUndefined();
  });

  it("of a clustered server whose other servers are not up: fails saying to start them with it", { timeout: 30_000 }, async () => {
    const [two, three] = [await freePort(), await freePort()];
    const cluster = (port: number): ClusterOptions => ({ name: "hubs", listen: { host: "127.0.0.1", port }, routes: [`nats-route://127.0.0.1:${two}`, `nats-route://127.0.0.1:${three}`] });
    const { server } = await supervised("alone", undefined, { cluster, readyTimeoutMs: 3_000 });
    const failure = (await server.start().then(() => undefined, (error: unknown) => error)) as Error | undefined;
    // Before: nats-server's lines only ("Healthcheck failed", "Waiting for routing to be established...").
    expect(failure?.message).toMatch(/^nats-server 'alone' did not become ready/);
    expect(failure?.message).toContain("Its cluster has no majority up yet: start the other servers of its --routes at the same time");
    expect(server.pid).toBeUndefined();
  });
});
