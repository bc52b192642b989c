/**
 * A node that restarts stays reachable (issue 15, item 10), with real agent
 * processes on loopback and a direct path between them: edge-b is killed (-9)
 * and started again with the same data dir and flags.
 *
 * - Its libp2p key lives in the data dir (tunnel/peer.key, 0600): it comes back
 *   with the same peer id, and edge-a's streams to it work again within seconds.
 * - Started with its key gone (a data dir lost), it comes back with a new peer
 *   id: edge-a's path follows it (its record) and streams work again.
 * - A key file that holds no key stops the agent with an error that says so.
 *
 * Stopped cleanly (SIGTERM) first: its record leaves mesh-nodes at once, and comes back with it.
 */
import { statSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { startTarget, type FaultTarget } from "./support/fault-targets.ts";
import { writePsk } from "./support/manifests.ts";
import { eventually, freePort } from "./support/ports.ts";
import { cliPath, runCli, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess } from "./support/processes.ts";
import { echoesThroughSocks } from "./support/socks-client.ts";

let hub: HubProcess;
let echo: FaultTarget;
let edgeA: AgentProcess;
let edgeB: AgentProcess;
let socksPort: number;

const peerIdOf = (agent: AgentProcess) => /"peerId":"(12D3Koo\w+)"[^\n]*"msg":"tunnel started"/.exec(agent.output())?.[1];
const keyFileOf = (agent: AgentProcess) => join(agent.dataDir, "tunnel", "peer.key");

/** A stream edge-a → edge-b through edge-a's SOCKS proxy carries an echo; the time it took to get one. */
function streamWorks(timeoutMs: number): Promise<number> {
  return echoesThroughSocks(socksPort, "edge-b", echo.port, timeoutMs, "a stream edge-a → edge-b");
}

async function pathFromA(): Promise<string | undefined> {
  const view = await edgeA.view();
  return (view.status.actors.find((actor) => actor.name === "tunnel")?.detail?.paths as Record<string, string> | undefined)?.["edge-b"];
}

beforeAll(async () => {
  echo = await startTarget("echo");
  const psk = writePsk(tempDir());
  hub = await startHubProcess({ name: "hub-1" });
  socksPort = await freePort();
  const tunnelArgs = ["--psk", psk, "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "off", "--tunnel-ways", "direct,relay"];
  edgeA = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], extraArgs: [...tunnelArgs, "--socks", `127.0.0.1:${socksPort}`] });
  edgeB = await startAgentProcess({ node: "edge-b", hubs: [hub.leafUrl], extraArgs: tunnelArgs });
  await streamWorks(30_000);
  await eventually(async () => (await pathFromA()) === "direct", 15_000, "a direct path edge-a → edge-b");
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
  await echo?.close();
});

describe("a node stopped cleanly and started again", () => {
  it("withdraws its record at once (peers drop it, where a record left to expire stays listed 150 s), and puts it back when started", async () => {
    const nodes = await new Kvm(jetstream(await hub.connection(), { domain: "hub" })).open("mesh-nodes");
    expect((await nodes.get("edge-b"))?.operation).toBe("PUT");
    expect(await edgeB.stop()).toBe(0);
    expect((await nodes.get("edge-b"))?.operation, "edge-b's key in mesh-nodes right after its stop").toBe("DEL");
    expect(edgeB.output()).toMatch(/node record withdrawn from mesh-nodes/);
    edgeB = await edgeB.restart();
    await eventually(async () => (await nodes.get("edge-b"))?.operation === "PUT", 15_000, "edge-b's record back");
    expect(await streamWorks(20_000)).toBeLessThan(20_000);
    await eventually(async () => (await pathFromA()) === "direct", 15_000, "the direct path back");
  }, 90_000);
});

describe("a node killed and started again", () => {
  it("keeps its peer id (its libp2p key in the data dir, 0600), and is reached again within seconds", async () => {
    const before = peerIdOf(edgeB);
    expect(before).toBeDefined();
    await edgeB.kill();
    edgeB = await edgeB.restart();
    expect(peerIdOf(edgeB)).toBe(before);
    expect(await streamWorks(20_000)).toBeLessThan(20_000);
    await eventually(async () => (await pathFromA()) === "direct", 15_000, "the direct path back");
    expect(statSync(keyFileOf(edgeB)).mode & 0o777).toBe(0o600);
  }, 90_000);

  it("with its key gone, comes back with a new peer id that edge-a's path follows", async () => {
    const before = peerIdOf(edgeB);
    await edgeB.kill();
    rmSync(keyFileOf(edgeB), { force: true });
    edgeB = await edgeB.restart();
    expect(peerIdOf(edgeB)).toBeDefined();
    expect(peerIdOf(edgeB)).not.toBe(before);
    expect(await streamWorks(20_000)).toBeLessThan(20_000);
    await eventually(async () => (await pathFromA()) === "direct", 15_000, "a direct path to the new peer id");
    expect(edgeA.output()).toMatch(/node has a new peer id \(restarted with another key\): its path follows/);
  }, 90_000);

  it("refuses to start with a key file that holds no key, and says which file and what to do", async () => {
    await edgeB.kill();
    writeFileSync(keyFileOf(edgeB), "not a key", { mode: 0o600 });
    // The same command line as edge-b's, run to its end.
    const args = edgeB.child.spawnargs.slice(edgeB.child.spawnargs.indexOf(cliPath) + 1);
    const result = await runCli(args, 45_000);
    const output = result.stdout + result.stderr;
    expect(result.code, output.slice(-2000)).not.toBe(0);
    expect(output).toMatch(/peer\.key is not a libp2p private key/);
    expect(output).toMatch(/restore it from a backup .* or delete it/);
    expect(output).not.toMatch(/DrainingConnectionError/);
  }, 60_000);
});
