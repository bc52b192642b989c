/**
 * Edge sites with security on (issues 7 and 8), on real nats-server 2.9.10
 * processes: a secured hub, a site server configured from the site bundle
 * (`keys issue-site`, loadSiteSecurity, renderLeafConfig: what `leafmesh site
 * --keys` runs), two member agents behind it and a third agent at the hub.
 * The site checks the agents' own credentials, per-node isolation holds through
 * it, relayed frames between members never reach the hub, and a revocation
 * pushed at the hub reaches the site.
 */
import { chmodSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renderLeafConfig } from "../nats/render.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { initKeys } from "./key-store.ts";
import { issueNode, revokeNode } from "./node-credentials.ts";
import { issueSite } from "./site-store.ts";
import { pushAccountClaims } from "./push.ts";
import { connectRogueLeaf } from "../test/support/rogue-leaf.ts";
import { loadSiteSecurity } from "./site-security.ts";
import { openCatalogMirror } from "../services/controller/agent-controller.ts";
import type { Bus } from "../bus/bus.ts";
import { leafConnections, requireTools, startNatsServer, startSecuredHub, startSecuredLeaf, stopAllServers, type SecuredHub, type SecuredLeaf, type TestServer } from "../test/support/trust-servers.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";

const base = mkdtempSync(join(tmpdir(), "leafmesh-site-trust-"));
const keys = join(base, "keys");
const connections: NatsConnection[] = [];
let hub: SecuredHub;
let site: TestServer;
let siteLeafPort: number;
const agents: Record<string, SecuredLeaf> = {};
const clients: Record<string, NatsConnection> = {};
let publisher: NatsConnection;

afterAll(async () => {
  for (const connection of connections) await connection.close().catch(() => undefined);
  await stopAllServers();
  rmSync(base, { recursive: true, force: true });
});

async function hubMessages(): Promise<number> {
  const varz = (await (await fetch(`http://127.0.0.1:${hub.monitorPort}/varz`)).json()) as { in_msgs: number };
  return varz.in_msgs;
}

beforeAll(async () => {
  requireTools();
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b", "edge-c"]) await issueNode({ dir: keys, node });
  await issueSite({ dir: keys, site: "shop", members: ["edge-a", "edge-b"] });
  hub = await startSecuredHub({ keysDir: keys, dir: join(base, "hub") });
  siteLeafPort = await freePort();
  const siteDir = join(base, "site");
  site = await startNatsServer({
    name: "shop",
    dir: siteDir,
    loadAccountsAtStart: () => ({ storeDir: join(siteDir, "js"), accounts: loadSiteSecurity(join(keys, "sites", "shop"), { site: "shop", server: "shop", resolverDir: join(siteDir, "accounts") }).accounts }),
    config: (ports) => {
      // The bundle as copied to the site: sites/shop (not the whole keys directory).
      const security = loadSiteSecurity(join(keys, "sites", "shop"), { site: "shop", server: "shop", resolverDir: join(siteDir, "accounts") });
      return renderLeafConfig({
        serverName: "shop",
        domain: "shop",
        storeDir: join(siteDir, "js"),
        client: { host: "127.0.0.1", port: ports.client },
        monitor: { host: "127.0.0.1", port: ports.monitor },
        leaf: { host: "127.0.0.1", port: siteLeafPort },
        pingInterval: "1s",
        maxMemoryStore: 64 << 20,
        maxFileStore: 64 << 20,
        upstreams: [hub.leafUrl.replace("nats-leaf://", "tls://")],
        security: security.configFragment,
        leafSecurity: security.leafnodesFragment,
        remotes: security.remotes,
      });
    },
  });
  // mesh (as node 'shop'), edge-a, edge-b, SYS
  await eventually(async () => (await leafConnections(site)) >= 4, 20_000, "the site's four remotes to the hub").catch((error: Error) => {
    throw new Error(`${error.message}\n${site.log().slice(-3000)}`);
  });
  for (const node of ["edge-a", "edge-b"]) agents[node] = await startSecuredLeaf({ node, bundleDir: keys, hubLeafUrl: `tls://127.0.0.1:${siteLeafPort}`, dir: join(base, node) });
  agents["edge-c"] = await startSecuredLeaf({ node: "edge-c", bundleDir: keys, hubLeafUrl: hub.leafUrl.replace("nats-leaf://", "tls://"), dir: join(base, "edge-c") });
  for (const node of Object.keys(agents)) {
    clients[node] = await connect({ servers: agents[node].clientUrl, ...agents[node].security.clientConnectOptions });
    connections.push(clients[node]);
  }
  publisher = await connect({ servers: hub.clientUrl, ...hub.security.publisherConnectOptions });
  connections.push(publisher);
}, 90_000);

