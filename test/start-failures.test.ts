/**
 * A role that cannot start for something on this machine (an address another process holds): it ends with the
 * flag to change and why, exit 2 (a configuration to fix), no stack trace and no library's advice, and nothing
 * left running.
 */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "./support/ports.ts";
import { runCli, stopAllProcesses, tempDir } from "./support/processes.ts";

afterAll(() => stopAllProcesses());

describe("a start that an address held by another process stops", () => {
  it("--tunnel-listen on a port in use: names the flag, the address and why", { timeout: 60_000 }, async () => {
    const base = tempDir("leafmesh-start-failures-");
    const psk = join(base, "swarm.key");
    writeFileSync(psk, `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString("hex")}\n`, { mode: 0o600 });
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const taken = (holder.address() as { port: number }).port;
    try {
      const args = ["agent", "--node", "edge-a", "--insecure", "--psk", psk, "--hub", `nats://127.0.0.1:${await freePort()}`, "--data", join(base, "edge-a"), "--intercept", "off", "--mdns", "off", "--metrics-listen", "off"];
      for (const flag of ["--nats-listen", "--monitor-listen"]) args.push(flag, `127.0.0.1:${await freePort()}`);
      const result = await runCli([...args, "--tunnel-listen", `/ip4/127.0.0.1/tcp/${taken}`], 45_000);
      // Before: exit 1, "tunnel could not start: Some configured addresses failed to be listened on, you may need to ...
      // set `transportManager.faultTolerance` to NO_FATAL", and the listen error's stack.
      expect(result.stderr).toContain(`leafmesh agent: --tunnel-listen /ip4/127.0.0.1/tcp/${taken}: the address is in use (another agent on this machine? each needs a --tunnel-listen port of its own)`);
      expect(result.stderr).not.toContain("faultTolerance");
      expect(result.stderr).not.toMatch(/\n\s+at /);
      expect(result.code).toBe(2);
    } finally {
      holder.close();
    }
  });
});
