/**
 * The enrolment client certificate over a mesh's years, with real processes. Every join token carries the one client
 * certificate of the enrolment CA (enrol/client.crt), made by the first `keys token` or `hub --enrol` for 825 days,
 * and nothing made it again: 825 days after enrolment was set up, every new token carried an ended certificate, the
 * hubs' client port refused it at the TLS handshake, and no node could join. Now `keys token` issues it again when it
 * would end before the new token does (with a day to spare). The years are handed in: the certificate is replaced by
 * one of the same enrolment CA that ended yesterday.
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHubProcess, stopAllProcesses, tempDir, type HubProcess, runCliOk } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { joinMesh } from "./join.ts";
import { initKeys, readKeyState } from "./key-store.ts";
import { issueCertificate } from "./tls.ts";
import { decodeJoinToken, encodeJoinToken } from "./tokens.ts";
import { silentLogger } from "../lib/log.ts";

let base: string;
let keys: string;
let hub: HubProcess;

beforeAll(async () => {
  requireTools();
  base = tempDir("leafmesh-enrol-cert-");
  keys = join(base, "keys");
  // As `leafmesh keys init` makes them (the same function, without a CLI process).
  await initKeys({ dir: keys });
  hub = await startHubProcess({ name: "hub-1", keys, extraArgs: ["--enrol"] });
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
});

describe("a token made after the enrolment client certificate ended", () => {
  it("carries a new one, and a node joins with it", async () => {
    const enrol = join(keys, "enrol");
    // 825 days later: the certificate every token carries ended yesterday.
    await issueCertificate({ caCertFile: join(enrol, "ca.crt"), caKeyFile: join(enrol, "ca.key"), certFile: join(enrol, "client.crt"), keyFile: join(enrol, "client.key"), commonName: "leafmesh enrolment", hosts: ["enrolment.invalid"], days: -1 });
    const ended = readFileSync(join(enrol, "client.crt"), "utf8");
    expect(Date.parse(new X509Certificate(ended).validTo)).toBeLessThan(Date.now());

    const token = (await runCliOk("keys", "token", "--dir", keys, "--url", `tls://127.0.0.1:${new URL(hub.clientUrl).port}`, "--ttl", "2h")).trim();
    const carried = new X509Certificate((JSON.parse(Buffer.from(token.slice("lmjoin1.".length), "base64url").toString()) as { cert: string }).cert);
    expect(Date.parse(carried.validTo)).toBeGreaterThan(Date.now() + 2 * 3_600_000);
    expect(carried.verify(new X509Certificate(readFileSync(join(enrol, "ca.crt"))).publicKey)).toBe(true);

    await joinMesh({ token, node: "edge-late", bundleDir: join(base, "edge-late"), log: silentLogger(), retryForMs: 20_000 });
    expect(readKeyState(keys).nodes["edge-late"]?.user).toBeDefined();
  }, 120_000);

  it("a token that carries an ended one (made by a leafmesh that never issued it again) is refused by the node, saying so", async () => {
    // Before, the hub's TLS alert was taken for the hub's certificate: "the hub's certificate is not of the token's mesh CA".
    const token = (await runCliOk("keys", "token", "--dir", keys, "--url", `tls://127.0.0.1:${new URL(hub.clientUrl).port}`)).trim();
    const content = decodeJoinToken(token);
    const old = join(base, "old-client");
    await issueCertificate({ caCertFile: join(keys, "enrol", "ca.crt"), caKeyFile: join(keys, "enrol", "ca.key"), certFile: `${old}.crt`, keyFile: `${old}.key`, commonName: "leafmesh enrolment", hosts: ["enrolment.invalid"], days: -1 });
    const stale = encodeJoinToken({ ...content, cert: readFileSync(`${old}.crt`, "utf8"), key: readFileSync(`${old}.key`, "utf8") });
    await expect(joinMesh({ token: stale, node: "edge-stale", bundleDir: join(base, "edge-stale"), log: silentLogger(), retryForMs: 5_000 })).rejects.toThrow(
      /carries an enrolment client certificate that ended at \S+ by this machine's clock.*Make a new token with 'leafmesh keys token'/,
    );
  }, 60_000);
});
