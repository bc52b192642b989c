/**
 * A joined node's certificate renewal (renewal.ts) once the node is known to be revoked, on a real nats-server with a
 * real answerer of the renewal subject: told revoked, it asks nothing when its renewal falls due, and says so once;
 * refused for another reason (here the hub's "internal"), it asks again after its backoff, as before. Before, a revoked
 * node's renewal, whose requests its shut-out leaf never carries, asked again every minute for as long as it ran.
 * (The renewal told by the agent's own leaf refusal, behind a site: trust/revoked-member.test.ts.)
 */
import { X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { certificateRenewalSubject } from "../bus/subjects.ts";
import { capturedLog } from "../test/support/log-lines.ts";
import { eventually } from "../test/support/ports.ts";
import { tempDir } from "../test/support/processes.ts";
import { requireTools, startNatsServer, stopAllServers } from "../test/support/trust-servers.ts";
import { renewalTime, startCertificateRenewal } from "./renewal.ts";
import { RevokedNotice } from "./revoked-notice.ts";
import { createCertificateAuthority, issueCertificate } from "./tls.ts";

let base: string;
let connection: NatsConnection;
/** Requests the answerer got, by node. */
const asked = new Map<string, number[]>();

/** A joined node's bundle (its certificate, key and the CA's certificate), as DATA/keys holds it. */
async function bundleOf(node: string): Promise<string> {
  const bundle = join(base, node);
  mkdirSync(bundle, { recursive: true });
  await issueCertificate({ caCertFile: join(base, "ca.crt"), caKeyFile: join(base, "ca.key"), certFile: join(bundle, "node.crt"), keyFile: join(bundle, "node.key"), commonName: node, hosts: [node] });
  return bundle;
}

/** A clock on which the renewal of `bundle`'s certificate (random 0.5: no jitter) falls due `inMs` from now. */
function clockDueIn(bundle: string, inMs: number): () => number {
  const certificate = new X509Certificate(readFileSync(join(bundle, "node.crt")));
  const shift = renewalTime(Date.parse(certificate.validFrom), Date.parse(certificate.validTo), 0.5) - Date.now() - inMs;
  return () => Date.now() + shift;
}

beforeAll(async () => {
  requireTools();
  base = tempDir("leafmesh-renewal-revoked-");
  await createCertificateAuthority({ certFile: join(base, "ca.crt"), keyFile: join(base, "ca.key"), name: "leafmesh test CA" });
  const server = await startNatsServer({ name: "renewal-revoked", dir: base, config: ({ client, monitor }) => `listen: "127.0.0.1:${client}"\nhttp: "127.0.0.1:${monitor}"\n` });
  connection = await connect({ servers: server.clientUrl });
  // The enrolling hub's place, answering as it does when it cannot renew for now.
  connection.subscribe(certificateRenewalSubject("*"), {
    callback: (_error, message) => {
      const node = message.subject.split(".")[1];
      asked.set(node, [...(asked.get(node) ?? []), Date.now()]);
      message.respond(JSON.stringify({ ok: false, code: "internal", reason: "the hub could not renew the certificate: openssl failed" }));
    },
  });
  await connection.flush();
}, 30_000);

afterAll(async () => {
  await connection?.close();
  await stopAllServers();
});

describe("a joined node's certificate renewal", () => {
  it("told that the node is revoked, asks nothing when it falls due and says so once; refused for another reason, asks again", async () => {
    const [revokedBundle, refusedBundle] = await Promise.all([bundleOf("edge-r"), bundleOf("edge-s")]);
    const revokedLog = capturedLog();
    const refusedLog = capturedLog();
    const notice = new RevokedNotice();
    const revokedRenewal = startCertificateRenewal({ connection, node: "edge-r", bundleDir: revokedBundle, log: revokedLog.log, now: clockDueIn(revokedBundle, 1_000), random: () => 0.5, revoked: notice });
    const refusedRenewal = startCertificateRenewal({ connection, node: "edge-s", bundleDir: refusedBundle, log: refusedLog.log, now: clockDueIn(refusedBundle, 1_000), random: () => 0.5, revoked: new RevokedNotice() });
    try {
      expect(revokedRenewal.dueAt).toBeDefined();
      notice.note("its site 'shop' refused this node's login at 127.0.0.1:7523 as revoked");
      expect(revokedRenewal.dueAt).toBeUndefined();
      // Told again (the revocation list says it too): nothing more is said.
      notice.note("this node's own certificate is on the mesh's revocation list (version 2)");

      // The other node asks at its due time, is refused for now, and asks again after its backoff (2 s).
      await eventually(() => (asked.get("edge-s")?.length ?? 0) >= 2, 8_000, "edge-s asking twice");
      const [first, second] = asked.get("edge-s")!;
      expect(second - first).toBeGreaterThanOrEqual(1_500);
      expect(refusedLog.lines.some((line) => /this node's certificate was not renewed: the enrolling hub refused it for now: .*\(internal\); asking again in 2 s/.test(String(line.msg)))).toBe(true);

      // By then edge-r's renewal was due too (at the same time): nothing was asked, and it was said once.
      expect(asked.get("edge-r")).toBeUndefined();
      const ended = revokedLog.lines.filter((line) => String(line.msg).startsWith("this node is revoked:"));
      expect(ended).toHaveLength(1);
      expect(ended[0].msg).toMatch(
        new RegExp(`^this node is revoked: its site 'shop' refused this node's login at 127\\.0\\.0\\.1:7523 as revoked\\. Its certificate \\(it ends \\S+\\) is not renewed, and not asked for again\\. .*remove ${revokedBundle} and start the agent again with a new join token`),
      );
      expect(ended[0].level).toBe(50);
      expect(revokedLog.lines.some((line) => /renewing this node's certificate/.test(String(line.msg)))).toBe(false);
    } finally {
      revokedRenewal.stop();
      refusedRenewal.stop();
    }
  }, 20_000);
});
