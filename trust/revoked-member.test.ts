/**
 * A node that joined with a token, a member of edge site 'shop', revoked while it runs; real processes on loopback: an
 * enrolling hub, a `leafmesh site` server, the agent behind it. Before: the site logged "<address> - lid:N -
 * authentication error" with no node; the agent was told "the hub refused this node's login" when its site had; and its
 * certificate renewal, whose requests a revoked node's shut-out leaf never carries, asked again every minute for ever.
 * Now the site names the node and says it is revoked, the agent names its site and the address, and the renewal ends
 * at once, said once with the way back.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { rpcRequest } from "../bus/bus.ts";
import { rpc } from "../bus/rpc.ts";
import { eventually } from "../test/support/ports.ts";
import { runCliOk, siteClusterPorts, startAgentProcess, startHubProcess, startSiteCluster, stopAllProcesses, tempDir, type AgentProcess, type HubProcess, type SiteProcess } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys } from "./key-store.ts";

let keys: string;
let hub: HubProcess;
let hubClient: NatsConnection;
let site: SiteProcess;
let siteLeafPort: number;
let siteMonitorPort: number;
let agent: AgentProcess;
const hubTls = () => hub.clientUrl.replace("nats://", "tls://");
/** edge-j's logins the site refused, from its server's closed connections (its log says a repeated line once a minute). */
const refusedAtSite = async () => {
  const connz = (await (await fetch(`http://127.0.0.1:${siteMonitorPort}/connz?state=closed&limit=1000`)).json()) as { connections: { name?: string; reason?: string }[] };
  return connz.connections.filter((closed) => closed.name === "edge-j" && closed.reason === "Authentication Failure").length;
};

beforeAll(async () => {
  requireTools();
  const base = tempDir("leafmesh-revoked-member-");
  keys = join(base, "keys");
  // As `leafmesh keys init` makes them (the same function, without a CLI process).
  await initKeys({ dir: keys });
  hub = await startHubProcess({ name: "hub-1", keys, extraArgs: ["--enrol"] });
  hubClient = await hub.connection();
  // edge-j joins at the hub's client port (as the token says) and attaches to the site, made one of its members.
  const sitePorts = await siteClusterPorts(1);
  siteLeafPort = sitePorts[0].leaf;
  siteMonitorPort = sitePorts[0].monitor;
  const tokenFile = join(base, "token");
  writeFileSync(tokenFile, await runCliOk("keys", "token", "--dir", keys, "--url", hubTls(), "--uses", "1", "--site", "shop"), { mode: 0o600 });
  agent = await startAgentProcess({ node: "edge-j", hubs: [`tls://127.0.0.1:${siteLeafPort}`], joinFile: tokenFile, extraArgs: ["--mdns", "off", "--upstream-domain", "shop"] });
  await runCliOk("keys", "issue-site", "--dir", keys, "--site", "shop", "--members", "edge-j", "--servers", "shop-1", "--hosts", "127.0.0.1,localhost", "--hub", hubTls());
  [site] = await startSiteCluster({ site: "shop", servers: ["shop-1"], upstreams: [hub.leafUrl], ports: sitePorts, keys });
  await eventually(async () => (await rpcRequest(hubClient, "edge-j", rpc.status, undefined, 3_000).catch(() => undefined))?.node === "edge-j", 30_000, "edge-j answering the hub through its site");
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
});

