/**
 * A Ctrl-C while a role starts, as a user sends it from a terminal (SIGINT to the process group): the start ends
 * then, saying so, with no server left running and the data directory's lock released, whatever the start was
 * waiting for. Before, the signal was heard only once the start was over: a hub waiting for its cluster, an
 * agent asking a hub that does not answer to enrol it, went on for their whole wait.
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { enrolSubject } from "../bus/subjects.ts";
import { eventually, freePort } from "./support/ports.ts";
import { cliPath, nodeBinary, runCliOk, stopAllProcesses, tempDir } from "./support/processes.ts";
import { startNatsServer, stopAllServers } from "./support/trust-servers.ts";

afterAll(async () => {
  await stopAllProcesses();
  await stopAllServers();
});

/** `leafmesh ARGS` in a process group of its own (a shell's foreground job), its output gathered, killed when the test ends. */
function startInGroup(args: string[]) {
  const child = spawn(nodeBinary, [cliPath, ...args], { stdio: ["ignore", "pipe", "pipe"], detached: true });
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, "SIGKILL");
  });
  const run = { child, output: "", exited: new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code))), exitedAt: 0 };
  child.once("exit", () => (run.exitedAt = performance.now()));
  child.stdout!.on("data", (chunk: Buffer) => (run.output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (run.output += chunk.toString()));
  return run;
}

