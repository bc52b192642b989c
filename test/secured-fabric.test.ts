/**
 * The fabric with security on (issue 8 with the fabric of issue 2): three hubs
 * clustered over TLS routes with the mesh's certificates, agents with their own
 * credentials; the catalog flows, `status` needs the keys, and a hub started
 * with another mesh's keys cannot join the cluster. The agent, given all three
 * hubs, scores them with their relay load (fabric-load.<hub>, which every node
 * account imports: the hubs' own bus events stay in the mesh account).
 * The agent keeps its local key in the bundle's local.nk, where a `leafmesh
 * status` from before 2026-12-06 reads it; a random local.nk such a command
 * left is named by `status`, `sub`, `netcheck` and `drill`, which connect with the
 * derived key.
 */
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { createUser } from "@nats-io/jwt";
import { join } from "node:path";
import { nkeyAuthenticator } from "@nats-io/transport-node";
import { afterEach, describe, expect, it } from "vitest";
import { connectNats } from "../bus/connect.ts";
import { nodeInboxPrefix } from "../bus/subjects.ts";
import { fetchNodeView } from "../cli/status.ts";
import { derivedLocalSeed } from "../trust/local-nkey.ts";
import { initKeys } from "../trust/key-store.ts";
import { issueNode } from "../trust/node-credentials.ts";
import { sampleService, writeManifest } from "./support/manifests.ts";
import { eventually } from "./support/ports.ts";
import { runCli, startAgentProcess, startHubCluster, stopAllProcesses, tempDir } from "./support/processes.ts";

afterEach(stopAllProcesses);

describe("the fabric with security on", () => {
  it("clusters three hubs over TLS routes and serves agents with their own credentials", { timeout: 120_000 }, async () => {
    const keys = join(tempDir(), "keys");
    await initKeys({ dir: keys });
    await issueNode({ dir: keys, node: "edge-a" });
    const manifests = tempDir();
    writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
    const hubs = await startHubCluster({ names: ["hub-1", "hub-2", "hub-3"], manifests, keys });
    const agent = await startAgentProcess({ node: "edge-a", hubs: hubs.map((hub) => hub.leafUrl), keys });

    const status = async () => runCli(["status", "--json", "--keys", keys, "--node", "edge-a", "--nats", agent.clientUrl]);
    await eventually(async () => {
      const result = await status();
      return result.code === 0 && JSON.parse(result.stdout).services.length === 1;
    }, 30_000, "the catalog at the secured agent");
    // The agent's local key is in its bundle's local.nk, and a client with it is served, as a `leafmesh status` from before
    // 2026-12-06 connects: it reads local.nk, and finding none wrote a random key and was refused ("Authorization Violation").
    const bundle = join(keys, "nodes", "edge-a");
    expect(statSync(join(bundle, "local.nk")).mode & 0o777).toBe(0o600);
    const seed = readFileSync(join(bundle, "local.nk"), "utf8").trim();
    expect(seed).toBe(derivedLocalSeed(readFileSync(join(bundle, "node.key")), "edge-a"));
    const asOlderStatus = await connectNats({ servers: [agent.clientUrl], authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)), inboxPrefix: nodeInboxPrefix("edge-a"), name: "as a leafmesh status from before 2026-12-06" });
    try {
      expect((await fetchNodeView(asOlderStatus)).status.node).toBe("edge-a");
    } finally {
      await asOlderStatus.close();
    }
    // A local.nk an older status wrote after the agent started (a random key, before agents wrote theirs): `status` is
    // refused with it, takes the key derived from node.key, and says which file is out of step (before: Authorization Violation).
    writeFileSync(join(bundle, "local.nk"), new TextDecoder().decode(createUser().getSeed()), { mode: 0o600 });
    const mended = await status();
    expect(mended.code).toBe(0);
    expect(JSON.parse(mended.stdout).status.node).toBe("edge-a");
    expect(mended.stderr).toContain(`the agent of 'edge-a' refused the key in ${join(bundle, "local.nk")} and took the one derived from node.key`);
    // The other commands that connect to the agent mend it the same way (before: a bare Authorization Violation, exit 1).
    // drill goes as far as reading the node's catalog: a service it lacks stops it before anything is cut.
    const [subscribed, netcheck, drill] = await Promise.all([
      runCli(["sub", "--keys", keys, "--node", "edge-a", "--nats", agent.clientUrl, "--count", "1", "mesh.edge-a.>"], 30_000),
      runCli(["netcheck", "--json", "--keys", keys, "--node", "edge-a", "--nats", agent.clientUrl], 60_000),
      runCli(["drill", "--keys", keys, "--node", "edge-a", "--nats", agent.clientUrl, "--services", "shop/absent"], 30_000),
    ]);
    expect(subscribed.code, subscribed.stderr).toBe(0);
    expect(subscribed.stdout).toMatch(/ mesh\.edge-a\.\S+ \{/);
    expect(subscribed.stderr).toContain(`leafmesh sub: warning: the agent of 'edge-a' refused the key in ${join(bundle, "local.nk")}`);
    expect(netcheck.code, netcheck.stderr).toBe(0);
    expect(JSON.parse(netcheck.stdout)).toMatchObject({ node: "edge-a", upstreams: [{}, {}, {}] });
    expect(netcheck.stderr).toContain(`leafmesh netcheck: warning: the agent of 'edge-a' refused the key in ${join(bundle, "local.nk")}`);
    expect(drill.stderr).toContain("--services: not in edge-a's catalog: shop/absent");
    expect(drill.stderr).toContain(`leafmesh drill: warning: the agent of 'edge-a' refused the key in ${join(bundle, "local.nk")}`);
    // Without the keys, the agent's own server refuses the client.
    const refused = await runCli(["status", "--nats", agent.clientUrl, "--timeout", "2000"]);
    expect(refused.code).not.toBe(0);
    // The hubs' routes are TLS with the mesh's certificates: all three see each other.
    for (const hub of hubs) {
      const routez = (await (await fetch(`http://127.0.0.1:${hub.monitorPort}/routez`)).json()) as { num_routes: number };
      expect(routez.num_routes).toBe(2);
    }
    for (const hub of hubs) expect(hub.output()).not.toMatch(/TLS route handshake error|certificate/i);
    // Relay choice: each hub's load reaches the node through its own account (before: scored by RTT and loss only).
    const scores = await eventually(async () => {
      const result = await status();
      const upstreams = (JSON.parse(result.stdout) as { status: { relayChoice?: { scores: { server?: string; load?: unknown }[] } } }).status.relayChoice?.scores ?? [];
      return upstreams.length === 3 && upstreams.every((score) => score.load !== undefined) ? upstreams : undefined;
    }, 30_000, "each hub's relay load at the secured agent");
    expect(scores.map((score) => score.server).sort()).toEqual(["hub-1", "hub-2", "hub-3"]);
  });
});
