/**
 * restartWith (relay choice moving a running agent's leaf link) checks the new configuration with `nats-server -t`
 * off the event loop: the agent's DNS, proxy and tunnel go on while the binary runs. It ran synchronously: every move
 * held the loop for the check, and a binary that hung (a broken wrapper script) froze the agent for good.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../lib/log.ts";
import { freePort } from "../test/support/ports.ts";
import { renderHubConfig } from "./render.ts";
import { NatsServerSupervisor } from "./supervisor.ts";

const dirs: string[] = [];
const servers: NatsServerSupervisor[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => server.stop()));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe("restartWith checks the new configuration off the event loop", () => {
  it("a slow `nats-server -t` holds no timer of the process, and the server comes back with the new configuration", { timeout: 30_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "leafmesh-restart-check-"));
    dirs.push(dir);
    // The real nats-server, behind a wrapper whose configuration check takes 1.5 s once the file `slow` exists.
    const binary = join(dir, "nats-server-wrapper");
    writeFileSync(binary, `#!/bin/sh\nif [ "$1" = "-t" ] && [ -e ${dir}/slow ]; then sleep 1.5; fi\nexec nats-server "$@"\n`);
    chmodSync(binary, 0o755);
    const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
    const render = (name: string) => renderHubConfig({ serverName: name, storeDir: join(dir, "js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } });
    const server = new NatsServerSupervisor({ name: "hub-r", dataDir: dir, binary, monitor: { host: "127.0.0.1", port: monitor }, log: silentLogger(), configText: render("hub-r") });
    servers.push(server);
    await server.start();
    const firstPid = server.pid;

    writeFileSync(join(dir, "slow"), "");
    // A timer every 20 ms, as the agent's own (DNS, proxy, tunnel) would run: the longest gap between two of them.
    let last = performance.now();
    let longestGapMs = 0;
    const ticks = setInterval(() => {
      const now = performance.now();
      longestGapMs = Math.max(longestGapMs, now - last);
      last = now;
    }, 20);
    try {
      await server.restartWith(render("hub-r2"));
    } finally {
      clearInterval(ticks);
    }
    expect(server.state).toBe("ready");
    expect(server.pid).not.toBe(firstPid);
    // Before: the loop stood still for the whole check (≥ 1.5 s).
    expect(longestGapMs, "the longest the event loop stood still during restartWith, in ms").toBeLessThan(1_000);
  });
});
