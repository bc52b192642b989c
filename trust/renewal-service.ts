/**
 * Certificate renewal, the enrolling hub's side: a node that joined with a token made its TLS key itself
 * and has no bundle anyone can issue again, so it asks before its certificate ends (trust/renewal.ts), and
 * the enrolling hub (`hub --enrol`, which holds the CA key) signs a new certificate for the same node.
 *
 * Who may ask, and why it is safe without an account change:
 *
 * - the request comes on `mesh.<node>.trust.renew-certificate`, which only node `<node>`'s account can
 *   publish into the mesh account (its stream export): a revoked node's leaf is closed by the hubs, so its
 *   request never arrives; the answer goes to `_INBOX_<node>.…`, which only that node's account imports;
 * - the request carries the node's current certificate and a signature by its key over the node name, the
 *   certificate request and the time: the certificate must be the one state.json names as the node's current
 *   one (not revoked, not replaced), and of the mesh CA. A site bundle holds a user in its members' accounts,
 *   but not their TLS keys: it cannot renew for them;
 * - the certificate request must ask for exactly `CN=<node>` (its extensions are never copied);
 * - the answer goes only to a reply subject under the node's inbox prefix: the hub answers as its user of the
 *   mesh account, and a reply subject is the asker's to choose.
 *
 * The old certificate's fingerprint and end are kept in state.json (`renewedFrom`) until it has ended: `keys
 * revoke` puts it on the revocation list with the current one.
 *
 * ```ts
 * const service = startRenewalService({ connection, dir, certificateDays: 825, log });   // in the enrolling hub
 * ```
 */
import { verify, X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as z from "../lib/schema/index.ts";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { certificateRenewalSubjects, nodeInboxPrefix, nodeNamePattern } from "../bus/subjects.ts";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import { withKeysLock } from "./keys-lock.ts";
import { nodeBundleDir, readKeyState, writeKeyState } from "./key-store.ts";
import { certificateFingerprint } from "./revocation-list.ts";
import { writeFileWhole } from "./secret-files.ts";
import { checkCertificateRequest, signCertificateRequest } from "./tls.ts";
import { requestMaxAgeMs } from "./enrolment.ts";

export const renewalRequestSchema = z.object({
  /** The node's current certificate (PEM). */
  cert: z.string().max(8192),
  /** A certificate request for the node's key, CN = node. */
  csr: z.string().max(8192),
  /** When the node signed it (ms). */
  at: z.number().int(),
  /** Signature (base64) by the current certificate's key over renewalSigningText. */
  signature: z.string().max(1024),
});
export type RenewalRequest = z.infer<typeof renewalRequestSchema>;

export type RenewalRefusalCode = "malformed" | "unknown-node" | "revoked" | "not-current" | "foreign-certificate" | "bad-signature" | "stale-request" | "bad-csr" | "internal";
export type RenewalReply = { ok: true; cert: string } | { ok: false; code: RenewalRefusalCode; reason: string };

/** Refusals a node will not get past by asking again: its identity is gone or replaced. */
export const finalRenewalRefusals: ReadonlySet<RenewalRefusalCode> = new Set(["unknown-node", "revoked", "not-current", "foreign-certificate"]);

/** The bytes a node signs with its current key: the node, the request and the time, in a fixed order. */
export function renewalSigningText(node: string, request: Pick<RenewalRequest, "csr" | "at">): Buffer {
  return Buffer.from(JSON.stringify(["leafmesh certificate renewal", node, request.csr, request.at]));
}

/** @default 8 — earlier certificates of a node kept for `keys revoke` (renewed at 2/3 of their life, at most two are still valid). */
const keptEarlierCertificates = 8;

/** Checks one request of `node` against the keys directory and, when it passes, signs the new certificate (holding the lock). */
export async function renewNodeCertificate(options: { dir: string; node: string; body: unknown; certificateDays: number; now?: () => number }): Promise<RenewalReply> {
  const { dir, node } = options;
  const now = (options.now ?? Date.now)();
  const refuse = (code: RenewalRefusalCode, reason: string): RenewalReply => ({ ok: false, code, reason });
  const parsed = renewalRequestSchema.safeParse(options.body);
  if (!parsed.success || !nodeNamePattern.test(node)) return refuse("malformed", `not a renewal request (${parsed.error?.issues[0]?.path.join(".") || "node"})`);
  const request = parsed.data;
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(request.cert);
  } catch {
    return refuse("malformed", "the certificate sent is no certificate");
  }
  const ca = new X509Certificate(readFileSync(join(dir, "ca", "ca.crt")));
  if (!certificate.verify(ca.publicKey)) return refuse("foreign-certificate", `the certificate sent is not of this mesh's CA`);
  let signatureOk = false;
  try {
    signatureOk = verify("sha256", renewalSigningText(node, request), certificate.publicKey, Buffer.from(request.signature, "base64"));
  } catch {
    signatureOk = false;
  }
  if (!signatureOk) return refuse("bad-signature", "the request is not signed by the key of the certificate it carries");
  if (Math.abs(now - request.at) > requestMaxAgeMs) return refuse("stale-request", `the request was signed at ${new Date(request.at).toISOString()}, more than ${requestMaxAgeMs / 60_000} minutes from the hub's clock`);
  try {
    await checkCertificateRequest(request.csr, node);
  } catch (error) {
    return refuse("bad-csr", describeError(error));
  }
  return withKeysLock(dir, async () => {
    const state = readKeyState(dir);
    const entry = state.nodes[node];
    if (!entry) return refuse("unknown-node", `node '${node}' is not in the keys directory`);
    const fingerprint = certificateFingerprint(request.cert);
    if (!entry.user || (state.revokedCertificates ?? []).some((revoked) => revoked.certificate === fingerprint)) {
      return refuse("revoked", `node '${node}' is revoked (keys revoke): its certificate is not renewed; join it again with a token for a new identity`);
    }
    if (entry.certificate !== fingerprint) {
      // The one this hub last replaced, for the same key: the answer to that renewal was lost on its way (or a
      // request the node sent was replayed): the current certificate again, so that the node is not left with an
      // identity it can never renew.
      const current = join(nodeBundleDir(dir, node), "node.crt");
      if (entry.renewedFrom?.at(-1)?.certificate === fingerprint && existsSync(current)) {
        const currentPem = readFileSync(current, "utf8");
        if (certificateFingerprint(currentPem) === entry.certificate && new X509Certificate(currentPem).publicKey.equals(certificate.publicKey)) return { ok: true, cert: currentPem };
      }
      return refuse("not-current", `the certificate sent is not node '${node}''s current one (replaced since: issued again, or renewed already)`);
    }
    const cert = await signCertificateRequest({ caCertFile: join(dir, "ca", "ca.crt"), caKeyFile: join(dir, "ca", "ca.key"), commonName: node, hosts: [node], csrPem: request.csr, days: options.certificateDays });
    // Only those not yet ended: an ended certificate is refused by its dates, and the revocation list only grows.
    const replaced = { certificate: fingerprint, ends: new Date(certificate.validTo).toISOString() };
    entry.renewedFrom = [...(entry.renewedFrom ?? []), replaced].filter((earlier) => Date.parse(earlier.ends) > now).slice(-keptEarlierCertificates);
    entry.certificate = certificateFingerprint(cert);
    writeFileWhole(join(nodeBundleDir(dir, node), "node.crt"), cert);
    writeKeyState(dir, state);
    return { ok: true, cert };
  });
}

