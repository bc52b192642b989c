/**
 * Which libp2p peer is which node, proven by the node's mesh certificate (issue 8:
 * "a peer claiming a node name with another key is refused"). With security on,
 * every agent signs two things with the TLS key its bundle holds (certificate by
 * the mesh CA, CN = node name; trust/record-signature.ts):
 *
 * - its node record in KV `mesh-nodes`, so the peer id and addresses a peer dials
 *   are the node's word, not merely what the server stored;
 * - a proof `{ node, peerId }` carried in libp2p identify, so a LAN neighbour found
 *   by mDNS (also with the hub away) or a peer on a relayed connection is bound to
 *   its node name before any stream is served.
 *
 * Pure: bytes and PEM in, verdicts out. Without an identity (an `--insecure`
 * mesh) records stay plain and claims are taken as they come.
 *
 * ```ts
 * const value = encodeDirectoryValue(record, identity);              // what goes into mesh-nodes
 * const verdict = decodeDirectoryValue("edge-b", bytes, identity);   // { record } or { refused: "why" }
 * const agent = userAgentFor("edge-a", makePeerProof("edge-a", peerId, identity));
 * checkPeerClaim(agentVersion, remotePeerId, identity);              // { node } or { refused: "why" }
 * ```
 */
import { decodeNodeRecord, encodeNodeRecord, type NodeRecord } from "../../bus/node-record.ts";
import { describeError } from "../../lib/errors.ts";
import { signNodeRecord, verifyNodeRecord, type SignedNodeRecord } from "../../trust/record-signature.ts";
import { fingerprintOf } from "./peer-trust.ts";

/** Whether a certificate (by its SHA-256 fingerprint) is on the mesh's revocation list (peer-trust.ts). */
export type IsRevoked = (certificateFingerprint: string | undefined) => boolean;

/** The node's certificate and key (PEM) and the mesh CA it checks peers against. */
export interface NodeIdentity {
  certPem: string;
  keyPem: string;
  caPem: string;
}

/** identify's agent version: the node name, then (with security on) its proof. */
export const agentVersionPrefix = "leafmesh-agent node=";
const proofMarker = " proof=";
const tlsMarker = " tls=";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function isEnvelope(value: unknown): value is SignedNodeRecord {
  const candidate = value as Partial<SignedNodeRecord> | undefined;
  return typeof candidate?.record === "string" && typeof candidate.cert === "string" && typeof candidate.signature === "string";
}

/** A `mesh-nodes` value: the plain record (insecure mesh), or `{ "signed": envelope }` over the record's bytes. */
export function encodeDirectoryValue(record: NodeRecord, identity: NodeIdentity | undefined): Uint8Array {
  const bytes = encodeNodeRecord(record);
  if (!identity) return bytes;
  return encoder.encode(JSON.stringify({ signed: signNodeRecord({ record: bytes, certPem: identity.certPem, keyPem: identity.keyPem }) }));
}

/** `certificate`: the fingerprint of the certificate that signed the record (with an identity), for a revocation that comes later. */
export type DirectoryVerdict = { record: NodeRecord; certificate?: string; refused?: undefined; revoked?: undefined } | { record?: undefined; refused: string; revoked?: boolean };

/**
 * Reads the value under key `node`. With an identity only a record signed by
 * `node`'s certificate of this mesh's CA is accepted; without one, a plain record
 * (or a signed one, read without checking: an insecure mesh has no CA to check with).
 * A record signed by a revoked certificate is refused (`revoked: true`).
 */
export function decodeDirectoryValue(node: string, bytes: Uint8Array, identity: NodeIdentity | undefined, isRevoked?: IsRevoked): DirectoryVerdict {
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoder.decode(bytes));
  } catch (error) {
    return { refused: `not JSON (${describeError(error)})` };
  }
  const envelope = (parsed as { signed?: unknown })?.signed;
  let recordBytes: Uint8Array;
  let certificate: string | undefined;
  if (isEnvelope(envelope)) {
    if (identity) {
      try {
        recordBytes = verifyNodeRecord({ node, envelope, caPem: identity.caPem });
      } catch (error) {
        return { refused: describeError(error) };
      }
      certificate = fingerprintOf(envelope.cert);
      if (isRevoked?.(certificate)) return { refused: `node record of '${node}' refused: its certificate is revoked (the mesh's revocation list)`, revoked: true };
    } else {
      recordBytes = Buffer.from(envelope.record, "base64");
    }
  } else {
    if (identity) return { refused: `node record claiming to be '${node}' refused: it is not signed (an agent without --keys, or written by someone else)` };
    recordBytes = bytes;
  }
  let record: NodeRecord;
  try {
    record = decodeNodeRecord(recordBytes);
  } catch (error) {
    return { refused: `malformed node record: ${describeError(error)}` };
  }
  if (record.node !== node) return { refused: `the record under key '${node}' names node '${record.node}'` };
  return { record, certificate };
}

