/**
 * The mesh's list of revoked node certificates, signed by the mesh CA (pure:
 * bytes in, bytes out). `leafmesh keys revoke` writes it; hubs publish it in KV
 * `mesh-revocations`; every agent mirrors it (so it holds while offline),
 * checks the CA's signature, and refuses a peer whose certificate is on it at
 * the TLS handshake and in its node records, and cuts the streams it has open.
 * Revoking the node's NATS credentials (an account JWT update) already closes
 * its links to hubs and sites; this list is what its LAN and punched peers
 * learn, as they take its certificate, not the hubs, as proof.
 *
 * A certificate is named by the SHA-256 of its DER (as Node's
 * `X509Certificate.fingerprint256` prints it): the list needs no serial numbers
 * or CRL database, and a peer can check any certificate it is shown.
 *
 * ```ts
 * const signed = signRevocationList({ version: 3, issuedAt, revoked: [...] }, caKeyPem);
 * const list = verifyRevocationList(signed, caCertPem); // throws TRUST_FAILED when altered or of another CA
 * ```
 */
import { createPrivateKey, sign, verify, X509Certificate } from "node:crypto";
import * as z from "../lib/schema/index.ts";
import { LeafmeshError } from "../lib/errors.ts";

const fingerprintPattern = /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/;

export const revocationListSchema = z.object({
  /** Grows with every revocation: a hub or agent keeps the highest it has seen. */
  version: z.number().int().nonnegative(),
  issuedAt: z.string(),
  revoked: z.array(
    z.object({
      node: z.string().min(1),
      /** SHA-256 of the certificate's DER, upper-case hex pairs joined by ':' (X509Certificate.fingerprint256). */
      certificate: z.string().regex(fingerprintPattern),
      /** When it was revoked (ISO 8601). */
      at: z.string(),
      /** When the certificate ends (ISO 8601), when known: it leaves the list a while after (pruneEnded). Older agents ignore it. */
      ends: z.string().optional(),
    }),
  ),
});
export type RevocationList = z.infer<typeof revocationListSchema>;

const signedSchema = z.object({ list: z.string(), signature: z.string() });

/** The fingerprint a revocation names a certificate by. */
export function certificateFingerprint(certificatePem: string | Buffer): string {
  return new X509Certificate(certificatePem).fingerprint256;
}

/** Signs `list` with the CA's private key: the bytes to publish. */
export function signRevocationList(list: RevocationList, caKeyPem: string): Uint8Array {
  const text = JSON.stringify(revocationListSchema.parse(list));
  const signature = sign("sha256", Buffer.from(text), createPrivateKey(caKeyPem)).toString("base64");
  return new TextEncoder().encode(JSON.stringify({ list: text, signature }));
}

/** The list, if the CA signed exactly these bytes; throws TRUST_FAILED otherwise (altered, another mesh's, not a list). */
export function verifyRevocationList(bytes: Uint8Array, caCertPem: string): RevocationList {
  let envelope: z.infer<typeof signedSchema>;
  try {
    envelope = signedSchema.parse(JSON.parse(new TextDecoder().decode(bytes)));
  } catch (cause) {
    throw new LeafmeshError("TRUST_FAILED", "the revocation list is not a signed list", { cause });
  }
  const ca = new X509Certificate(caCertPem);
  if (!verify("sha256", Buffer.from(envelope.list), ca.publicKey, Buffer.from(envelope.signature, "base64"))) {
    throw new LeafmeshError("TRUST_FAILED", "the revocation list's signature is not the mesh CA's (altered, or of another mesh)");
  }
  try {
    return revocationListSchema.parse(JSON.parse(envelope.list));
  } catch (cause) {
    throw new LeafmeshError("TRUST_FAILED", "the signed revocation list does not parse", { cause });
  }
}

/**
 * @default 825 days — the longest a certificate the mesh signs lasts from its issue (trust/tls.ts; hub
 * --node-cert-validity is capped to it): a certificate revoked at `at` ends by `at` + this at the latest.
 */
export const longestCertificateLifeMs = 825 * 86_400_000;
/**
 * @default 30 days — how long an ended certificate stays on the list: a machine whose clock is behind by less
 * still finds it there (one further behind warns, trust/ends.ts).
 */
export const endedKeptMs = 30 * 86_400_000;

/**
 * The entries whose certificate may not have ended (with endedKeptMs to spare): its `ends` when known, else
 * its revocation time plus longestCertificateLifeMs. An ended certificate is refused by its dates, and the
 * list only grows otherwise: signed, it must fit one NATS message (1 MiB, about 5,900 entries), and a hub
 * whose list did not fit failed to start ("max_payload size exceeded").
 */
export function pruneEnded(revoked: RevocationList["revoked"], now: number): RevocationList["revoked"] {
  return revoked.filter((entry) => {
    const ends = entry.ends !== undefined ? Date.parse(entry.ends) : Date.parse(entry.at) + longestCertificateLifeMs;
    return !(ends + endedKeptMs < now);
  });
}

/** An empty list: what a mesh without revocations publishes. */
export function emptyRevocationList(): RevocationList {
  return { version: 0, issuedAt: new Date(0).toISOString(), revoked: [] };
}
