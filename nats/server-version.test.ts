/**
 * The nats-server version is checked where leafmesh spawns it. Only Debian's 2.9.10 is installed here,
 * and no other nats-server release can be installed on this machine: so an older and a newer server are
 * each a small executable script that prints another version for `--version` and otherwise execs the
 * real nats-server, which then runs as it always does.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { afterAll, describe, expect, it } from "vitest";
import { NatsServerSupervisor } from "./supervisor.ts";
import { parseServerVersion } from "./server-version.ts";
import { renderHubConfig } from "./render.ts";
import { capturedLog } from "../test/support/log-lines.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { startHubProcess, stopAllProcesses } from "../test/support/processes.ts";

const realServer = execFileSync("sh", ["-c", "command -v nats-server"], { encoding: "utf8" }).trim();
const dirs: string[] = [];
const servers: NatsServerSupervisor[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => server.stop()));
  await stopAllProcesses();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "leafmesh-version-"));
  dirs.push(dir);
  return dir;
}

/** A nats-server that says it is `version` when asked, and is the real one otherwise. */
function serverSaying(version: string): string {
  const path = join(tempDir(), "nats-server");
  writeFileSync(path, `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "nats-server: v${version}"; exit 0; fi\nexec ${realServer} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

async function supervisorWith(binary: string, log = capturedLog("info").log): Promise<NatsServerSupervisor> {
  const dataDir = tempDir();
  const [client, leaf, monitor] = [await freePort(), await freePort(), await freePort()];
  const server = new NatsServerSupervisor({
    name: "hub-1",
    dataDir,
    binary,
    monitor: { host: "127.0.0.1", port: monitor },
    log,
    configText: renderHubConfig({ serverName: "hub-1", storeDir: join(dataDir, "js"), client: { host: "127.0.0.1", port: client }, leaf: { host: "127.0.0.1", port: leaf }, monitor: { host: "127.0.0.1", port: monitor } }),
  });
  servers.push(server);
  return server;
}

describe("the nats-server version", () => {
  it("reads the version from what --version prints", () => {
    expect(parseServerVersion("nats-server: v2.9.10")).toEqual([2, 9, 10]);
    expect(parseServerVersion("nats-server: v2.10.0-beta.3")).toEqual([2, 10, 0]);
    expect(parseServerVersion("nats-server: unknown")).toBeUndefined();
    expect(parseServerVersion("[1] listening on 127.0.0.1:4222\nnats-server: v2.9.10")).toEqual([2, 9, 10]);
  });

  it("refuses a server older than the minimum, naming the binary, its version and the minimum, and starts none", async () => {
    const binary = serverSaying("2.8.4");
    const server = await supervisorWith(binary);
    const error = await server.start().then(() => undefined, (caught: unknown) => caught as Error & { code?: string });
    expect(error?.code).toBe("NATS_SERVER_VERSION");
    expect(error?.message).toContain(`nats-server '${binary}' is version 2.8.4, older than 2.9.0`);
    expect(server.pid).toBeUndefined();
  });

  it("refuses a binary whose --version names no version", async () => {
    const path = join(tempDir(), "nats-server");
    writeFileSync(path, `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "a server"; exit 0; fi\nexec ${realServer} "$@"\n`);
    chmodSync(path, 0o755);
    const error = await (await supervisorWith(path)).start().then(() => undefined, (caught: unknown) => caught as Error & { code?: string });
    expect(error?.code).toBe("NATS_SERVER_VERSION");
    expect(error?.message).toContain(`cannot tell which nats-server '${path}' is`);
  });

  it("runs a newer server with one warning per binary, and the tested one with none", async () => {
    const binary = serverSaying("2.10.22");
    const { log, lines } = capturedLog("info");
    const first = await supervisorWith(binary, log);
    await first.start();
    expect(first.state).toBe("ready");
    const second = await supervisorWith(binary, log);
    await second.start();
    await new Promise((resolve) => setImmediate(resolve));
    const warnings = lines.filter((line) => String(line.msg).includes("newer than the 2.9.x leafmesh was tested with"));
    expect(warnings).toHaveLength(1);
    expect(warnings[0].msg).toContain(`nats-server '${binary}' is version 2.10.22`);

    const tested = capturedLog("info");
    const real = await supervisorWith(realServer, tested.log);
    await real.start();
    await new Promise((resolve) => setImmediate(resolve));
    expect(tested.lines.filter((line) => String(line.msg).includes("newer than"))).toEqual([]);
  });

  it("`leafmesh hub` with an older nats-server exits at start and says why", async () => {
    const binary = serverSaying("2.2.0");
    const hub = await startHubProcess({ name: "hub-1", waitReady: false, env: { LEAFMESH_NATS_SERVER: binary } });
    await eventually(() => expect(hub.child.exitCode).not.toBeNull(), 30_000);
    expect(hub.child.exitCode).not.toBe(0);
    expect(hub.output()).toContain(`nats-server '${binary}' is version 2.2.0, older than 2.9.0`);
  });
});