/** nats-server processes whose command line names this data directory's config. */
function serversOf(dataDir: string): number[] {
  return readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        return !stat.includes(") Z ") && readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").includes(`nats-server -c ${join(dataDir, "nats-server.conf")}`);
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

describe("a Ctrl-C while a role starts", () => {
  it("a hub whose nats-server waits for the other hubs of its cluster: stops then, says so, exits non-zero, leaves no server and no lock", { timeout: 60_000 }, async () => {
    const data = tempDir("leafmesh-interrupted-");
    const args = ["hub", "--name", "hub-1", "--insecure", "--data", data, "--metrics-listen", "off", "--log-level", "info"];
    for (const flag of ["--listen", "--leaf-listen", "--monitor-listen", "--cluster-listen"]) args.push(flag, `127.0.0.1:${await freePort()}`);
    // Two hubs that are not there: its JetStream waits for a meta leader, and its /healthz with it (20 s before it gives up).
    args.push("--routes", `nats-route://127.0.0.1:${await freePort()},nats-route://127.0.0.1:${await freePort()}`);
    const hub = startInGroup(args);
    await eventually(() => hub.output.includes("Waiting for routing to be established"), 30_000, "the hub's nats-server to wait for its routes");
    expect(serversOf(data).length).toBe(1);
    process.kill(-hub.child.pid!, "SIGINT");
    expect(await hub.exited).toBe(1);
    expect(hub.output).toContain("leafmesh hub: stopped while its nats-server 'hub-1' was starting, before it was ready: nothing is left running");
    expect(hub.output).not.toContain("did not become ready");
    expect(hub.output).not.toMatch(/Unhandled|Warning:/);
    expect(serversOf(data)).toEqual([]);
    expect(existsSync(join(data, "leafmesh.lock"))).toBe(false);
  });

  it("an agent joining with a token while no hub answers (it asks again for up to 3 minutes): stops then, says the node has not joined, keeps its request's keys", { timeout: 60_000 }, async () => {
    const base = tempDir("leafmesh-join-interrupted-");
    const keys = join(base, "keys");
    await runCliOk("keys", "init", "--dir", keys, "--hub-hosts", "127.0.0.1");
    // The token names a hub address where nothing listens: every attempt is refused, and asked again.
    await runCliOk("keys", "token", "--dir", keys, "--url", `tls://127.0.0.1:${await freePort()}`, "--out", join(base, "token"));
    const data = join(base, "edge-j");
    const args = ["agent", "--node", "edge-j", "--hub", `tls://127.0.0.1:${await freePort()}`, "--join-file", join(base, "token"), "--data", data, "--intercept", "off", "--mdns", "off", "--metrics-listen", "off"];
    for (const flag of ["--nats-listen", "--monitor-listen", "--tunnel-tls"]) args.push(flag, `127.0.0.1:${await freePort()}`);
    const agent = startInGroup(args);
    await eventually(() => agent.output.includes("asking again"), 30_000, "the agent to ask the hub again");
    process.kill(-agent.child.pid!, "SIGINT");
    // Before: the Ctrl-C was not heard until the asking gave up, minutes later.
    const code = await Promise.race([agent.exited, new Promise<string>((resolve) => setTimeout(() => resolve("still asking 30 s after the Ctrl-C"), 30_000))]);
    expect(code).toBe(1);
    expect(agent.output).toContain("leafmesh agent: stopped before a hub enrolled node 'edge-j' with token");
    expect(agent.output).toContain("the node has not joined; start it again to join");
    expect(agent.output).not.toMatch(/Unhandled|Warning:/);
    expect(existsSync(join(data, "keys", "join.nk"))).toBe(true);
    expect(existsSync(join(data, "leafmesh.lock"))).toBe(false);
    expect(serversOf(data)).toEqual([]);
  });

  it("an agent whose join attempt is under way (a hub that accepts and says nothing, one that takes the request and never answers): the attempt ends with the Ctrl-C, and the agent exits then", { timeout: 60_000 }, async () => {
    const base = tempDir("leafmesh-join-under-way-");
    const keys = join(base, "keys");
    // localhost too: nats.js checks the certificate of a hub dialled by its IP address against that name.
    await runCliOk("keys", "init", "--dir", keys, "--hub-hosts", "127.0.0.1,localhost");
    await runCliOk("keys", "token", "--dir", keys, "--url", `tls://127.0.0.1:${await freePort()}`, "--out", join(base, "token"));
    // A hub that takes the connection and says nothing: the dial waits for its INFO (10 s).
    const accepted: Socket[] = [];
    const silent = createServer((socket) => accepted.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    onTestFinished(() => void (accepted.forEach((socket) => socket.destroy()), silent.close()));
    // A hub that takes the request and never answers it (its enrolment busy for good): the request waits 30 s.
    const hub = join(keys, "hub");
    const slow = await startNatsServer({
      name: "slow-hub",
      dir: join(base, "slow-hub"),
      config: ({ client, monitor }) => `listen: 127.0.0.1:${client}\nhttp: 127.0.0.1:${monitor}\ntls { cert_file: "${join(hub, "hub.crt")}", key_file: "${join(hub, "hub.key")}", ca_file: "${join(hub, "ca.crt")}" }\n`,
    });
    const enrolment = await connect({ servers: slow.clientUrl.replace("nats:", "tls:"), tls: { ca: readFileSync(join(hub, "ca.crt"), "utf8") } });
    onTestFinished(() => enrolment.close());
    let requests = 0;
    enrolment.subscribe(enrolSubject, { callback: () => void requests++ });
    await enrolment.flush();
    const cases = [
      { url: `tls://127.0.0.1:${(silent.address() as { port: number }).port}`, underWay: () => accepted.length > 0, what: "its dial" },
      { url: slow.clientUrl.replace("nats:", "tls:"), underWay: () => requests > 0, what: "its request" },
    ];
    for (const [index, { url, underWay, what }] of cases.entries()) {
      const data = join(base, `edge-${index}`);
      const args = ["agent", "--node", `edge-${index}`, "--hub", `tls://127.0.0.1:${await freePort()}`, "--join-file", join(base, "token"), "--join-url", url, "--data", data, "--intercept", "off", "--mdns", "off", "--metrics-listen", "off"];
      for (const flag of ["--nats-listen", "--monitor-listen", "--tunnel-tls"]) args.push(flag, `127.0.0.1:${await freePort()}`);
      const agent = startInGroup(args);
      let saidAt = 0;
      agent.child.stderr!.on("data", () => (saidAt ||= agent.output.includes("stopped before a hub enrolled") ? performance.now() : 0));
      await eventually(underWay, 30_000, `the agent's join attempt (${what}) to be under way`);
      process.kill(-agent.child.pid!, "SIGINT");
      expect(await agent.exited).toBe(1);
      expect(agent.output).toContain(`leafmesh agent: stopped before a hub enrolled node 'edge-${index}' with token`);
      // Before: the attempt went on, and the process lived until bin/leafmesh.js's fallback ended it 2 s after the message.
      expect(agent.exitedAt - saidAt, `ms from the message to the exit, with ${what} under way`).toBeLessThan(1_500);
      expect(existsSync(join(data, "leafmesh.lock"))).toBe(false);
    }
  });
});
