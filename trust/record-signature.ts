/**
 * Node records signed by the node (docs/nats-facts.md: "a second line of defence"): the
 * record bytes travel with the node's certificate and an ECDSA signature by its
 * TLS key. A peer that holds the mesh CA checks that the certificate is the
 * CA's, names the node the record claims to be, and signed these very bytes —
 * so a peer id in `mesh-nodes` is trusted because the node vouches for it, not
 * because the server stored it. Pure node:crypto, no server involved.
 *
 * ```ts
 * const envelope = signNodeRecord({ node: "edge-a", record: encodeNodeRecord(record), certPem, keyPem });
 * const bytes = verifyNodeRecord({ node: "edge-a", envelope, caPem });  // throws TRUST_FAILED saying what is wrong
 * ```
 */
import { X509Certificate, createPrivateKey, sign, verify } from "node:crypto";
import { LeafmeshError } from "../lib/errors.ts";

export interface SignedNodeRecord {
  /** The record as written (base64 of its bytes). */
  record: string;
  /** The node's certificate (PEM), issued by the mesh CA with CN = node name. */
  cert: string;
  /** ECDSA-SHA256 over the record bytes, base64. */
  signature: string;
}

export function signNodeRecord(options: { record: Uint8Array; certPem: string; keyPem: string }): SignedNodeRecord {
  const signature = sign("sha256", options.record, createPrivateKey(options.keyPem));
  return { record: Buffer.from(options.record).toString("base64"), cert: options.certPem, signature: signature.toString("base64") };
}

/** The CN of a certificate's subject: a node certificate names its node there. */
export function commonName(cert: X509Certificate): string | undefined {
  return /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1]?.trim();
}

/** Returns the record bytes when `envelope` is `node`'s, signed with a certificate of the CA in `caPem`; throws otherwise. */
export function verifyNodeRecord(options: {
  node: string;
  envelope: SignedNodeRecord;
  caPem: string;
  now?: () => number;
  /** What the signed bytes are, for the refusal. @default "node record" */
  what?: string;
}): Uint8Array {
  const what = options.what ?? "node record";
  const refuse = (why: string) => new LeafmeshError("TRUST_FAILED", `${what} claiming to be '${options.node}' refused: ${why}`);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(options.envelope.cert);
  } catch (cause) {
    throw new LeafmeshError("TRUST_FAILED", `${what} claiming to be '${options.node}' refused: its certificate cannot be read`, { cause });
  }
  const ca = new X509Certificate(options.caPem);
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) throw refuse(`its certificate (${cert.subject.replaceAll("\n", ", ")}) is not signed by this mesh's CA`);
  const name = commonName(cert);
  if (name !== options.node) throw refuse(`its certificate belongs to '${name ?? "?"}'`);
  const now = (options.now ?? Date.now)();
  if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo)) {
    const clock = now < Date.parse(cert.validFrom) ? `; this machine's clock reads ${new Date(now).toISOString()}: if that is wrong, set it (NTP)` : "";
    throw refuse(`its certificate is valid only from ${cert.validFrom} to ${cert.validTo}${clock}`);
  }
  const record = Buffer.from(options.envelope.record, "base64");
  if (!verify("sha256", record, cert.publicKey, Buffer.from(options.envelope.signature, "base64"))) throw refuse(`the signature does not match the ${options.what ?? "record"} (altered on the way, or signed with another key)`);
  return new Uint8Array(record);
}
