/**
 * A node that joined with a token renews its certificate by itself, with real processes: a `leafmesh hub
 * --enrol --node-cert-validity 150s`, an agent that joins with `--join-file`, the hub away when the renewal
 * is due (the agent asks again with backoff and says so each time), the hub back, the certificate renewed
 * through the node's own leaf link and taken by the agent's restart in place, and the node answering the
 * hub again. Then the node is revoked: the enrolling hub refuses to renew either of its certificates, and
 * both are on the revocation list. Before, a joined node's certificate simply ended (825 days after its
 * join) and nothing renewed it: a joined node has no bundle anyone can issue again.
 */
import { X509Certificate } from "node:crypto";
import { createPrivateKey, sign } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { rpcRequest } from "../bus/bus.ts";
import { rpc } from "../bus/rpc.ts";
import { Kvm } from "@nats-io/kv";
import { buckets, certificateRenewalSubject } from "../bus/subjects.ts";
import { eventually } from "../test/support/ports.ts";
import { restartedInPlaceAt } from "../test/support/log-lines.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess, runCliOk } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys, readKeyState } from "./key-store.ts";
import { endedNote, renewalTime, unansweredReason } from "./renewal.ts";
import { renewNodeCertificate, renewalSigningText } from "./renewal-service.ts";
import { certificateFingerprint } from "./revocation-list.ts";
import { issueCertificate, makeCertificateRequest } from "./tls.ts";

const week = 7 * 86_400_000;

describe("when a certificate is renewed", () => {
  it("at two thirds of its life from its issue (a week after its start), give or take a twentieth", () => {
    const start = Date.parse("2026-12-01T00:00:00Z");
    const issued = start + week;
    const life = 90 * 86_400_000;
    expect(renewalTime(start, issued + life, 0.5)).toBe(issued + (life * 2) / 3);
    expect(renewalTime(start, issued + life, 0)).toBe(issued + (life * 2) / 3 - life / 20);
    expect(Math.abs(renewalTime(start, issued + life, 0.75) - (issued + (life * 2) / 3 + life / 40))).toBeLessThan(1);
    // A two-minute certificate: 80 s after its issue, not a week of backdating later.
    expect(renewalTime(start, issued + 120_000, 0.5)).toBe(issued + 80_000);
  });
});

