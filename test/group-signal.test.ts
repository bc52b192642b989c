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
import { describe, expect, it } from "vitest";
import { eventually, freePort } from "./support/ports.ts";
import { cliPath, nodeBinary, tempDir } from "./support/processes.ts";

describe("a hub stopped by a signal to its process group (Ctrl-C, or its terminal closing)", () => {
  it.each(["SIGINT", "SIGHUP"] as const)("%s: stops its parts with its nats-server still up, releases its lease, and exits 0 without a warning", { timeout: 60_000 }, async (signal) => {
    const data = tempDir();
    const manifests = tempDir();
    writeFileSync(join(manifests, "web.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {clusterIP: 198.19.0.10, ports: [{port: 80}]}\n");
    const args = ["hub", "--name", "hub-1", "--insecure", "--data", data, "--manifests", manifests, "--log-level", "info", "--metrics-listen", "off"];
    for (const [flag, port] of [["--listen", await freePort()], ["--leaf-listen", await freePort()], ["--monitor-listen", await freePort()]] as const) args.push(flag, `127.0.0.1:${port}`);
    // A group of its own, as a shell gives a foreground job.
    const child = spawn(nodeBinary, [cliPath, ...args], { stdio: ["ignore", "pipe", "pipe"], detached: true });
    let output = "";
    child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    try {
      await eventually(() => output.includes('"lease acquired"'), 30_000, "the hub to hold the publisher lease");
      const serverPid = Number(/"serverPid":(\d+)/.exec(output)![1]);
      const signalledAt = output.length;
      process.kill(-child.pid!, signal);
      expect(await exited).toBe(0);
      const after = output.slice(signalledAt).split("\n").filter(Boolean);
      expect(after.filter((line) => /"level":(40|50)/.test(line))).toEqual([]);
      expect(existsSync(`/proc/${serverPid}`) && !readFileSync(`/proc/${serverPid}/stat`, "utf8").includes(") Z ")).toBe(false);
    } finally {
      // A failed test leaves no hub running.
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
  });
});

describe("SIGUSR1 to a running leafmesh", () => {
  it("does not open Node's inspector (a debugger any local user could reach), and leafmesh runs on", { timeout: 60_000 }, async () => {
    const data = tempDir();
    const args = ["hub", "--name", "hub-1", "--insecure", "--data", data, "--log-level", "info", "--metrics-listen", "off"];
    for (const [flag, port] of [["--listen", await freePort()], ["--leaf-listen", await freePort()], ["--monitor-listen", await freePort()]] as const) args.push(flag, `127.0.0.1:${port}`);
    const child = spawn(nodeBinary, [cliPath, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    try {
      await eventually(() => output.includes('"hub ready"'), 30_000, "the hub to be up");
      child.kill("SIGUSR1");
      await eventually(() => output.includes("SIGUSR1 ignored"), 10_000, "the signal to be said");
      expect(output).not.toContain("Debugger listening");
      expect(child.exitCode).toBeNull();
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      // A failed test leaves no hub running (it ends its nats-server with it).
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });
});
