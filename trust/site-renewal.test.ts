/**
 * A node that joined with a token renews its certificate through an edge site, with real processes: an enrolling
 * hub (`hub --enrol --node-cert-validity 60s`) in a network namespace of its own, so that the site's uplink can be
 * cut for real (a proxy on loopback cannot cut it: the hub's INFO names its own leaf address, and the site dials
 * that straight after a cut), a `leafmesh site` server and an agent behind it on this machine's loopback.
 *
 * The renewal falls due while the uplink is cut, and the cut outlasts the certificate: the agent asks again with
 * backoff, says that its site is cut off from the cloud (before, "no hub serves certificate renewal (the enrolling hub
 * is down or not reached)") and, once the certificate ended, that it is renewed while its link to the site holds
 * (before: "join it again with a token"); it is asked again as soon as the site reaches the cloud, renewed without a
 * restart, and its new leaf link to the site presents the new certificate. A node that joined with a token for the
 * site but was never made one of its members (the site passes on only its members' traffic) is told that this may be
 * why no hub answers; before, "no hub serves certificate renewal" or a bare timeout.
 * A stolen node's credentials reach no renewal of another name through the site; a revoked node's login is refused
 * at the site, its renewal ends (said once: before, it asked every minute, saying its leaf link was down), and the hub
 * refuses to renew it even when asked with the site's own user in the node's account.
 */
import { createPrivateKey, sign, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { rpcRequest } from "../bus/bus.ts";
import { rpc } from "../bus/rpc.ts";
import { certificateRenewalSubject } from "../bus/subjects.ts";
import { createLab, hostNamespace, runChecked, type Lab } from "../lab/netns.ts";
import { restartedInPlaceAt } from "../test/support/log-lines.ts";
import { eventually } from "../test/support/ports.ts";
import { connectRogueLeaf } from "../test/support/rogue-leaf.ts";
import { launch, runCliOk, siteClusterPorts, startAgentProcess, startSiteCluster, stopAllProcesses, tempDir, type AgentProcess, type LeafmeshProcess, type SiteProcess } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys } from "./key-store.ts";
import { renewalSigningText } from "./renewal-service.ts";
import { makeCertificateRequest } from "./tls.ts";

// 198.18.190.0/30: the site's uplink, the hub's namespace on one end, this machine on the other.
const hubAddress = "198.18.190.1";
const hostAddress = "198.18.190.2";
let lab: Lab;
let base: string;
let keys: string;
let hub: LeafmeshProcess;
let hubClient: NatsConnection;
let site: SiteProcess;
let siteLeafPort: number;
let agent: AgentProcess;
/** Joined with a token for site shop, but never made one of its members. */
let stranger: AgentProcess;
const uplink = (state: "up" | "down") => runChecked(["ip", "link", "set", "dev", `${lab.prefix}uplink`, state]);
const renewalQueue = "leafmesh-renew";
const enrolmentRow = async () => (await hub.view()).status.actors.find((actor) => actor.name === "enrolment")?.detail ?? {};

/** A renewal request as edge-j's agent makes it: its certificate, a request for its key, signed with its key. */
async function renewalRequest(bundle: string, node = "edge-j"): Promise<string> {
  const keyFile = join(bundle, "node.key");
  const csr = await makeCertificateRequest({ keyFile, commonName: node, keepKey: true });
  const at = Date.now();
  const signature = sign("sha256", renewalSigningText(node, { csr, at }), createPrivateKey(readFileSync(keyFile))).toString("base64");
  return JSON.stringify({ cert: readFileSync(join(bundle, "node.crt"), "utf8"), csr, at, signature });
}