describe("a secured edge site", () => {
  it("serves the catalog to its agents, and carries their records, events and rpc to and from the hubs", async () => {
    const catalog = await new Kvm(publisher).create("mesh-catalog", { history: 1 });
    await catalog.put("svc.demo.web", "v1");
    // The site's own process (loopback credentials, mesh account) keeps the site's mirror.
    const siteSecurity = loadSiteSecurity(keys, { site: "shop", server: "shop", resolverDir: join(base, "unused") });
    const local = await connect({ servers: site.clientUrl, ...siteSecurity.clientConnectOptions });
    connections.push(local);
    const siteCatalog = await openCatalogMirror({ connection: local, node: "shop" } as Bus, { upstreamDomain: "hub" });
    await eventually(async () => (await siteCatalog.get("svc.demo.web"))?.string() === "v1", 30_000, "the site's mirror");
    // An agent behind the site mirrors from the site's domain.
    const agentCatalog = await openCatalogMirror({ connection: clients["edge-a"], node: "edge-a" } as Bus, { upstreamDomain: "shop" });
    await eventually(async () => (await agentCatalog.get("svc.demo.web"))?.string() === "v1", 30_000, "edge-a's mirror of the site's");
    // Its node record reaches the hub's mesh-nodes.
    const nodes = await new Kvm(publisher).create("mesh-nodes", { history: 1 });
    await (await new Kvm(jetstream(clients["edge-a"], { domain: "hub", checkAPI: false })).open("mesh-nodes")).put("edge-a", "record of edge-a");
    await eventually(async () => (await nodes.get("edge-a"))?.string() === "record of edge-a", 30_000, "edge-a's record at the hub");
    // The hub asks edge-a (status rpc) and hears its events.
    clients["edge-a"].subscribe("rpc.edge-a.status", { callback: (_error, message) => void message.respond("edge-a is fine") });
    const events: string[] = [];
    publisher.subscribe("mesh.>", { callback: (_error, message) => void events.push(message.subject) });
    await clients["edge-a"].flush();
    await publisher.flush();
    // Interest travels agent → site → hub; on a loaded machine that can take a while.
    const answer = await eventually(async () => (await publisher.request("rpc.edge-a.status", "", { timeout: 2_000 }).catch(() => undefined))?.string(), 30_000, "edge-a's answer");
    expect(answer).toBe("edge-a is fine");
    await eventually(async () => {
      clients["edge-a"].publish("mesh.edge-a.tunnel.path", "{}");
      await clients["edge-a"].flush();
      return events.includes("mesh.edge-a.tunnel.path");
    }, 30_000, "edge-a's event at the hub");
  });

  it("keeps relayed frames between two members on the site, delivered once, and relays to nodes elsewhere through the hub", async () => {
    const toA: string[] = [];
    const toC: string[] = [];
    clients["edge-a"].subscribe("relay.edge-a.>", { callback: (_error, message) => void toA.push(message.string()) });
    clients["edge-c"].subscribe("relay.edge-c.>", { callback: (_error, message) => void toC.push(message.string()) });
    await clients["edge-a"].flush();
    await clients["edge-c"].flush();
    // Interest travels site → hub → site: wait until a frame from edge-c arrives.
    await eventually(async () => {
      clients["edge-c"].publish("relay.edge-a.edge-c.probe", "probe");
      await clients["edge-c"].flush();
      return toA.includes("probe");
    }, 30_000, "a frame from edge-c to edge-a");
    // A marker after the probes: once it is in, every probe before it on that path is too.
    clients["edge-c"].publish("relay.edge-a.edge-c.probe", "probes done");
    await clients["edge-c"].flush();
    await eventually(() => toA.includes("probes done"), 30_000, "the end of the probes");
    toA.length = 0;
    const before = await hubMessages();
    for (let i = 0; i < 200; i++) clients["edge-b"].publish("relay.edge-a.edge-b.stream-1", `frame ${i}`);
    clients["edge-b"].publish("relay.edge-a.edge-b.stream-1", "end");
    await clients["edge-b"].flush();
    await eventually(() => toA.includes("end"), 30_000, "200 frames from edge-b at edge-a, then its end marker");
    expect(toA.slice(0, toA.indexOf("end"))).toEqual(Array.from({ length: 200 }, (_value, i) => `frame ${i}`)); // once each, in order
    // The hub's own traffic (pings, JetStream heartbeats, more on a loaded machine) goes on; 200 frames through it would add 200 at least.
    expect(await hubMessages()).toBeLessThan(before + 100);
    clients["edge-a"].publish("relay.edge-c.edge-a.stream-2", "from the site");
    await clients["edge-a"].flush();
    await eventually(() => toC.includes("from the site"), 30_000, "edge-a's frame at edge-c, through the hub").catch(async (error: Error) => {
      const leafz = async (port: number) => JSON.stringify(((await (await fetch(`http://127.0.0.1:${port}/leafz?subs=1`)).json()) as { leafs: { account: string; name: string; subscriptions_list?: string[] }[] }).leafs.map((leaf) => ({ account: leaf.account.slice(0, 6), name: leaf.name, subs: (leaf.subscriptions_list ?? []).filter((sub) => sub.startsWith("relay")) })));
      throw new Error(`${error.message}\nsite leafz: ${await leafz(site.monitorPort)}\nhub leafz: ${await leafz(hub.monitorPort)}\n${site.log().split("\n").filter((line) => /ERR|WRN|Leafnode|remote/.test(line)).slice(-30).join("\n")}`);
    });
  });

  it("holds a stolen member's credentials to its own account through the site", async () => {
    const seen: string[] = [];
    publisher.subscribe(">", { callback: (_error, message) => void seen.push(message.subject) });
    clients["edge-b"].subscribe("relay.edge-b.>", { callback: (_error, message) => void seen.push(`edge-b got ${message.subject}`) });
    await publisher.flush();
    await clients["edge-b"].flush();
    const bundle = join(keys, "nodes", "edge-a");
    const rogue = await connectRogueLeaf({ port: siteLeafPort, creds: join(bundle, "node.creds"), cert: join(bundle, "node.crt"), key: join(bundle, "node.key"), ca: join(bundle, "ca.crt") });
    rogue.subscribe("relay.edge-b.>");
    rogue.publish("mesh.edge-b.forged", "x");
    rogue.publish("relay.edge-b.edge-c.forged", "x");
    rogue.publish("$JS.hub.API.$KV.mesh-catalog.svc.demo.forged", "x");
    rogue.publish("$KV.mesh-catalog.svc.demo.forged", "x");
    rogue.publish("$KV.mesh-nodes.edge-b", "forged");
    // Markers the stolen node may send, on the same connection after the forgeries: when they arrive
    // (at the hub, and at edge-b), anything forged before them that got through would have too.
    rogue.publish("mesh.edge-a.marker", "x");
    rogue.publish("relay.edge-b.edge-a.marker", "x");
    clients["edge-c"].publish("relay.edge-b.edge-c.secret", "for edge-b only");
    await clients["edge-c"].flush();
    await eventually(() => seen.includes("edge-b got relay.edge-b.edge-c.secret"), 10_000, "edge-c's frame at edge-b");
    await eventually(() => seen.includes("mesh.edge-a.marker") && seen.includes("edge-b got relay.edge-b.edge-a.marker"), 10_000, "the stolen node's markers");
    expect(seen.filter((subject) => subject.includes("forged"))).toEqual([]);
    expect(rogue.received.filter((message) => message.subject.startsWith("relay.edge-b"))).toEqual([]);
    const catalog = await new Kvm(publisher).open("mesh-catalog");
    expect(await catalog.get("svc.demo.forged")).toBeNull();
    rogue.close();
  });

  it("cuts a revoked member off at the site within seconds, without restarting anything; the other member stays", async () => {
    const revoked = await revokeNode({ dir: keys, node: "edge-b" });
    const started = Date.now();
    await pushAccountClaims({ servers: [hub.clientUrl], connectOptions: hub.security.systemConnectOptions, jwts: [revoked.accountJwt] });
    await eventually(async () => (await leafConnections(agents["edge-b"])) === 0, 10_000, "edge-b's leaf to the site to close");
    expect(Date.now() - started).toBeLessThan(10_000);
    // edge-a goes on: the hub still reaches it through the site, and it kept its one leaf link.
    expect((await publisher.request("rpc.edge-a.status", "", { timeout: 5_000 })).string()).toBe("edge-a is fine");
    expect(await leafConnections(agents["edge-a"])).toBe(1);
    expect(site.log()).toMatch(/revoked/i);
  });

  it("refuses a site key with loose permissions and a server the bundle was not issued for", () => {
    const bundle = join(keys, "sites", "shop");
    expect(() => loadSiteSecurity(bundle, { site: "shop", server: "shop-9", resolverDir: join(base, "unused") })).toThrow("server 'shop-9' is not one of site 'shop''s servers (shop)");
    expect(() => loadSiteSecurity(bundle, { site: "mall", server: "shop", resolverDir: join(base, "unused") })).toThrow("is site 'shop', not 'mall'");
    chmodSync(join(bundle, "site.key"), 0o644);
    try {
      expect(() => loadSiteSecurity(bundle, { site: "shop", server: "shop", resolverDir: join(base, "unused") })).toThrow(/site\.key/);
    } finally {
      chmodSync(join(bundle, "site.key"), 0o600);
    }
    expect(readFileSync(join(bundle, "site.json"), "utf8")).not.toMatch(/(?<![A-Z2-7])S[AUO][A-Z2-7]{56}(?![A-Z2-7])/); // no seed (SA…, SU…, SO…) in the public description
  });
});
