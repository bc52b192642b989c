/**
 * The revocation list reaches every agent through the fabric and stays with it
 * offline: `keys revoke --hub` publishes the CA-signed list to the hubs, agents
 * mirror and verify it (`leafmesh status` shows it), an agent restarted while
 * every hub is down still holds it, a hub started with an older keys copy does
 * not roll it back, and a list not signed by the mesh CA is ignored.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { buckets, revocationListKey } from "../bus/subjects.ts";
import { eventually } from "../test/support/ports.ts";
import { runCli, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, trustOf, type AgentProcess, type HubProcess, runCliOk } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { loadHubSecurity } from "./security.ts";
import { certificateFingerprint, signRevocationList, verifyRevocationList } from "./revocation-list.ts";
import { createCertificateAuthority } from "./tls.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";

let keys: string;
let hub: HubProcess;
const agents = new Map<string, AgentProcess>();

async function startAgent(node: string, data?: string): Promise<AgentProcess> {
  const agent = await startAgentProcess({
    node,
    hubs: [hub.leafUrl.replace("nats://", "tls://")],
    keys: join(keys, "nodes", node),
    ...(data ? { dataDir: data } : {}),
    extraArgs: ["--tunnel-ways", "relay", "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off"],
  });
  agents.set(node, agent);
  return agent;
}

beforeAll(async () => {
  requireTools();
  keys = join(tempDir(), "keys");
  // The mesh's keys as `leafmesh keys init` and `keys issue` make them (the same functions, without a CLI process each);
  // the revocation under test goes through `keys revoke --hub`.
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b", "edge-c", "edge-d"]) await issueNode({ dir: keys, node });
  hub = await startHubProcess({ name: "hub-1", keys });
  await Promise.all(["edge-a", "edge-b"].map((node) => startAgent(node)));
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
});

describe("the revocation list on the fabric", () => {
  it("reaches every agent within seconds of 'keys revoke --hub', naming the certificate it revoked", async () => {
    const revokedCert = certificateFingerprint(readFileSync(join(keys, "nodes", "edge-c", "node.crt")));
    const output = await runCliOk("keys", "revoke", "--dir", keys, "--node", "edge-c", "--hub", hub.clientUrl.replace("nats://", "tls://"));
    expect(output).toContain("revocation list version 1 published to the hubs");
    for (const agent of agents.values()) {
      await eventually(async () => (await trustOf(agent))?.revoked.includes("edge-c"), 15_000, `${agent.name} to hold the revocation`);
      expect(await trustOf(agent)).toEqual({ revocationList: 1, revoked: ["edge-c"] });
    }
    const list = verifyRevocationList(readFileSync(join(keys, "hub", "revocations.json")), readFileSync(join(keys, "ca", "ca.crt"), "utf8"));
    expect(list.revoked.map((entry) => entry.certificate)).toEqual([revokedCert]);
  });

  it("is not replaced by an older list, nor by one the mesh CA did not sign", async () => {
    const security = loadHubSecurity(keys, { resolverDir: join(tempDir(), "unused") });
    const client = await connect({ servers: hub.clientUrl, ...security.publisherConnectOptions });
    try {
      const kv = await new Kvm(client).open(buckets.revocations);
      // Another CA signs a list that would revoke nobody, with a higher version: every agent refuses it.
      const stranger = tempDir();
      await createCertificateAuthority({ certFile: join(stranger, "ca.crt"), keyFile: join(stranger, "ca.key"), name: "another mesh" });
      await kv.put(revocationListKey, signRevocationList({ version: 99, issuedAt: new Date().toISOString(), revoked: [] }, readFileSync(join(stranger, "ca.key"), "utf8")));
      for (const agent of agents.values()) await eventually(() => agent.output().includes("revocation list refused"), 15_000, `${agent.name} to refuse the foreign list`);
      // A list of this CA, but older (version 0: from before the revocation): ignored.
      await kv.put(revocationListKey, signRevocationList({ version: 0, issuedAt: new Date().toISOString(), revoked: [] }, readFileSync(join(keys, "ca", "ca.key"), "utf8")));
      for (const agent of agents.values()) await eventually(() => agent.output().includes("revocation list version 0 ignored: version 1 is in force"), 15_000, `${agent.name} to ignore the older list`);
      // The true list back in the bucket, for what follows.
      await kv.put(revocationListKey, readFileSync(join(keys, "hub", "revocations.json")));
    } finally {
      await client.close();
    }
    for (const agent of agents.values()) expect(await trustOf(agent)).toEqual({ revocationList: 1, revoked: ["edge-c"] });
  });

  it("a revocation whose push failed is kept, says how to push it, and 'keys push' brings it to the hubs and every agent", async () => {
    const unpushed = await runCli(["keys", "revoke", "--dir", keys, "--node", "edge-d", "--hub", "tls://127.0.0.1:1"]);
    expect(unpushed.code).toBe(1);
    expect(unpushed.stdout).toMatch(/node edge-d: user key U\w+ revoked/);
    expect(unpushed.stderr).toContain(`The change is kept in ${keys}: push it when a hub answers with \`leafmesh keys push --dir ${keys} --hub tls://127.0.0.1:1\``);
    expect(unpushed.stderr).not.toContain("cause:");
    for (const agent of agents.values()) expect((await trustOf(agent))?.revoked).not.toContain("edge-d");
    const output = await runCliOk("keys", "push", "--dir", keys, "--hub", hub.clientUrl.replace("nats://", "tls://"));
    expect(output).toMatch(/pushed account A\w+ to hub /);
    expect(output).toContain("revocation list version 2 published to the hubs");
    for (const agent of agents.values()) {
      await eventually(async () => (await trustOf(agent))?.revoked.includes("edge-d"), 15_000, `${agent.name} to hold the pushed revocation`);
      expect(await trustOf(agent)).toEqual({ revocationList: 2, revoked: ["edge-c", "edge-d"] });
    }
  });

  it("tells a running node that it was revoked, in its own words, once however often its leaf retries; and, issued again where it runs, takes its new bundle", async () => {
    const b = agents.get("edge-b")!;
    await runCliOk("keys", "revoke", "--dir", keys, "--node", "edge-b", "--hub", hub.clientUrl.replace("nats://", "tls://"));
    const said = `the hub refused this node's login at 127.0.0.1:${new URL(hub.leafUrl).port}: credentials revoked: this node's user key was revoked (keys revoke, or replaced by keys issue --rotate): start it with its new bundle`;
    await eventually(() => b.output().includes(said), 15_000, "edge-b to say that it was revoked");
    await new Promise((resolve) => setTimeout(resolve, 3_000)); // its leaf retries every second
    expect(b.output().split(said)).toHaveLength(2);
    expect(agents.get("edge-a")!.output()).not.toContain("the hub refused this node's login");
    // Issued again, its bundle written over where it runs: the agent takes it, starting again in place
    // (trust/bundle-watch.ts), and enforces the list as a member again. A node that got only new credentials, its
    // revoked certificate kept, says so and shows it in status: trust/rotation.test.ts.
    await issueNode({ dir: keys, node: "edge-b" }); // as `keys issue` does it, without a CLI process
    await eventually(() => b.output().includes("keys replaced on disk: stopping") || undefined, 20_000, "edge-b to take its new bundle");
    await eventually(async () => (await b.view().catch(() => undefined))?.status.actors.find((actor) => actor.name === "trust")?.state === "enforcing" || undefined, 30_000, "edge-b to enforce the list again");
    expect(agents.get("edge-a")!.output()).not.toContain("this node's own certificate");
  });

  it("holds on an agent restarted while every hub is down", async () => {
    const a = agents.get("edge-a")!;
    const data = a.dataDir;
    await a.stop();
    await hub.stop();
    const again = await startAgent("edge-a", data);
    await eventually(async () => (await trustOf(again))?.revoked.includes("edge-c"), 20_000, "edge-a to enforce the list from its mirror");
    expect((await again.view()).status.links.some((link) => link.direction === "upstream" && link.up)).toBe(false);
  });
});
