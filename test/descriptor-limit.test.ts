/**
 * An agent whose hard limit of open files is below what its connection limits need (a container runtime's or a
 * unit's LimitNOFILE; here 1,024 under prlimit, against the 7,168 the defaults may need): it says so at start,
 * with the numbers and how to raise it, and carries connections up to what the limit allows. Before, nothing was
 * said until clients were refused, and then only in a counter.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { runCommand } from "../lib/command.ts";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { freePort } from "./support/ports.ts";
import { nodeBinary, proxyListener, startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "./support/processes.ts";

let echo: ChildProcess | undefined;
afterAll(async () => {
  await stopAllProcesses();
  echo?.kill();
});

const clients = 300;

/** Opens a connection and sends one byte: its socket (left open) and whether the byte came back. */
function openClient(target: { host: string; port: number }): { socket: Socket; outcome: Promise<"echo" | "refused"> } {
  const socket: Socket = connect(target);
  socket.on("error", () => undefined);
  const outcome = new Promise<"echo" | "refused">((resolve) => {
    const timer = setTimeout(() => resolve("refused"), 30_000);
    socket.once("data", () => (clearTimeout(timer), resolve("echo")));
    socket.once("close", () => (clearTimeout(timer), resolve("refused")));
    socket.write("x");
  });
  return { socket, outcome };
}

describe("an agent under a low limit of open files", () => {
  it("says at start that its limit is below what its connection limits need, and carries what it allows", { timeout: 120_000 }, async () => {
    const prlimit = await runCommand(["sh", "-c", "command -v prlimit"]);
    if (prlimit.code !== 0) throw new Error("this test needs prlimit (apt-get install -y util-linux)");
    const echoPort = await freePort();
    echo = spawn(nodeBinary, ["-e", `require("node:net").createServer((s) => { s.on("error", () => {}); s.pipe(s); }).listen(${echoPort}, "127.0.0.1", () => console.log("ready"))`], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise((resolve) => echo!.stdout!.once("data", resolve));
    const manifests = tempDir();
    writeManifest(manifests, "echo.yaml", sampleService({ name: "echo", clusterIP: "198.19.0.40", endpoints: [{ ip: "127.0.0.1", node: "edge-s" }], backendPort: echoPort }));
    const hub = await startHubProcess({ name: "hub-1", manifests });
    const agent = await startAgentProcess({ node: "edge-s", hubs: [hub.leafUrl], extraArgs: ["--mdns", "off"], wrapper: ["prlimit", "--nofile=256:1024", "--"] });
    // Node raised its soft limit to the hard one; the hard one is what stays.
    expect(readFileSync(`/proc/${agent.child.pid}/limits`, "utf8")).toMatch(/^Max open files\s+1024\s+1024/m);
    const warning = agent.output().split("\n").find((line) => line.includes("this process may open 1024 files"));
    expect(warning, agent.output()).toContain("its connection limits may need 7168 (two per proxied connection)");
    expect(warning).toContain("LimitNOFILE=7168");

    // 300 at once (600 descriptors) fit in 1,024: each is carried.
    const target = await proxyListener(agent, "demo/echo:http/TCP");
    const opened = Array.from({ length: clients }, () => openClient(target));
    const outcomes = await Promise.all(opened.map((client) => client.outcome));
    for (const client of opened) client.socket.destroy();
    expect(outcomes.filter((outcome) => outcome === "echo").length).toBe(clients);
  });
});
