/**
 * The watch on a server's own JetStream, against a real nats-server that stops
 * answering (SIGSTOP: nothing it is asked comes back, as with the store stuck
 * on a full disk; test/full-disk.test.ts has that case whole). A lone server
 * is killed and its supervisor restarts it; one of a cluster is only said.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { connectNats } from "../bus/connect.ts";
import { createLogger } from "../lib/log.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { renderHubConfig } from "./render.ts";
import { watchStore } from "./store-watchdog.ts";
import { NatsServerSupervisor } from "./supervisor.ts";

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function silentServer(restart: boolean) {
  const dir = mkdtempSync(join(tmpdir(), "leafmesh-watchdog-"));
  const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
  const lines: string[] = [];
  const log = createLogger({ level: "info", destination: new Writable({ write: (chunk, _encoding, callback) => (lines.push(chunk.toString()), callback()) }) });
  const server = new NatsServerSupervisor({
    name: "watched",
    dataDir: dir,
    monitor: { host: "127.0.0.1", port: monitor },
    log,
    backoffMinMs: 50,
    configText: renderHubConfig({ serverName: "watched", storeDir: join(dir, "js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } }),
  });
  await server.start();
  cleanups.push(() => server.stop());
  const connection = await connectNats({ servers: [`nats://127.0.0.1:${client}`], name: "watchdog-test" });
  cleanups.push(() => connection.close());
  const watchdog = watchStore({ connection, stream: "KV_mesh-catalog", dataDir: dir, server, log, intervalMs: 200, timeoutMs: 300, restartAfter: 3, restart });
  cleanups.push(() => watchdog.stop());
  // An answering JetStream (no such stream: an answer) is left alone.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  expect(watchdog.restarts).toBe(0);
  const pid = server.pid!;
  process.kill(pid, "SIGSTOP");
  cleanups.push(() => {
    try {
      process.kill(pid, "SIGCONT");
    } catch {
      // already gone
    }
  });
  return { server, watchdog, lines, pid };
}

describe("the watch on a server's own JetStream", () => {
  it("restarts a lone server whose JetStream stays silent, saying why", async () => {
    const { server, watchdog, lines, pid } = await silentServer(true);
    await eventually(() => server.pid !== undefined && server.pid !== pid && server.state === "ready", 20_000, "the silent server restarted");
    expect(watchdog.restarts).toBe(1);
    expect(lines.some((line) => line.includes("has not answered for 3 asks in a row") && line.includes("restarting its nats-server"))).toBe(true);
  }, 30_000);

  it("only says it for a server of a cluster, which may be waiting for its quorum", async () => {
    const { server, watchdog, lines, pid } = await silentServer(false);
    await eventually(() => lines.some((line) => line.includes("not restarted, as a server of a cluster")), 20_000, "the silence said");
    expect(watchdog.restarts).toBe(0);
    expect(server.pid).toBe(pid);
  }, 30_000);
});
