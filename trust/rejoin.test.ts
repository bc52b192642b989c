/**
 * A node that joined with a token, over its life: its box reinstalled (DATA wiped, new keys) while its identity
 * is still issued, then revoked and joined again under the same name, as the messages it is given say.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { rpcRequest } from "../bus/bus.ts";
import { rpc } from "../bus/rpc.ts";
import { sampleService, writeManifest } from "../test/support/manifests.ts";
import { eventually } from "../test/support/ports.ts";
import { runCli, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess, runCliOk } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys } from "./key-store.ts";

let base: string;
let keys: string;
let hub: HubProcess;
let hubClient: NatsConnection;
let tokenFile: string;

const tunnelArgs = ["--tunnel-ways", "relay", "--mdns", "off"];
const hubTls = () => hub.clientUrl.replace("nats://", "tls://");

beforeAll(async () => {
  requireTools();
  base = tempDir("leafmesh-rejoin-");
  keys = join(base, "keys");
  const manifests = join(base, "manifests");
  writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
  // As `leafmesh keys init` makes them (the same function, without a CLI process).
  await initKeys({ dir: keys });
  hub = await startHubProcess({ name: "hub-1", manifests, keys, extraArgs: ["--enrol"] });
  hubClient = await hub.connection();
  const token = (await runCliOk("keys", "token", "--dir", keys, "--url", hubTls(), "--ttl", "1h", "--uses", "5")).trim();
  tokenFile = join(base, "token");
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
});

describe("a node that joined with a token", () => {
  let agent: AgentProcess;

  it("reinstalled while still issued: refused as a takeover, saying to revoke first", async () => {
    agent = await startAgentProcess({ node: "edge-j", hubs: [hub.leafUrl.replace("nats://", "tls://")], joinFile: tokenFile, extraArgs: tunnelArgs });
    expect((await rpcRequest(hubClient, "edge-j", rpc.status, undefined, 3_000)).node).toBe("edge-j");
    await agent.stop();
    rmSync(agent.dataDir, { recursive: true, force: true });
    const again = await runCli(["agent", "--node", "edge-j", "--hub", hub.leafUrl.replace("nats://", "tls://"), "--data", agent.dataDir, "--join-file", tokenFile, "--metrics-listen", "off", ...tunnelArgs], 60_000);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/node 'edge-j' is already issued to another key.*revoke it first/);
  });

  it("revoked first, as that said: the reinstalled box joins under its name with its new keys", async () => {
    await runCliOk("keys", "revoke", "--dir", keys, "--node", "edge-j", "--hub", hubTls());
    rmSync(agent.dataDir, { recursive: true, force: true });
    agent = await startAgentProcess({ node: "edge-j", hubs: [hub.leafUrl.replace("nats://", "tls://")], joinFile: tokenFile, extraArgs: tunnelArgs });
    expect(agent.output()).toContain("node 'edge-j' joined the mesh");
    await eventually(async () => (await rpcRequest(hubClient, "edge-j", rpc.status, undefined, 3_000).catch(() => undefined))?.node === "edge-j", 20_000, "edge-j answers");
  });

  it("revoked while it runs: told to join again, not to put a bundle it never had in place; joined again, it is a member", async () => {
    await runCliOk("keys", "revoke", "--dir", keys, "--node", "edge-j", "--hub", hubTls());
    // Its leaf link is cut at once, before the revocation list reaches it: the refused login is what it hears.
    await eventually(() => /the hub refused this node's login/.test(agent.output()), 20_000, "the agent told its login is refused");
    const told = agent.output().split("\n").filter((line) => line.includes("the hub refused this node's login")).join("\n");
    expect(told).toContain(join(agent.dataDir, "keys"));
    expect(told).toContain("join again");
    expect(told).not.toContain("put its new bundle");

    // what it was told: remove its identity, start again with a token
    await agent.stop();
    rmSync(join(agent.dataDir, "keys"), { recursive: true, force: true });
    agent = await agent.restart();
    expect(agent.output()).toContain("node 'edge-j' joined the mesh");
    await eventually(async () => (await rpcRequest(hubClient, "edge-j", rpc.status, undefined, 3_000).catch(() => undefined))?.node === "edge-j", 20_000, "edge-j answers again");
  });
});
