/** The CLI as a user meets it: help that is true, clear errors and exit codes. */
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { connect } from "@nats-io/transport-node";
import { join, resolve } from "node:path";
import { PassThrough } from "node:stream";
import type { Command } from "../cli/command.ts";
import { loadCommands } from "../cli/main.ts";
import { renderOptionsDoc } from "../cli/options-doc.ts";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { eventually, freePort } from "./support/ports.ts";
import { cliPath, hubPorts, nodeBinary, runCli, startAgentProcess, startHubProcess, stopAllProcesses, tempDir } from "./support/processes.ts";
import { startNatsServer, type TestServer } from "./support/trust-servers.ts";


afterAll(stopAllProcesses);

/** Runs a command in this process with captured output (parsing and help only: no command here starts anything). */
async function runInProcess(command: Command, argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
  stderr.on("data", (chunk: Buffer) => (err += chunk.toString()));
  const code = await command.main(argv, { stdout, stderr, env: {}, signal: new AbortController().signal });
  return { code, stdout: out, stderr: err };
}

describe("leafmesh CLI", () => {
  it("lists every command in --help, and every flag a command's --help shows is accepted", async () => {
    const top = await runCli(["--help"]);
    expect(top.code).toBe(0);
    const probeHelp = async (command: Command, prefix: string[]) => {
      const help = await runInProcess(command, [...prefix, "--help"]);
      expect(help.code, help.stderr).toBe(0);
      expect(help.stdout).toContain(`Usage: leafmesh ${[command.name, ...prefix].join(" ")}`);
      // A command group (leafmesh keys): each of its commands has a help of its own.
      const group = help.stdout.split("Commands:")[1];
      if (group) {
        for (const [, sub] of group.matchAll(/^ {2}([a-z]+) /gm)) await probeHelp(command, [...prefix, sub]);
        return;
      }
      // Every flag the help shows parses (the help cannot advertise a flag that is refused).
      const flags = [...help.stdout.matchAll(/^\s+(?:-\w, )?(--[a-z-]+)( \S+)?/gm)].filter((match) => match[1] !== "--help");
      expect(flags.length).toBeGreaterThan(0);
      for (const [, flag, value] of flags) {
        const probe = await runInProcess(command, [...prefix, flag, ...(value ? ["x"] : []), "--help"]);
        expect(probe.stderr, `${command.name} ${flag}`).toBe("");
        expect(probe.code).toBe(0);
      }
    };
    const commands = await loadCommands();
    for (const command of commands) {
      expect(top.stdout).toContain(`  ${command.name}`);
      await probeHelp(command, []);
    }
    expect((await runCli(["hub", "--help"])).stdout).toBe((await runInProcess(commands.find((command) => command.name === "hub")!, ["--help"])).stdout);
  });

  it("documents in docs/options.md exactly the options the code parses (npm run docs:options rewrites it)", async () => {
    expect(readFileSync(resolve(import.meta.dirname, "../docs/options.md"), "utf8")).toBe(await renderOptionsDoc());
  });

  it("refuses an unknown command, an unknown flag and a missing required flag with exit code 2 and no stack trace", async () => {
    const unknown = await runCli(["hubb"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown command 'hubb'");
    const badFlag = await runCli(["agent", "--nod", "edge-a"]);
    expect(badFlag.code).toBe(2);
    expect(badFlag.stderr).toContain("Unknown option '--nod'");
    expect(badFlag.stderr).toContain("See 'leafmesh agent --help'");
    const missing = await runCli(["agent", "--node", "edge-a", "--data", tempDir()]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("--hub is required");
    for (const result of [unknown, badFlag, missing]) expect(result.stderr).not.toMatch(/\n\s+at /);
  });

  // Each a few CLI processes that exit at once: concurrent, so that their ~30 s of starts overlap.
  describe("explains bad values", () => {
    it.concurrent("a node name, an address, a port, a URL", async () => {
      const badName = await runCli(["agent", "--insecure", "--node", "Edge_A", "--hub", "nats://127.0.0.1:7422", "--data", tempDir()]);
      expect(badName.code).toBe(2);
      expect(badName.stderr).toContain("node name 'Edge_A' is not valid");
      const badAddress = await runCli(["agent", "--insecure", "--node", "edge-a", "--hub", "nats://127.0.0.1:7422", "--data", tempDir(), "--nats-listen", "localhost"]);
      expect(badAddress.code).toBe(2);
      expect(badAddress.stderr).toContain("--nats-listen: 'localhost' is not host:port");
      // Port 0 is no port for a nats-server (its client port would be 4222, its monitoring off) nor for a listener nobody could find.
      const portZero = await runCli(["hub", "--insecure", "--name", "hub-1", "--data", tempDir(), "--monitor-listen", "127.0.0.1:0"], 20_000);
      expect(portZero.code).toBe(2);
      expect(portZero.stderr).toContain("--monitor-listen: '127.0.0.1:0': port 0 cannot be used here");
      const badTls = await runCli(["agent", "--insecure", "--node", "edge-a", "--hub", "nats://127.0.0.1:7422", "--data", tempDir(), "--tunnel-tls", "4102"]);
      expect(badTls.code).toBe(2);
      expect(badTls.stderr).toContain("--tunnel-tls: '4102' is not host:port");
      const badUrl = await runCli(["agent", "--insecure", "--node", "edge-a", "--hub", "hub-1:74x22", "--data", tempDir()]);
      expect(badUrl.code).toBe(2);
      // Said as given, with the option that gave it: it read "upstream: 'nats-leaf://hub-1:74x22'", a URL the user never wrote.
      expect(badUrl.stderr).toContain("--hub: 'hub-1:74x22' must look like tls://host:7422 or nats://host:7422");
      const noPort = await runCli(["agent", "--insecure", "--node", "edge-a", "--hub", "tls://hub-1.example.net", "--data", tempDir()]);
      expect(noPort.code).toBe(2);
      expect(noPort.stderr).toContain("--hub: 'tls://hub-1.example.net' must look like tls://host:7422");
    });
    it.concurrent("a manifest directory, a data directory", async () => {
      const badDir = await runCli(["hub", "--insecure", "--name", "hub-1", "--data", tempDir(), "--manifests", "/nonexistent/dir", "--listen", `127.0.0.1:${await freePort()}`, "--leaf-listen", `127.0.0.1:${await freePort()}`, "--monitor-listen", `127.0.0.1:${await freePort()}`]);
      expect(badDir.code).toBe(2);
      expect(badDir.stderr).toContain("--manifests: cannot read /nonexistent/dir: no such file or directory");
      // Under /proc Node's own recursive mkdir spun for ever at 100 % CPU, deaf to SIGTERM (lib/make-dirs.ts).
      const badData = await runCli(["agent", "--insecure", "--node", "edge-a", "--hub", "nats://127.0.0.1:7422", "--data", "/proc/leafmesh-test"], 20_000);
      expect(badData.code).toBe(2);
      expect(badData.stderr).toContain("--data: cannot use /proc/leafmesh-test: it cannot be made there");
      const dataIsFile = join(tempDir(), "a-file");
      writeFileSync(dataIsFile, "");
      const badHubData = await runCli(["hub", "--insecure", "--name", "hub-1", "--data", join(dataIsFile, "hub")], 20_000);
      expect(badHubData.code).toBe(2);
      expect(badHubData.stderr).toContain(`--data: cannot use ${join(dataIsFile, "hub")}: a file is in the way`);
      const badDemoData = await runCli(["demo", "--data", dataIsFile], 20_000);
      expect(badDemoData.code).toBe(2);
      expect(badDemoData.stderr).toContain(`--data: cannot use ${dataIsFile}: it is a file`);
    });
    it.concurrent("a gateway address, catalog copies, SOCKS clients, node labels", async () => {
      const agentData = tempDir();
      const agentBase = ["agent", "--insecure", "--node", "edge-a", "--hub", "nats://127.0.0.1:7422", "--data", agentData];
      for (const [gateway, said] of [
        ["999.1.1.1", "--gateway: '999.1.1.1' is not an IPv4 address"],
        ["0.0.0.0:8080", "--gateway: '0.0.0.0:8080' has a port; give the address only (the Gateways' listeners say the ports)"],
        ["edge a", "--gateway: 'edge a' is not an address or a host name"],
      ]) {
        const badGateway = await runCli([...agentBase, "--gateway", gateway], 20_000);
        expect(badGateway.code, gateway).toBe(2);
        expect(badGateway.stderr).toContain(said);
      }
      // Said before anything starts: no nats-server was configured for the node (the actors load only after its spawn).
      expect(existsSync(join(agentData, "nats-server.conf"))).toBe(false);
      // More catalog copies than servers: refused at once, not retried for minutes at the catalog's opening.
      const lonelyReplicas = await runCli(["hub", "--insecure", "--name", "hub-1", "--data", tempDir(), "--replicas", "3"], 20_000);
      expect(lonelyReplicas.code).toBe(2);
      expect(lonelyReplicas.stderr).toContain("--replicas 3 needs a cluster: one server keeps one copy");
      const manyReplicas = await runCli(["site", "--insecure", "--name", "factory", "--server", "f1", "--upstream", "nats://127.0.0.1:7422", "--data", tempDir(), "--routes", "nats://f1:6222,nats://f2:6222", "--replicas", "7"], 20_000);
      expect(manyReplicas.code).toBe(2);
      expect(manyReplicas.stderr).toContain("--replicas 7: JetStream keeps at most 5 copies");
      // A SOCKS proxy beyond loopback dials anything for anyone: it must say who may use it.
      const openSocks = await runCli([...agentBase, "--socks", "0.0.0.0:1080"], 20_000);
      expect(openSocks.code).toBe(2);
      expect(openSocks.stderr).toContain("--socks 0.0.0.0:1080 listens beyond this machine");
      expect(openSocks.stderr).toContain("--socks-clients CIDR,…");
      const badClients = await runCli([...agentBase, "--socks", "0.0.0.0:1080", "--socks-clients", "10.0.0.0/24,fd00::/129"], 20_000);
      expect(badClients.code).toBe(2);
      expect(badClients.stderr).toContain("--socks-clients: 'fd00::/129' is not an address or a CIDR range");
      // Node labels are read with or without --gateway: a mistake is said when it is made.
      const badLabels = await runCli([...agentBase, "--node-labels", "=x"], 20_000);
      expect(badLabels.code).toBe(2);
      expect(badLabels.stderr).toContain("--node-labels: '=x' is not KEY=VALUE");
    });
    it.concurrent("a subject, a --nats URL, a timeout, a count", async () => {
      // A subject the server would take without a word and deliver nothing on: said before connecting.
      const badSubject = await runCli(["sub", "--nats", "nats://127.0.0.1:1", "mesh.edge-*.tunnel.path"], 20_000);
      expect(badSubject.code).toBe(2);
      expect(badSubject.stderr).toContain("'mesh.edge-*.tunnel.path' is not a NATS subject: token 2 ('edge-*') mixes '*' or '>' with other characters");
      const emptySubjectToken = await runCli(["sub", "--nats", "nats://127.0.0.1:1", "mesh..path"], 20_000);
      expect(emptySubjectToken.stderr).toContain("token 2 ('') is empty");
      // A --nats that is no NATS URL is said as such, not dialled and blamed on a server that is not there.
      for (const [command, url] of [["status", "http://127.0.0.1:4222"], ["sub", "nats://[::1:4222"], ["netcheck", "nats://hub-1.example.net:4222/x"], ["drill", "ftp://edge-a"]]) {
        const badUrl = await runCli([command, "--nats", url], 20_000);
        expect(badUrl.code, `${command} --nats ${url}`).toBe(2);
        expect(badUrl.stderr).toContain(`--nats: '${url}' is not a NATS client URL (nats://host:port, tls://host:port, or host:port)`);
      }
      const badTimeout = await runCli(["status", "--timeout", "soon"], 20_000);
      expect(badTimeout.code).toBe(2);
      expect(badTimeout.stderr).toContain("--timeout: 'soon' is not a whole number of at least 1");
      const badCount = await runCli(["sub", "--nats", "nats://127.0.0.1:1", "--count", "zero"], 20_000);
      expect(badCount.code).toBe(2);
      expect(badCount.stderr).toContain("--count: 'zero' is not a whole number of at least 1");
    });
    it.concurrent("an access log file", async () => {
      const badAccessLog = await runCli(["agent", "--insecure", "--node", "edge-a", "--hub", "nats://127.0.0.1:7422", "--data", tempDir(), "--gateway", "127.0.0.1", "--gateway-access-log", "/nonexistent/dir/access.log"]);
      expect(badAccessLog.code).toBe(2);
      expect(badAccessLog.stderr).toContain("--gateway-access-log: cannot append to /nonexistent/dir/access.log: its directory does not exist");
    });
    it.concurrent("a join token file and a join token", async () => {
      const agentArgs = ["agent", "--node", "edge-a", "--hub", "tls://127.0.0.1:7422", "--data", tempDir()];
      const noTokenFile = await runCli([...agentArgs, "--join-file", "/nonexistent/token"]);
      expect(noTokenFile.code).toBe(2);
      expect(noTokenFile.stderr).toContain("--join-file: cannot read /nonexistent/token");
      const emptyFile = join(tempDir(), "token");
      writeFileSync(emptyFile, "\n");
      const emptyToken = await runCli([...agentArgs, "--join-file", emptyFile]);
      expect(emptyToken.code).toBe(2);
      expect(emptyToken.stderr).toContain(`--join-file: ${emptyFile} is empty`);
      const bothTokens = await runCli([...agentArgs, "--join-file", emptyFile, "--join", "lmjoin1.x"]);
      expect(bothTokens.code).toBe(2);
      expect(bothTokens.stderr).toContain("--join and --join-file both give a token");
      writeFileSync(emptyFile, "lmjoin1.cut-short\n");
      const damaged = await runCli([...agentArgs, "--join-file", emptyFile]);
      expect(damaged.code).toBe(2);
      expect(damaged.stderr).toContain("the join token (--join, --join-file) is damaged");
      expect(damaged.stderr).not.toContain("cut-short");
      // Neither the parser's quote of the decoded bytes (a token carries a secret) nor a schema dump: what is wrong, in a line.
      const secret = "s3cret-value-of-the-token";
      writeFileSync(emptyFile, `lmjoin1.${Buffer.from(`{"id":"x","secret":"${secret}"`).toString("base64url")}\n`);
      const cut = await runCli([...agentArgs, "--join-file", emptyFile]);
      expect(cut.stderr).toContain("is damaged (cut short when copied?): its content does not parse\n");
      expect(cut.stderr).not.toContain(secret);
      expect(cut.stderr).not.toContain("cause:");
      writeFileSync(emptyFile, `lmjoin1.${Buffer.from(`{"id":"x","secret":"${secret}"}`).toString("base64url")}\n`);
      const lacking = await runCli([...agentArgs, "--join-file", emptyFile]);
      expect(lacking.code).toBe(2);
      expect(lacking.stderr).toBe("leafmesh agent: the join token (--join, --join-file) is damaged (cut short when copied?): its content lacks or mangles id, urls, jwt, seed, ca, cert, key\n");
    });
  });

  it("refuses to start a hub or agent without security unless --insecure is explicit, and warns when it is", async () => {
    const refused = await runCli(["agent", "--node", "edge-a", "--hub", "nats://127.0.0.1:7422", "--data", tempDir()]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("no security configured: pass --keys DIR");
    const hubRefused = await runCli(["hub", "--name", "hub-1", "--data", tempDir()]);
    expect(hubRefused.code).toBe(2);
    expect(hubRefused.stderr).toContain("no security configured");
    const both = await runCli(["hub", "--name", "hub-1", "--data", tempDir(), "--keys", tempDir(), "--insecure"]);
    expect(both.stderr).toContain("give either --keys or --insecure, not both");
    // --insecure warns (then fails here on the bad upstream URL, after the warning).
    const warned = await runCli(["agent", "--insecure", "--node", "edge-a", "--hub", "hub-1:74x22", "--data", tempDir()]);
    expect(warned.stderr).toContain("INSECURE: leafmesh agent runs without authentication or TLS");
  });

  it("says which address it could not reach, with a non-zero exit", async () => {
    const port = await freePort();
    const result = await runCli(["status", "--nats", `nats://127.0.0.1:${port}`]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`cannot connect to NATS at nats://127.0.0.1:${port}`);
    expect(result.stderr).toContain("Is the leafmesh hub or agent running there");
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });
});

/**
 * The README's commands run through the machine's npm, whose Node may be older than 24 (Debian's
 * is 18 or 20). npm 11 runs a project's own bin by installing the project into its npx cache
 * once per cache, and checked the package's `engines` (Node 24) against that older Node, not
 * the Node 24 of node_modules that actually runs leafmesh (bin/leafmesh.js checks that itself):
 * a warning on the first run on a fresh machine, which a warm cache hid here. Hence an empty npm
 * cache per run. Only a machine with an older system Node shows it: on another, the case cannot
 * be built here.
 */
const systemPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const systemNode = spawnSync("node", ["--version"], { env: { PATH: systemPath }, encoding: "utf8" });
const systemNodeMajor = systemNode.status === 0 ? Number(systemNode.stdout.trim().replace(/^v/, "").split(".")[0]) : undefined;
const olderSystemNode = systemNodeMajor !== undefined && systemNodeMajor < 24;

describe("a reader of the CLI's output that goes away", () => {
  /** `leafmesh sub` against a plain nats-server of its own, its stdout and stderr piped here; the server stops after `use`. */
  const withSub = async (name: string, use: (child: ChildProcess, server: TestServer) => Promise<void>) => {
    const server = await startNatsServer({ name, dir: tempDir(), config: ({ client, monitor }) => `listen: 127.0.0.1:${client}\nhttp: 127.0.0.1:${monitor}\n` });
    try {
      await use(spawn(nodeBinary, [cliPath, "sub", "--nats", server.clientUrl], { stdio: ["ignore", "pipe", "pipe"] }), server);
    } finally {
      await server.stop();
    }
  };

  it("`leafmesh sub | head`: sub stops quietly with exit code 0, no EPIPE stack trace", async () => {
    await withSub("sub-epipe", async (child, server) => {
      let stderr = "";
      child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      await eventually(() => stderr.includes("listening on"), 10_000, "sub to listen");
      const publisher = await connect({ servers: server.clientUrl });
      const firstLine = new Promise<void>((resolve) => child.stdout!.once("data", () => resolve()));
      publisher.publish("mesh.edge-a.traffic.x", "{}");
      await firstLine;
      child.stdout!.destroy(); // as head does after its lines
      // Lines keep coming: the next write finds no reader.
      const publishing = setInterval(() => publisher.publish("mesh.edge-a.traffic.x", "{}"), 50);
      const code = await Promise.race([exited, new Promise<string>((resolve) => setTimeout(() => resolve("still running after 10 s"), 10_000))]);
      clearInterval(publishing);
      child.kill("SIGKILL");
      await publisher.close();
      expect(code, stderr).toBe(0);
      expect(stderr).not.toContain("EPIPE");
    });
  }, 30_000);

  it("`leafmesh sub | less`, paused: sub drops what its reader cannot take and says how much, holding bounded memory", async () => {
    await withSub("sub-paused", async (child, server) => {
      // A failed test leaves no sub running (it would reconnect for ever).
      onTestFinished(() => void child.kill("SIGKILL"));
      let stderr = "";
      child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      await eventually(() => stderr.includes("listening on"), 10_000, "sub to listen");
      child.stdout!.pause(); // the reader stops reading: the pipe fills, then sub's own output buffer
      const publisher = await connect({ servers: server.clientUrl });
      const payload = JSON.stringify({ padding: "y".repeat(4_000) });
      // 400 MB of lines for a reader that takes none.
      for (let index = 0; index < 100_000; index++) {
        publisher.publish("mesh.edge-a.traffic.x", payload);
        if (index % 1_000 === 0) await publisher.flush();
      }
      await publisher.flush();
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const rssMiB = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))![1]) / 1024;
      let stdout = "";
      child.stdout!.on("data", (chunk: Buffer) => (stdout = (stdout + chunk.toString()).slice(-100_000)));
      child.stdout!.resume();
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      publisher.publish("mesh.edge-a.traffic.x", '{"last":true}');
      await eventually(() => stdout.includes('{"last":true}'), 10_000, "the line after the reader came back");
      await publisher.close();
      child.kill("SIGKILL");
      expect(stdout).toMatch(/\(\d+ messages dropped here: the output did not keep up\)/);
      // Without the bound every line waited in sub's memory (over 600 MiB here).
      expect(rssMiB).toBeLessThan(300);
    });
  }, 60_000);

  it("`leafmesh sub 2>/closed`: sub goes on printing when its stderr reader is gone", async () => {
    await withSub("sub-stderr-epipe", async (child, server) => {
      child.stderr!.destroy(); // gone before sub says it listens
      let stdout = "";
      child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
      const publisher = await connect({ servers: server.clientUrl });
      const publishing = setInterval(() => publisher.publish("mesh.edge-a.traffic.x", "{}"), 50);
      await eventually(() => stdout.includes("mesh.edge-a.traffic.x") || child.exitCode !== null, 10_000, "a line from sub, or its exit");
      clearInterval(publishing);
      expect(child.exitCode, "sub exited").toBeNull();
      child.kill("SIGKILL");
      await publisher.close();
    });
  }, 30_000);
});

describe("the README's npx commands on a machine whose Node is older than 24", () => {
  it.skipIf(!olderSystemNode)(`print leafmesh's own screen, not npm's warnings (needs a system node older than 24 on PATH; here: ${systemNode.stdout?.trim() || "none"})`, () => {
    const run = spawnSync("npx", ["leafmesh", "--help"], { cwd: resolve(import.meta.dirname, ".."), env: { PATH: systemPath, HOME: process.env.HOME ?? "/root", npm_config_cache: tempDir() }, encoding: "utf8", timeout: 60_000 });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.split("\n")[0]).toMatch(/^leafmesh — /);
    expect(run.stderr).not.toMatch(/npm warn/i);
    expect(run.stderr).toBe("");
  });
});

describe("a long-running leafmesh process", () => {
  it("an agent runs in place (same pid) with V8's young generation capped and one malloc arena, unless the caller chose its own; a hub with a larger cap and glibc's arenas", async () => {
    const hub = await startHubProcess({ name: "hub-1", ports: await hubPorts(), plainStart: true });
    const agent = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], plainStart: true });
    const argv = (pid: number | undefined) => readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const arenas = (pid: number | undefined) => readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").find((entry) => entry.startsWith("MALLOC_ARENA_MAX="));
    expect(argv(agent.child.pid)).toContain("--max-semi-space-size=4");
    expect(arenas(agent.child.pid)).toBe("MALLOC_ARENA_MAX=1");
    expect(argv(hub.child.pid)).toContain("--max-semi-space-size=16");
    expect(arenas(hub.child.pid)).toBeUndefined();
    const hubChosen = await startHubProcess({ name: "hub-2", ports: await hubPorts(), env: { NODE_OPTIONS: "--max-semi-space-size=32" }, plainStart: true });
    expect(argv(hubChosen.child.pid).some((arg) => arg.startsWith("--max-semi-space-size"))).toBe(false); // NODE_OPTIONS holds it: no re-exec
    expect(readFileSync(`/proc/${hubChosen.child.pid}/environ`, "utf8")).toContain("NODE_OPTIONS=--max-semi-space-size=32");
    for (const process of [hub, agent]) expect(process.output()).not.toMatch(/ExperimentalWarning|execve/);
    const chosen = await startAgentProcess({ node: "edge-b", hubs: [hub.leafUrl], env: { NODE_OPTIONS: "--max-semi-space-size=16", MALLOC_ARENA_MAX: "4" }, plainStart: true });
    expect(argv(chosen.child.pid)).not.toContain("--max-semi-space-size=4");
    expect(arenas(chosen.child.pid)).toBe("MALLOC_ARENA_MAX=4");
    // Only the arenas chosen: the young generation is still capped, in the same single re-exec.
    const arenasOnly = await startAgentProcess({ node: "edge-c", hubs: [hub.leafUrl], env: { MALLOC_ARENA_MAX: "2" }, plainStart: true });
    expect(argv(arenasOnly.child.pid)).toContain("--max-semi-space-size=4");
    expect(arenas(arenasOnly.child.pid)).toBe("MALLOC_ARENA_MAX=2");
  }, 60_000);
});
