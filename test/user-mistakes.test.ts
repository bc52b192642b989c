/**
 * The mistakes a new user makes with the documented commands, each typed as a user types it: the
 * command ends at once with a message that names what is wrong and what to do, not a stack trace,
 * not a process that runs on half working.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, runCliOk as cli, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess } from "./support/processes.ts";
import { requireTools } from "./support/trust-servers.ts";
import { eventually, freePort } from "./support/ports.ts";

/** A hub's listeners on free loopback ports: one that did start (without the check) must not clash. */
async function loopbackPorts(): Promise<string[]> {
  const flags = ["--listen", "--leaf-listen", "--cluster-listen", "--monitor-listen"];
  return (await Promise.all(flags.map(async (flag) => [flag, `127.0.0.1:${await freePort()}`]))).flat();
}

let keys: string;
let base: string;
let hub: HubProcess;
let agent: AgentProcess;

beforeAll(async () => {
  requireTools();
  base = tempDir("leafmesh-mistakes-");
  keys = join(base, "keys");
  await cli("keys", "init", "--dir", keys, "--hub-hosts", "hub-1.example.net,hub-2.example.net,127.0.0.1");
  await cli("keys", "issue", "--dir", keys, "--node", "edge-a");
  hub = await startHubProcess({ name: "hub-1", keys });
  agent = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], keys: join(keys, "nodes", "edge-a") });
}, 120_000);

afterAll(() => stopAllProcesses());

describe("a new user's mistakes", () => {
  it("another node's bundle: the agent refuses to start, naming whose bundle it is", async () => {
    // Before, it ran: attached with edge-a's credentials under the name edge-c, and said only timeouts.
    const result = await runCli(["agent", "--node", "edge-c", "--hub", "tls://127.0.0.1:1", "--data", join(base, "edge-c"), "--keys", join(keys, "nodes", "edge-a"), "--metrics-listen", "off"], 30_000);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("is node 'edge-a''s (its certificate names 'edge-a'), not node 'edge-c''s: give --node edge-a, or the bundle issued for 'edge-c'");
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });

  it("status on a node with its bundle and no --node: that node's status (README: 'watch the mesh from any hub or node')", async () => {
    // Before: "holds no mesh keys (no state.json): run `leafmesh keys init --dir BUNDLE` first".
    const out = await cli("status", "--keys", join(keys, "nodes", "edge-a"), "--nats", agent.clientUrl);
    expect(out).toMatch(/^agent edge-a — /);
  });

  it("status --tree with a node's bundle: refused, saying where the tree can be drawn", async () => {
    // Before: the node alone, "not attached to any server seen" (a node's account carries only its own heartbeats).
    const result = await runCli(["status", "--tree", "--keys", join(keys, "nodes", "edge-a"), "--nats", agent.clientUrl], 30_000);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("a node's credentials see only its own: run it against a hub's client address with the mesh's keys directory");
  });

  it("status without --keys on a secured agent or hub: says to give --keys, not Node's advice about system CAs", async () => {
    const onAgent = await runCli(["status", "--nats", agent.clientUrl], 30_000);
    expect(onAgent.code).toBe(1);
    expect(onAgent.stderr).toContain("Authorization Violation. The server is secured and wants credentials: give --keys DIR");
    const onHub = await runCli(["status", "--nats", hub.clientUrl], 30_000);
    expect(onHub.code).toBe(1);
    expect(onHub.stderr.split("\n")[0]).toContain("unable to verify the first certificate. The server speaks TLS with a certificate of the mesh's own CA, as a secured hub does: give --keys DIR");
    expect(onHub.stderr.split("\n")[0]).not.toContain("--use-system-ca");
  });

  it("a hub whose --routes name a host the hubs' certificate does not: refused, with the keys hub-cert command to run", async () => {
    // Before: the hubs ran, never joined, and logged nats-server's x509 error every second.
    const routes = "nats-route://hub-1.example.net:6222,nats-route://hub-2.example.net:6222,nats-route://hub-3.example.net:6222";
    const result = await runCli(["hub", "--name", "hub-3", "--data", join(base, "hub-3"), "--keys", keys, "--routes", routes, ...(await loopbackPorts()), "--metrics-listen", "off"], 30_000);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("--routes nats-route://hub-3.example.net:6222: the hubs' certificate");
    expect(result.stderr).toContain("does not name hub-3.example.net (it names hub-1.example.net, hub-2.example.net, 127.0.0.1)");
    expect(result.stderr).toContain(`leafmesh keys hub-cert --dir ${keys} --hub-hosts hub-1.example.net,hub-2.example.net,127.0.0.1,hub-3.example.net`);
  });

  it("an agent that dials the hub by a name its certificate does not hold: says so in leafmesh's words, with what to do", async () => {
    // A mesh whose hubs' certificate names hub-1.example.net only; the agent dials localhost. Before: only
    // nats-server's "x509: certificate is valid for hub-1.example.net, not localhost", and "not connected to any upstream".
    const named = join(base, "named-keys");
    await cli("keys", "init", "--dir", named, "--hub-hosts", "hub-1.example.net");
    await cli("keys", "issue", "--dir", named, "--node", "edge-b");
    const namedHub = await startHubProcess({ name: "hub-1", keys: named });
    const misnamed = namedHub.leafUrl.replace("nats://127.0.0.1:", "tls://localhost:");
    const lost = await startAgentProcess({ node: "edge-b", hubs: [misnamed], keys: join(named, "nodes", "edge-b"), extraArgs: ["--mdns", "off"], waitReady: false });
    await eventually(() => lost.output().includes("TLS refused: the upstream's certificate names hub-1.example.net, not localhost, the host this server dials"), 30_000, "the explanation").catch((error: Error) => {
      throw new Error(`${error.message}\n${lost.output().slice(0, 6000)}`);
    });
    expect(lost.output()).toContain("`leafmesh keys hub-cert --hub-hosts …,localhost`");
    await lost.stop();
    await namedHub.stop();
  });

  it("an agent given a hub's client port as --hub: says it is not a leafnode port, and which one to use", async () => {
    // Before: only nats-server's "attempted to connect to wrong port".
    const wrong = await startAgentProcess({ node: "edge-a", hubs: [hub.clientUrl.replace("nats://", "tls://")], keys: join(keys, "nodes", "edge-a"), extraArgs: ["--mdns", "off"], waitReady: false });
    await eventually(() => wrong.output().includes("the upstream URL is not a leafnode port (a hub's client port, 4222, answered)"), 30_000, "the explanation").catch((error: Error) => {
      throw new Error(`${error.message}\n${wrong.output().slice(0, 6000)}`);
    });
    await wrong.stop();
  });
});
