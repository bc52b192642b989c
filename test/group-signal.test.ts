/**
 * A Ctrl-C in a terminal signals the whole foreground process group: leafmesh and, unless it runs in a
 * group of its own, its nats-server. The server must still be up while leafmesh stops its parts (the
 * hub releases its publisher lease through it), and stop last: no warning, no failure, exit 0.
 * A terminal that closes (an ssh session that ends) sends SIGHUP the same way: it stops the same. Before,
 * SIGHUP ended leafmesh at once, without a word and without its stop: an agent left its nftables rules
 * (cluster IPs sent to a proxy that was gone) and a hub its publisher lease.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import { eventually, freePort } from "./support/ports.ts";
import { cliPath, nodeBinary, tempDir } from "./support/processes.ts";

/**
 * `leafmesh hub` on free loopback ports in a group of its own (as a shell gives a foreground job), its output
 * gathered; killed when the test ends, however it ends, so that a failed test leaves no hub running.
 */
async function startHub(extra: string[] = []) {
  const args = ["hub", "--name", "hub-1", "--insecure", "--data", tempDir(), "--log-level", "info", "--metrics-listen", "off", ...extra];
  for (const [flag, port] of [["--listen", await freePort()], ["--leaf-listen", await freePort()], ["--monitor-listen", await freePort()]] as const) args.push(flag, `127.0.0.1:${port}`);
  const child = spawn(nodeBinary, [cliPath, ...args], { stdio: ["ignore", "pipe", "pipe"], detached: true });
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  const hub = { child, output: "", exited: new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code))) };
  child.stdout!.on("data", (chunk: Buffer) => (hub.output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (hub.output += chunk.toString()));
  return hub;
}

describe("a hub stopped by a signal to its process group (Ctrl-C, or its terminal closing)", () => {
  it.each(["SIGINT", "SIGHUP"] as const)("%s: stops its parts with its nats-server still up, releases its lease, and exits 0 without a warning", { timeout: 60_000 }, async (signal) => {
    const manifests = tempDir();
    writeFileSync(join(manifests, "web.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {clusterIP: 198.19.0.10, ports: [{port: 80}]}\n");
    const hub = await startHub(["--manifests", manifests]);
    // Its start over too: a signal during the start's last parts ends the start, exit 1 (roles/server-process.ts).
    await eventually(() => hub.output.includes('"lease acquired"') && hub.output.includes('"hub ready"'), 30_000, "the hub to be up and hold the publisher lease");
    const serverPid = Number(/"serverPid":(\d+)/.exec(hub.output)![1]);
    const signalledAt = hub.output.length;
    process.kill(-hub.child.pid!, signal);
    expect(await hub.exited).toBe(0);
    const after = hub.output.slice(signalledAt).split("\n").filter(Boolean);
    expect(after.filter((line) => /"level":(40|50)/.test(line))).toEqual([]);
    // The log says what stopped it and when the stop ended; before, it just ended after its last working line.
    expect(after.find((line) => line.includes('"msg":"stopping: '))).toContain(`"msg":"stopping: ${signal} received"`);
    expect(after.at(-1)).toMatch(/"msg":"stopped in \d+\.\d s"/);
    expect(existsSync(`/proc/${serverPid}`) && !readFileSync(`/proc/${serverPid}/stat`, "utf8").includes(") Z ")).toBe(false);
  });
});

describe("the same stop asked twice", () => {
  it("SIGTERM delivered twice within a moment (timeout(1) signals the process and then its group): one clean stop, exit 0; a second Ctrl-C a second later still ends a stop that hangs", { timeout: 60_000 }, async () => {
    const hub = await startHub();
    await eventually(() => hub.output.includes('"hub ready"'), 30_000, "the hub to be up");
    const signalledAt = hub.output.length;
    // Its nats-server frozen for a moment, so that the stop lasts past the second copy of the signal.
    const hubServer = Number(/"serverPid":(\d+)/.exec(hub.output)![1]);
    process.kill(hubServer, "SIGSTOP");
    hub.child.kill("SIGTERM");
    // The second copy a moment later (two signals sent together may merge into one pending signal): before, it
    // cut the stop short with exit 130.
    await new Promise((resolve) => setTimeout(resolve, 50));
    hub.child.kill("SIGTERM");
    await new Promise((resolve) => setTimeout(resolve, 200));
    process.kill(hubServer, "SIGCONT");
    expect(await hub.exited).toBe(0);
    expect(hub.output.slice(signalledAt).split("\n").filter((line) => /"level":(40|50)/.test(line))).toEqual([]);

    // A stop that hangs (its nats-server frozen): Ctrl-C again, after the second, ends it at once.
    const again = await startHub();
    await eventually(() => again.output.includes('"hub ready"'), 30_000, "the second hub to be up");
    const serverPid = Number(/"serverPid":(\d+)/.exec(again.output)![1]);
    onTestFinished(() => {
      try {
        process.kill(serverPid, "SIGKILL");
      } catch {
        // gone already
      }
    });
    process.kill(serverPid, "SIGSTOP");
    again.child.kill("SIGINT");
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(again.child.exitCode).toBeNull();
    again.child.kill("SIGINT");
    expect(await again.exited).toBe(130);
  });
});

describe("SIGUSR1 to a running leafmesh", () => {
  it("does not open Node's inspector (a debugger any local user could reach), and leafmesh runs on", { timeout: 60_000 }, async () => {
    const hub = await startHub();
    await eventually(() => hub.output.includes('"hub ready"'), 30_000, "the hub to be up");
    hub.child.kill("SIGUSR1");
    await eventually(() => hub.output.includes("SIGUSR1 ignored"), 10_000, "the signal to be said");
    expect(hub.output).not.toContain("Debugger listening");
    expect(hub.child.exitCode).toBeNull();
    hub.child.kill("SIGTERM");
    expect(await hub.exited).toBe(0);
  });
});