/** The proof a node announces in identify: its node name and peer id, signed with its certificate (base64url of the envelope). */
export function makePeerProof(node: string, peerId: string, identity: NodeIdentity): string {
  const envelope = signNodeRecord({ record: encoder.encode(JSON.stringify({ node, peerId })), certPem: identity.certPem, keyPem: identity.keyPem });
  return Buffer.from(JSON.stringify(envelope)).toString("base64url");
}

/** `leafmesh-agent node=<node>[ tls=<port>][ proof=<proof>]`: the TLS stream port is where tls-streams.ts serves (security on). */
export function userAgentFor(node: string, proof?: string, tlsPort?: number): string {
  return `${agentVersionPrefix}${node}${tlsPort ? `${tlsMarker}${tlsPort}` : ""}${proof ? `${proofMarker}${proof}` : ""}`;
}

/** The TLS stream port a peer announced in identify, if any. */
export function tlsPortOf(agentVersion: string | undefined): number | undefined {
  if (!agentVersion?.startsWith(agentVersionPrefix)) return undefined;
  const match = /^\d{1,5}(?= |$)/.exec(agentVersion.split(tlsMarker)[1] ?? "");
  const port = match ? Number(match[0]) : undefined;
  return port !== undefined && port > 0 && port < 65536 ? port : undefined;
}

/** `certificate`: the fingerprint of the certificate that signed the proof (with an identity), for a revocation that comes later. */
export type PeerClaim = { node: string; certificate?: string; refused?: undefined; revoked?: undefined } | { node?: string; refused: string; revoked?: boolean };

/**
 * Which node a connected peer is, from its identify agent version. With an
 * identity the claim must carry a proof, signed by the claimed node's
 * certificate of this mesh, naming this very peer id, and that certificate must
 * not be revoked (`revoked: true`).
 */
export function checkPeerClaim(agentVersion: string | undefined, peerId: string, identity: NodeIdentity | undefined, isRevoked?: IsRevoked): PeerClaim | undefined {
  if (!agentVersion?.startsWith(agentVersionPrefix)) return undefined; // not a leafmesh agent (identify still running, or a stranger)
  const rest = agentVersion.slice(agentVersionPrefix.length);
  const at = rest.indexOf(proofMarker);
  // Older agents announced "node=<node> proof=…"; the node name never holds a space.
  const node = rest.split(" ")[0];
  if (!identity) return { node };
  if (at < 0) return { node, refused: `peer ${peerId} claims to be node '${node}' without a proof (an agent without --keys?)` };
  try {
    const envelope = JSON.parse(Buffer.from(rest.slice(at + proofMarker.length), "base64url").toString("utf8")) as unknown;
    if (!isEnvelope(envelope)) return { node, refused: `peer ${peerId} claims to be node '${node}' with a malformed proof` };
    const statement = JSON.parse(decoder.decode(verifyNodeRecord({ node, envelope, caPem: identity.caPem }))) as { node?: unknown; peerId?: unknown };
    if (statement.node !== node) return { node, refused: `peer ${peerId} claims to be node '${node}' with a proof for '${String(statement.node)}'` };
    if (statement.peerId !== peerId) return { node, refused: `peer ${peerId} claims to be node '${node}', whose proof names peer ${String(statement.peerId)} (another key)` };
    const certificate = fingerprintOf(envelope.cert);
    if (isRevoked?.(certificate)) return { node, refused: `peer ${peerId} is node '${node}', whose certificate is revoked (the mesh's revocation list)`, revoked: true };
    return { node, certificate };
  } catch (error) {
    return { node, refused: `peer ${peerId} claims to be node '${node}': ${describeError(error)}` };
  }
}
