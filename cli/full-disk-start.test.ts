/**
 * An agent started on a data directory whose file system is full (an edge box's SD card full of logs), on a real
 * tmpfs: refused with what is wrong and what to do, exit 2, and nothing left behind; with room for its lock but not
 * its nats-server configuration, the same. Before, each died with "unexpected error: Error: ENOSPC" and a stack
 * trace, the first leaving an empty file beside its lock at every start. Needs root (it mounts a tmpfs).
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { freePort } from "../test/support/ports.ts";
import { runCli, stopAllProcesses, tempDir } from "../test/support/processes.ts";

const mounts: string[] = [];
afterEach(async () => {
  for (const mount of mounts.splice(0)) execFileSync("umount", ["-l", mount]);
  await stopAllProcesses(); // the mount points' directories, once unmounted
});

/** A 1 MiB tmpfs holding `data/`, filled up, then `freeBytes` given back (in 4 KiB pages). */
function fullFileSystem(freeBytes: number): string {
  const mount = tempDir("leafmesh-full-start-");
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mount]);
  mounts.push(mount);
  mkdirSync(join(mount, "data"));
  const pages: string[] = [];
  for (let index = 0; index < 1_000; index++) {
    const file = join(mount, `page-${index}`);
    try {
      writeFileSync(file, Buffer.alloc(4096, 7));
      pages.push(file);
    } catch {
      rmSync(file, { force: true });
      break;
    }
  }
  for (let freed = 0; freed < freeBytes; freed += 4096) rmSync(pages.pop()!);
  return join(mount, "data");
}

async function startAgent(dataDir: string) {
  return runCli(["agent", "--insecure", "--node", "edge-a", "--hub", "nats://127.0.0.1:1", "--data", dataDir, "--nats-listen", `127.0.0.1:${await freePort()}`, "--monitor-listen", `127.0.0.1:${await freePort()}`, "--metrics-listen", "off", "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off"], 30_000);
}

describe("an agent started on a full disk", () => {
  it("says the file system is full, at its lock or at its nats-server configuration, and leaves nothing", { timeout: 90_000 }, async () => {
    if (process.getuid?.() !== 0) throw new Error("this test mounts a tmpfs: run it as root (CI does)");
    const full = fullFileSystem(0);
    const refused = await startAgent(full);
    expect(refused.stderr).toContain(`--data ${full}: cannot write its lock file ${full}/leafmesh.lock: no space left on the device (its file system is full: free some space)`);
    expect(refused.code).toBe(2);
    expect(readdirSync(full)).toEqual([]);

    // Room for one page: the lock takes it, the configuration finds none.
    const onePage = fullFileSystem(4096);
    const failed = await startAgent(onePage);
    expect(failed.stderr).toContain(`cannot write the nats-server configuration ${onePage}/nats-server.conf: no space left on the device`);
    expect(failed.stderr).not.toContain("unexpected error");
    expect(readdirSync(onePage).filter((name) => name.startsWith("leafmesh.lock"))).toEqual([]);
  });
});