export interface RenewalService {
  /** Requests answered, by outcome ("renewed" or a refusal code). */
  readonly counts: Readonly<Record<string, number>>;
  stop(): Promise<void>;
}

/** Answers renewal requests on the hub's mesh-account connection, one at a time (each writes the keys directory). */
export function startRenewalService(options: { connection: NatsConnection; dir: string; certificateDays: number; log: Logger; now?: () => number }): RenewalService {
  const { log } = options;
  const counts: Record<string, number> = {};
  const loggedRefusals = new Set<string>();
  let chain = Promise.resolve();
  let waiting = 0;
  const handle = async (message: Msg) => {
    const node = message.subject.split(".")[1] ?? "";
    let reply: RenewalReply;
    // The answer is published as this hub's user of the mesh account, which may write the catalog and call the
    // JetStream API: to the node's own inbox only, never to a reply subject the node chose elsewhere (a node that
    // named $KV.mesh-catalog.<key> or $JS.API.STREAM.DELETE.<stream> would have the hub write or delete there).
    if (!message.reply?.startsWith(`${nodeInboxPrefix(node)}.`)) {
      counts["foreign-reply"] = (counts["foreign-reply"] ?? 0) + 1;
      if (!loggedRefusals.has(`${node} foreign-reply`) && loggedRefusals.size < 1_000) {
        loggedRefusals.add(`${node} foreign-reply`);
        log.warn({ node, reply: message.reply?.slice(0, 200) }, `certificate renewal refused: node '${node}' asked for the answer on '${message.reply?.slice(0, 200) ?? "(none)"}', not under its inbox ${nodeInboxPrefix(node)}; not answered`);
      }
      return;
    }
    try {
      reply = await renewNodeCertificate({ dir: options.dir, node, body: message.json(), certificateDays: options.certificateDays, now: options.now });
    } catch (error) {
      log.error({ node, err: describeError(error) }, "certificate renewal failed");
      reply = { ok: false, code: "internal", reason: `the hub could not renew the certificate: ${describeError(error)}` };
    }
    const outcome = reply.ok ? "renewed" : reply.code;
    counts[outcome] = (counts[outcome] ?? 0) + 1;
    if (reply.ok) {
      log.info({ node, ends: new X509Certificate(reply.cert).validTo }, `renewed the certificate of node '${node}'`);
    } else if (!loggedRefusals.has(`${node} ${reply.code}`) && loggedRefusals.size < 1_000) {
      // Once per node and reason: a revoked node asking every minute is a counter, not a log.
      loggedRefusals.add(`${node} ${reply.code}`);
      log.warn({ node, code: reply.code }, `certificate renewal refused: ${reply.reason}`);
    }
    {
      try {
        message.respond(JSON.stringify(reply));
      } catch (error) {
        log.debug({ err: describeError(error) }, "renewal reply not sent");
      }
    }
  };
  const subscription = options.connection.subscribe(certificateRenewalSubjects, {
    queue: "leafmesh-renew",
    // A bound on what waits: a node asks at most once a few seconds; more than this at once is a flood, dropped (the nodes ask again).
    callback: (error, message) => {
      if (error) return void log.warn({ err: describeError(error) }, "renewal subscription failed");
      if (waiting >= 64) return void (counts.dropped = (counts.dropped ?? 0) + 1);
      waiting++;
      chain = chain
        .then(() => handle(message))
        .catch((caught: unknown) => log.error({ err: describeError(caught) }, "certificate renewal failed"))
        .finally(() => waiting--);
    },
  });
  log.info({ subject: certificateRenewalSubjects, certificateDays: options.certificateDays }, "serving certificate renewal of joined nodes");
  return {
    counts,
    stop: async () => {
      subscription.unsubscribe();
      await chain;
    },
  };
}
