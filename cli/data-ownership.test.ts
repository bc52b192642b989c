/**
 * A data directory left by a start as root, then used by an agent started as another user (uid 65534, through
 * setpriv, as a systemd unit's User= does): refused at start, naming the file, its owner and the chown that fixes
 * it; after that chown the same directory starts. Needs root (to be both users).
 */
import { chmodSync, chownSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { runCommand } from "../lib/command.ts";
import { freePort } from "../test/support/ports.ts";
import { cliPath, nodeBinary, stopAllProcesses, tempDir } from "../test/support/processes.ts";

afterEach(stopAllProcesses);

const nobody = 65534;

async function agentRun(dataDir: string, asUser: boolean, seconds: number) {
  const argv = [
    nodeBinary, cliPath, "agent", "--insecure", "--node", "edge-a", "--hub", "nats://127.0.0.1:1", "--data", dataDir,
    "--nats-listen", `127.0.0.1:${await freePort()}`, "--monitor-listen", `127.0.0.1:${await freePort()}`, "--metrics-listen", "off",
    "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off",
  ];
  // Ended by timeout(1) with SIGTERM once it has run that long: a clean stop, exit 0.
  const command = ["timeout", "--preserve-status", String(seconds), ...(asUser ? ["setpriv", `--reuid=${nobody}`, `--regid=${nobody}`, "--clear-groups"] : []), ...argv];
  return runCommand(command, { timeoutMs: (seconds + 20) * 1_000 });
}

function chownTree(path: string, uid: number): void {
  chownSync(path, uid, uid);
  if (!statSync(path).isDirectory()) return;
  for (const name of readdirSync(path)) chownTree(join(path, name), uid);
}

describe("a data directory owned by another user", () => {
  it("is refused at start with the file, its owner and the chown, and starts once given to the user", { timeout: 90_000 }, async () => {
    if (process.getuid?.() !== 0) throw new Error("this test needs root: it starts the agent as root and then as uid 65534 (CI runs as root)");
    const parent = tempDir();
    chmodSync(parent, 0o755); // the other user must reach the data directory
    const dataDir = join(parent, "data");
    const asRoot = await agentRun(dataDir, false, 4);
    expect(asRoot.code, asRoot.stderr).toBe(0);
    chmodSync(dataDir, 0o777); // the directory itself writable: what is left is the files root made in it

    const refused = await agentRun(dataDir, true, 15);
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toMatch(new RegExp(`--data: ${dataDir}/\\S+ is owned by uid 0 and this process \\(uid ${nobody}\\) cannot write it`));
    expect(refused.stderr).toContain(`chown -R ${nobody}:${nobody} ${dataDir}`);
    // Before, the first file written failed: "unexpected error: Error: EACCES ..." and a stack trace.
    expect(refused.stderr).not.toContain("unexpected error");

    chownTree(dataDir, nobody);
    const started = await agentRun(dataDir, true, 6);
    expect(started.code, started.stderr).toBe(0);
    expect(started.stderr).toContain("agent ready");
  });
});