describe("an unanswered renewal request", () => {
  it("is said as what it waits for: the node's leaf link, its site's uplink, or an enrolling hub", () => {
    const noResponders = "no responders: 'mesh.edge-j.trust.renew-certificate'";
    expect(unansweredReason(noResponders, "none")).toMatch(/^this node's leaf link is down \(its upstream not reached, or refusing its login/);
    expect(unansweredReason(noResponders, "site")).toMatch(/^this node's site is cut off from the cloud: the request waits for the site's link to the hubs: no responders/);
    expect(unansweredReason(noResponders, "cloud")).toMatch(/^no hub serves certificate renewal \(the enrolling hub, hub --enrol, is down or not reached\)/);
    expect(unansweredReason("TIMEOUT", undefined)).toBe("the request got no answer: TIMEOUT");
    expect(unansweredReason("TIMEOUT", "cloud", "shop")).toMatch(/^no hub answered through site 'shop', which reaches the cloud: .*or this node is not one of the site's members/);
  });

  it("after the certificate ended, says it is renewed while the leaf link holds, and to join again only when it does not", () => {
    expect(endedNote("site")).toContain("while this leaf link holds, it is renewed as soon as a hub answers");
    expect(endedNote("site")).not.toContain("join it again");
    expect(endedNote("none")).toContain("join it again with a token");
  });
});

let base: string;
let keys: string;
let hub: HubProcess;
let hubClient: NatsConnection;
let agent: AgentProcess;

beforeAll(async () => {
  requireTools();
  base = tempDir("leafmesh-renewal-");
  keys = join(base, "keys");
  // As `leafmesh keys init` makes them (the same function, without a CLI process).
  await initKeys({ dir: keys });
  hub = await startHubProcess({ name: "hub-1", keys, extraArgs: ["--enrol", "--node-cert-validity", "150s"] });
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
});

describe("a joined node's certificate", () => {
  let firstPem: string;

  it("is renewed before it ends, asked again while the hub is away, and taken by a restart in place", async () => {
    const token = (await runCliOk("keys", "token", "--dir", keys, "--url", `tls://127.0.0.1:${new URL(hub.clientUrl).port}`, "--uses", "1")).trim();
    const tokenFile = join(base, "token");
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    agent = await startAgentProcess({ node: "edge-j", hubs: [hub.leafUrl.replace("nats://", "tls://")], joinFile: tokenFile, extraArgs: ["--mdns", "off"] });
    const certFile = join(agent.dataDir, "keys", "node.crt");
    firstPem = readFileSync(certFile, "utf8");
    const first = new X509Certificate(firstPem);
    expect(Date.parse(first.validTo) - Date.now()).toBeLessThanOrEqual(150_000);
    await eventually(() => /this node's certificate is renewed at \S+, two thirds of its life/.test(agent.output()), 10_000, "the renewal scheduled");

    // The hub goes away before the renewal is due (~100 s after the join): the agent asks, is not answered, and says when it asks again.
    await hub.stop();
    await eventually(() => /this node's certificate was not renewed: .*; asking again in \d+ s/.test(agent.output()), 130_000, "a renewal attempt while the hub is away");
    expect(readFileSync(certFile, "utf8")).toBe(firstPem);
    hub = await hub.restart();
    hubClient = await hub.connection();

    await eventually(() => agent.output().includes("this node's certificate was renewed"), 45_000, "the renewal once the hub is back");
    // Each attempt said, with its wait (the backoff grows: 2 s, 4 s, ...).
    expect(agent.output()).toMatch(/renewing this node's certificate .*asking the enrolling hub/);
    const renewed = new X509Certificate(readFileSync(certFile, "utf8"));
    expect(Date.parse(renewed.validTo)).toBeGreaterThan(Date.parse(first.validTo));
    expect(renewed.subject).toBe("CN=edge-j");
    expect(renewed.checkPrivateKey(createPrivateKey(readFileSync(join(agent.dataDir, "keys", "node.key"))))).toBe(true);
    expect(hub.output()).toContain("renewed the certificate of node 'edge-j'");
    // Counted where the operator looks: the enrolment row of the hub's status.
    expect((await hub.view()).status.actors.find((actor) => actor.name === "enrolment")?.detail).toMatchObject({ "renewal renewed": 1 });
    const entry = readKeyState(keys).nodes["edge-j"];
    expect(entry.certificate).toBe(certificateFingerprint(renewed.toString()));
    expect(entry.renewedFrom).toEqual([{ certificate: certificateFingerprint(firstPem), ends: new Date(first.validTo).toISOString() }]);

    // Taken as any bundle put in place: the agent starts again in place, and the hub reaches it with its new certificate.
    await eventually(() => restartedInPlaceAt(agent) !== undefined, 20_000, "the agent's restart in place");
    await eventually(async () => (await rpcRequest(hubClient, "edge-j", rpc.status, undefined, 3_000)).node === "edge-j", 30_000, "edge-j answering the hub after its renewal");
  }, 300_000);

  it("is answered only on the node's own inbox: a reply subject the node chose elsewhere is not written by the hub", async () => {
    // A valid request, as the node itself sends it (through its own nats-server), naming a catalog key as its reply
    // subject: the hub answers as its user of the mesh account, which may write the catalog.
    const bundle = join(agent.dataDir, "keys");
    const cert = readFileSync(join(bundle, "node.crt"), "utf8");
    const csr = await makeCertificateRequest({ keyFile: join(bundle, "node.key"), commonName: "edge-j", keepKey: true });
    const at = Date.now();
    const signature = sign("sha256", renewalSigningText("edge-j", { csr, at }), createPrivateKey(readFileSync(join(bundle, "node.key")))).toString("base64");
    const local = await agent.connection();
    local.publish(certificateRenewalSubject("edge-j"), JSON.stringify({ cert, csr, at, signature }), { reply: `$KV.${buckets.catalog}.forged-by-renewal` });
    await local.flush();
    await eventually(() => /certificate renewal refused: node .edge-j. asked for the answer on '\$KV\.mesh-catalog\.forged-by-renewal', not under its inbox/.test(hub.output()), 10_000, "the hub's refusal");
    const catalog = await new Kvm(hubClient).open(buckets.catalog);
    expect(await catalog.get("forged-by-renewal")).toBeNull();
    // Nothing was signed for it either.
    expect(readKeyState(keys).nodes["edge-j"].certificate).toBe(certificateFingerprint(cert));
  }, 60_000);

  it("is not renewed for a revoked node, with either certificate, and those not yet ended are revoked", async () => {
    const bundle = join(agent.dataDir, "keys");
    const current = readFileSync(join(bundle, "node.crt"), "utf8");
    const request = async (cert: string, keyFile = join(bundle, "node.key")) => {
      const csr = await makeCertificateRequest({ keyFile, commonName: "edge-j", keepKey: true });
      const at = Date.now();
      const signature = sign("sha256", renewalSigningText("edge-j", { csr, at }), createPrivateKey(readFileSync(keyFile))).toString("base64");
      return renewNodeCertificate({ dir: keys, node: "edge-j", body: { cert, csr, at, signature }, certificateDays: 1 });
    };
    // The certificate the renewal replaced, asked with again (the answer was lost on its way): the current one again,
    // nothing newly signed; a node left with an identity it could never renew would be cut off when it ends.
    expect(await request(firstPem)).toEqual({ ok: true, cert: current });
    expect(readKeyState(keys).nodes["edge-j"].certificate).toBe(certificateFingerprint(current));
    // A certificate of the mesh CA for this name but another key (never this node's current one): refused.
    const other = join(base, "other-edge-j");
    await issueCertificate({ caCertFile: join(keys, "ca", "ca.crt"), caKeyFile: join(keys, "ca", "ca.key"), certFile: `${other}.crt`, keyFile: `${other}.key`, commonName: "edge-j", hosts: ["edge-j"] });
    expect(await request(readFileSync(`${other}.crt`, "utf8"), `${other}.key`)).toMatchObject({ ok: false, code: "not-current" });
    // Another node's name with this one too.
    const csr = await makeCertificateRequest({ keyFile: join(bundle, "node.key"), commonName: "edge-j", keepKey: true });
    const at = Date.now();
    const signature = sign("sha256", renewalSigningText("edge-x", { csr, at }), createPrivateKey(readFileSync(join(bundle, "node.key")))).toString("base64");
    expect(await renewNodeCertificate({ dir: keys, node: "edge-x", body: { cert: current, csr, at, signature }, certificateDays: 1 })).toMatchObject({ ok: false });

    const revokedAt = Date.now();
    await runCliOk("keys", "revoke", "--dir", keys, "--node", "edge-j", "--hub", `tls://127.0.0.1:${new URL(hub.clientUrl).port}`);
    expect(await request(current)).toMatchObject({ ok: false, code: "revoked" });
    expect(await request(firstPem)).toMatchObject({ ok: false });
    // The replaced certificate goes on the list while it is still valid (a 150 s one may have ended by now on a
    // loaded machine: then it stays off, as the list only grows).
    const revoked = (readKeyState(keys).revokedCertificates ?? []).map((entry) => entry.certificate);
    expect(revoked).toContain(certificateFingerprint(current));
    const firstEnded = Date.parse(new X509Certificate(firstPem).validTo) <= revokedAt;
    expect(revoked.includes(certificateFingerprint(firstPem)), `the replaced certificate ${firstEnded ? "had ended" : "was still valid"} at the revocation`).toBe(!firstEnded);
    expect(readFileSync(join(bundle, "node.crt"), "utf8")).toBe(current);
  }, 60_000);
});