beforeAll(async () => {
  requireTools();
  lab = await createLab({ prefix: "lmrn-" });
  const hubNamespace = await lab.namespace("hub");
  await lab.veth({ a: hubNamespace, b: hostNamespace, nameA: "uplink", nameB: "uplink", addressA: `${hubAddress}/30`, addressB: `${hostAddress}/30` });
  base = tempDir("leafmesh-site-renewal-");
  keys = join(base, "keys");
  await initKeys({ dir: keys, hubHosts: ["localhost", "127.0.0.1", hubAddress] });
  // Wildcard listen addresses: the enrolling hub reaches its own client port on loopback (its enrolment user may connect from there only).
  const hubData = tempDir("leafmesh-hub-1-");
  const hubArgs = ["hub", "--name", "hub-1", "--data", hubData, "--keys", keys, "--listen", "0.0.0.0:4222", "--leaf-listen", "0.0.0.0:7422", "--monitor-listen", "0.0.0.0:8222", "--metrics-listen", "off"];
  hub = launch("hub-1", [...hubArgs, "--enrol", "--node-cert-validity", "60s"], `nats://${hubAddress}:4222`, hubData, hubNamespace, undefined, { keys });
  await eventually(() => hub.view(), 45_000, "the hub");
  hubClient = await hub.connection();

  // edge-j joins (at the hub's client port, as the token says), then is made a member of site shop, whose server starts.
  const sitePorts = await siteClusterPorts(1);
  siteLeafPort = sitePorts[0].leaf;
  const tokenFile = join(base, "token");
  writeFileSync(tokenFile, await runCliOk("keys", "token", "--dir", keys, "--url", `tls://${hubAddress}:4222`, "--uses", "2", "--site", "shop"), { mode: 0o600 });
  const joinBehindSite = (node: string) => startAgentProcess({ node, hubs: [`tls://127.0.0.1:${siteLeafPort}`], joinFile: tokenFile, extraArgs: ["--mdns", "off", "--upstream-domain", "shop"] });
  [agent, stranger] = await Promise.all([joinBehindSite("edge-j"), joinBehindSite("edge-m")]);
  for (const joined of [agent, stranger]) await eventually(() => joined.output().includes(`node '${joined.name}' joined the mesh`), 30_000, `${joined.name}'s join`);
  await runCliOk("keys", "issue-site", "--dir", keys, "--site", "shop", "--members", "edge-j", "--servers", "shop-1", "--hosts", "127.0.0.1,localhost", "--hub", `tls://${hubAddress}:4222`);
  [site] = await startSiteCluster({ site: "shop", servers: ["shop-1"], upstreams: [`nats://${hubAddress}:7422`], ports: sitePorts, keys });
  await eventually(async () => (await rpcRequest(hubClient, "edge-j", rpc.status, undefined, 3_000)).node === "edge-j", 30_000, "edge-j answering the hub through its site");
}, 180_000);

afterAll(async () => {
  await stopAllProcesses();
  await lab?.teardown();
}, 60_000);