describe("a member of a site, revoked while it runs", () => {
  it("is named as revoked in the site's log, once a minute, told that its site refused it, and its renewal ends, said once", async () => {
    // The site names the member whose leaf link it holds, from the account the leaf logged in with (preloaded from the
    // site bundle: before, only an account pushed since was named, and a member's link was an address).
    await eventually(() => /"leaf link up: node edge-j \(127\.0\.0\.1:\d+\)"/.test(site.output()), 10_000, "the site naming edge-j's leaf link");
    const siteFrom = site.output().length;
    const agentFrom = agent.output().length;
    await runCliOk("keys", "revoke", "--dir", keys, "--node", "edge-j", "--hub", hubTls());
    const siteSaid = () => site.output().slice(siteFrom);
    const agentSaid = () => agent.output().slice(agentFrom);

    // The site names the node and why; before, "127.0.0.1:52948 - lid:31 - authentication error" and nothing else.
    await eventually(() => /refused the login of node 'edge-j' \(a leaf from 127\.0\.0\.1:\d+\): it is revoked: its credentials \(user U\w+\) were revoked at \S+ \(keys revoke, pushed at the hubs\)/.test(siteSaid()), 20_000, "the site naming edge-j as revoked");

    // The site's fabric names the node whose leaf link it lost (2.9.10's /leafz names none; its account does); before,
    // "leaf link down" with the leaf's address alone.
    await eventually(() => /"leaf link down: node edge-j \(127\.0\.0\.1:\d+\)"/.test(siteSaid()), 20_000, "the site naming edge-j's leaf link down");

    // The agent is told that its site refused it, and where; before, "the hub refused this node's login".
    const refusedBy = `its site 'shop' refused this node's login at 127.0.0.1:${siteLeafPort}`;
    await eventually(() => agentSaid().includes(`${refusedBy}: credentials revoked`), 20_000, "edge-j told that its site refused it");
    expect(agentSaid()).not.toContain("the hub refused this node's login");
    expect(agentSaid()).not.toContain("start it with its new bundle");

    // Its renewal ends at once, said once, with the way back; before, it asked every minute for as long as it ran.
    const ended = (text: string) => text.split("\n").filter((line) => line.includes("this node is revoked:"));
    await eventually(() => ended(agentSaid()).length > 0, 10_000, "the renewal's end");
    expect(ended(agentSaid())[0]).toMatch(new RegExp(`this node is revoked: ${refusedBy.replaceAll(".", "\\.")} as revoked\\. Its certificate \\(it ends \\S+\\) is not renewed, and not asked for again\\. .*remove ${join(agent.dataDir, "keys").replaceAll(".", "\\.")} and start the agent again with a new join token`));
    // Refused again and again meanwhile (a login a second): still said once, and the site's line once a minute.
    await eventually(async () => (await refusedAtSite()) >= 3 || undefined, 15_000, "three refused logins of edge-j at the site");
    expect(siteSaid().match(/refused the login of node 'edge-j'/g)).toHaveLength(1);
    expect(ended(agentSaid())).toHaveLength(1);
    expect(agentSaid()).not.toMatch(/renewing this node's certificate/);
    expect(agent.child.exitCode).toBeNull();
    expect(site.child.exitCode).toBeNull();
  }, 60_000);

  it("started again, knows at once that it is revoked, from its data directory: its renewal ends at start", async () => {
    // Every login after the first refusal is a bare "Authorization Violation": before, the restarted agent heard nothing
    // that said revoked, and its renewal asked again every minute for as long as it ran.
    expect(JSON.parse(readFileSync(join(agent.dataDir, "revoked.json"), "utf8"))).toMatchObject({ user: expect.stringMatching(/^U[A-Z2-7]{55}$/), why: expect.stringContaining("as revoked") });
    await agent.stop();
    agent = await agent.restart();
    const said = () => agent.output();
    await eventually(() => said().includes("this node is revoked:"), 15_000, "the restarted agent to know it is revoked");
    expect(said()).toMatch(/this node is revoked: its site 'shop' refused this node's login at 127\.0\.0\.1:\d+ as revoked \(told at \S+, before this agent started again; kept in \S+revoked\.json\)\. Its certificate/);
    expect(said()).not.toMatch(/renewing this node's certificate/);
    expect(said().split("\n").filter((line) => line.includes("this node is revoked:"))).toHaveLength(1);
  }, 60_000);
});