describe.sequential("a joined node behind an edge site", () => {
  it("renews its certificate through the site after a cut of the site's uplink that outlasts it, saying what it waits for", async () => {
    const certFile = join(agent.dataDir, "keys", "node.crt");
    const firstPem = readFileSync(certFile, "utf8");
    const first = new X509Certificate(firstPem);
    // Cut before the renewal is due (~40 s after the join); the site serves its node on and notices the cut within ~30 s.
    await uplink("down");
    try {
      await eventually(() => /this node's certificate was not renewed: this node's site is cut off from the cloud: the request waits for the site's link to the hubs: .*; asking again in \d+ s/.test(agent.output()), 75_000, "a renewal attempt said as waiting for the site's uplink");
      // The cut outlasts the certificate (60 s): the node's link to its site holds, and it is told so, not to join again.
      await eventually(() => /not renewed: this node's site is cut off .*\(it has ended: peers refuse this node's tunnel, .*while this leaf link holds, it is renewed as soon as a hub answers\)/.test(agent.output()), 60_000, "an attempt after the certificate ended");
      expect(readFileSync(certFile, "utf8")).toBe(firstPem);
      expect(Date.now()).toBeGreaterThan(Date.parse(first.validTo));
    } finally {
      await uplink("up");
    }

    // Asked again once the site reaches the cloud, not after the rest of its backoff (by then up to a minute).
    await eventually(() => agent.output().includes("the upstream reaches the cloud again: asking for this node's certificate in"), 30_000, "the renewal asked again when the uplink is back");
    await eventually(() => agent.output().includes("this node's certificate was renewed"), 45_000, "the renewal");
    const renewed = new X509Certificate(readFileSync(certFile, "utf8"));
    expect(Date.parse(renewed.validTo)).toBeGreaterThan(Date.now());
    expect(renewed.subject).toBe("CN=edge-j");
    expect(renewed.publicKey.equals(first.publicKey)).toBe(true);
    expect(hub.output()).toContain("renewed the certificate of node 'edge-j'");
    expect(agent.output()).not.toContain("join it again with a token");
    // Taken by a restart in place, whose new leaf link dials the site with it: the first has ended, so the site would refuse that one.
    const renewedAt = Date.now();
    await eventually(() => (restartedInPlaceAt(agent) ?? 0) > 0, 20_000, "the agent's restart in place with it");
    await eventually(async () => (await rpcRequest(hubClient, "edge-j", rpc.status, undefined, 3_000)).node === "edge-j" && /leaf link up/.test(agent.output().slice(agent.output().indexOf("keys replaced on disk"))), 30_000, "edge-j answering the hub again, through a new leaf link");
    expect(renewedAt).toBeGreaterThan(Date.parse(first.validTo));
    expect(agent.child.exitCode).toBeNull();
  }, 240_000);

  it("tells a node that joined for the site, but is not one of its members, why its renewal gets no answer", async () => {
    await eventually(() => /this node's certificate was not renewed: no hub answered through site 'shop', which reaches the cloud: .*or this node is not one of the site's members \(a site passes on only its members' traffic: leafmesh keys issue-site --site shop --members …/.test(stranger.output()), 60_000, "edge-m's renewal said as maybe not a member");
    expect(hub.output()).not.toContain("renewed the certificate of node 'edge-m'");
    expect(stranger.child.exitCode).toBeNull();
  }, 90_000);

  it("lets a stolen node's credentials reach no renewal of another name through the site, and answers its own only on its inbox", async () => {
    const bundle = join(agent.dataDir, "keys");
    const before = await enrolmentRow();
    const rogue = await connectRogueLeaf({ port: siteLeafPort, creds: join(bundle, "node.creds"), cert: join(bundle, "node.crt"), key: join(bundle, "node.key"), ca: join(bundle, "ca.crt") });
    try {
      rogue.subscribe("_INBOX_edge-k.>");
      rogue.subscribe("_INBOX_edge-j.marker");
      await rogue.flush();
      // For the hub's queue group: a server delivers a leaf's message to queue subscribers only of the groups it names.
      rogue.publishToQueues(certificateRenewalSubject("edge-k"), [renewalQueue], await renewalRequest(bundle, "edge-k"), "_INBOX_edge-k.stolen");
      rogue.publishToQueues(certificateRenewalSubject("edge-j"), [renewalQueue], await renewalRequest(bundle), "_INBOX_edge-k.stolen");
      // A marker after them on the same connection, which the hub answers: anything before it that got through would have too.
      rogue.publishToQueues(certificateRenewalSubject("edge-j"), [renewalQueue], "{}", "_INBOX_edge-j.marker");
      await eventually(() => rogue.received.find((message) => message.subject === "_INBOX_edge-j.marker"), 15_000, "the hub's answer to the marker");
      expect(JSON.parse(rogue.received.find((message) => message.subject === "_INBOX_edge-j.marker")!.payload)).toMatchObject({ ok: false, code: "malformed" });
      expect(rogue.received.filter((message) => message.subject.startsWith("_INBOX_edge-k."))).toEqual([]);
      const after = await enrolmentRow();
      // The edge-k request never reached the hub; the one for edge-j's answer elsewhere was refused unanswered.
      expect(after["renewal foreign-reply"]).toBe(((before["renewal foreign-reply"] as number) ?? 0) + 1);
      expect(after["renewal renewed"]).toBe(before["renewal renewed"]);
      expect(Object.keys(after).filter((key) => /unknown-node|not-current|bad-/.test(key))).toEqual([]);
    } finally {
      rogue.close();
    }
  }, 60_000);

  it("is refused once revoked: at the site's login, and by the hub when its site's own user in its account asks", async () => {
    await runCliOk("keys", "revoke", "--dir", keys, "--node", "edge-j", "--hub", `tls://${hubAddress}:4222`);
    await eventually(() => agent.output().includes(`its site 'shop' refused this node's login at 127.0.0.1:${siteLeafPort}`), 20_000, "the site refusing edge-j's login");
    // Its renewal, whose requests would reach no hub any more, ends at once, said once.
    await eventually(() => agent.output().includes(`this node is revoked: its site 'shop' refused this node's login at 127.0.0.1:${siteLeafPort} as revoked. Its certificate`), 20_000, "the renewal's end");

    // The site bundle's user in edge-j's account stays valid at the hubs until the site is issued again: with it (and
    // edge-j's stolen key), a request reaches the enrolling hub, which refuses it by its keys directory, and says so.
    const member = join(keys, "sites", "shop");
    const rogue = await connectRogueLeaf({ host: hubAddress, port: 7422, creds: join(member, "members", "edge-j.creds"), cert: join(member, "site.crt"), key: join(member, "site.key"), ca: join(member, "ca.crt") });
    try {
      rogue.subscribe("_INBOX_edge-j.>");
      await rogue.flush();
      rogue.publishToQueues(certificateRenewalSubject("edge-j"), [renewalQueue], await renewalRequest(join(agent.dataDir, "keys")), "_INBOX_edge-j.revoked");
      const answer = await eventually(() => rogue.received.find((message) => message.subject === "_INBOX_edge-j.revoked"), 15_000, "the hub's answer");
      expect(JSON.parse(answer.payload)).toMatchObject({ ok: false, code: "revoked" });
      expect(hub.output()).toMatch(/certificate renewal refused: node 'edge-j' is revoked/);
      expect((await enrolmentRow())["renewal revoked"]).toBe(1);
    } finally {
      rogue.close();
    }
    expect(agent.child.exitCode).toBeNull();
  }, 120_000);
});
