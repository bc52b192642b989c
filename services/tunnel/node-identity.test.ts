/**
 * Node records and libp2p identities proven by the node's mesh certificate
 * (issue 8): keys made by `leafmesh keys` code (openssl for the certificates).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeNodeRecord, type NodeRecord } from "../../bus/node-record.ts";
import { initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { requireTools } from "../../test/support/trust-servers.ts";
import { checkPeerClaim, decodeDirectoryValue, encodeDirectoryValue, makePeerProof, tlsPortOf, userAgentFor, type NodeIdentity } from "./node-identity.ts";
import { fingerprintOf } from "./peer-trust.ts";

const base = mkdtempSync(join(tmpdir(), "leafmesh-node-identity-"));
const keys = join(base, "keys");
const stranger = join(base, "stranger");
afterAll(() => rmSync(base, { recursive: true, force: true }));
const identities: Record<string, NodeIdentity> = {};
beforeAll(async () => {
  requireTools();
  await initKeys({ dir: keys });
  await initKeys({ dir: stranger });
  for (const node of ["edge-a", "edge-b"]) await issueNode({ dir: keys, node });
  await issueNode({ dir: stranger, node: "edge-b" });
  const identity = (dir: string, node: string): NodeIdentity => {
    const read = (file: string) => readFileSync(join(dir, "nodes", node, file), "utf8");
    return { certPem: read("node.crt"), keyPem: read("node.key"), caPem: read("ca.crt") };
  };
  identities.a = identity(keys, "edge-a");
  identities.b = identity(keys, "edge-b");
  identities.strangerB = identity(stranger, "edge-b");
}, 60_000);

const recordOf = (node: string, peerId = "12D3KooWGenuine"): NodeRecord => ({ node, peerId, listen: [], observed: [], nat: "unknown", relay: true, pskFingerprint: "abcd", at: "2026-11-24T00:00:00Z" });

describe("node records in mesh-nodes", () => {
  it("a record signed by its node is used; the same bytes read in an insecure mesh too", () => {
    const value = encodeDirectoryValue(recordOf("edge-b"), identities.b);
    expect(decodeDirectoryValue("edge-b", value, identities.a)).toEqual({ record: recordOf("edge-b"), certificate: fingerprintOf(identities.b.certPem) });
    expect(decodeDirectoryValue("edge-b", value, undefined)).toEqual({ record: recordOf("edge-b") });
    // an insecure mesh's plain record
    expect(decodeDirectoryValue("edge-b", encodeDirectoryValue(recordOf("edge-b"), undefined), undefined)).toEqual({ record: recordOf("edge-b") });
  });

  it("with security on, refuses unsigned records, another node's certificate, another CA, altered bytes and a record under the wrong key", () => {
    const refused = (node: string, value: Uint8Array) => decodeDirectoryValue(node, value, identities.a).refused;
    expect(refused("edge-b", encodeNodeRecord(recordOf("edge-b", "12D3KooWAttacker")))).toMatch("it is not signed");
    // edge-a's owner writes a record for edge-b (the server would stop it; this is the second line)
    expect(refused("edge-b", encodeDirectoryValue(recordOf("edge-b", "12D3KooWAttacker"), identities.a))).toMatch("its certificate belongs to 'edge-a'");
    expect(refused("edge-b", encodeDirectoryValue(recordOf("edge-b", "12D3KooWAttacker"), identities.strangerB))).toMatch("is not signed by this mesh's CA");
    const genuine = JSON.parse(new TextDecoder().decode(encodeDirectoryValue(recordOf("edge-b"), identities.b)));
    const record = JSON.parse(Buffer.from(genuine.signed.record, "base64").toString());
    genuine.signed.record = Buffer.from(JSON.stringify({ ...record, peerId: "12D3KooWAttacker" })).toString("base64");
    expect(refused("edge-b", new TextEncoder().encode(JSON.stringify(genuine)))).toMatch("the signature does not match the record");
    // edge-b's own signed record copied under edge-c's key
    expect(refused("edge-c", encodeDirectoryValue(recordOf("edge-b"), identities.b))).toMatch("its certificate belongs to 'edge-b'");
    expect(refused("edge-b", new TextEncoder().encode("{not json"))).toMatch("not JSON");
  });
});

describe("which node a libp2p peer is", () => {
  const peer = "12D3KooWPeerOfB";

  it("takes a proof made by the node for this peer id", () => {
    const agent = userAgentFor("edge-b", makePeerProof("edge-b", peer, identities.b));
    expect(checkPeerClaim(agent, peer, identities.a)).toEqual({ node: "edge-b", certificate: fingerprintOf(identities.b.certPem) });
  });

  it("refuses a proof, and a node record, signed by a revoked certificate (issue 15, item 6)", () => {
    const revokedB = (fingerprint: string | undefined) => fingerprint === fingerprintOf(identities.b.certPem);
    const claim = checkPeerClaim(userAgentFor("edge-b", makePeerProof("edge-b", peer, identities.b)), peer, identities.a, revokedB);
    expect(claim).toMatchObject({ node: "edge-b", revoked: true });
    expect(claim?.refused).toMatch("whose certificate is revoked");
    const record = decodeDirectoryValue("edge-b", encodeDirectoryValue(recordOf("edge-b"), identities.b), identities.a, revokedB);
    expect(record).toMatchObject({ revoked: true });
    expect(record.refused).toMatch("its certificate is revoked");
    // another node's certificate is not touched by edge-b's revocation
    expect(checkPeerClaim(userAgentFor("edge-a", makePeerProof("edge-a", peer, identities.a)), peer, identities.b, revokedB)).toEqual({ node: "edge-a", certificate: fingerprintOf(identities.a.certPem) });
  });

  it("reads the TLS stream port beside the node name and its proof, and nothing from a malformed one", () => {
    const agent = userAgentFor("edge-b", makePeerProof("edge-b", peer, identities.b), 4102);
    expect(agent).toMatch(/^leafmesh-agent node=edge-b tls=4102 proof=/);
    expect(checkPeerClaim(agent, peer, identities.a)).toMatchObject({ node: "edge-b" });
    expect(tlsPortOf(agent)).toBe(4102);
    expect(tlsPortOf(userAgentFor("edge-b", undefined, 4102))).toBe(4102);
    expect(tlsPortOf(userAgentFor("edge-b", makePeerProof("edge-b", peer, identities.b)))).toBeUndefined();
    expect(tlsPortOf("leafmesh-agent node=edge-b tls=99999")).toBeUndefined();
    expect(tlsPortOf("leafmesh-agent node=edge-b tls=12ab")).toBeUndefined();
    expect(tlsPortOf("some-other-agent tls=4102")).toBeUndefined();
  });

  it("refuses a claim without proof, a proof for another peer id, another node's or another CA's certificate", () => {
    expect(checkPeerClaim(userAgentFor("edge-b"), peer, identities.a)?.refused).toMatch("claims to be node 'edge-b' without a proof");
    expect(checkPeerClaim(userAgentFor("edge-b", makePeerProof("edge-b", peer, identities.b)), "12D3KooWImpostor", identities.a)?.refused).toMatch(
      `whose proof names peer ${peer} (another key)`,
    );
    expect(checkPeerClaim(userAgentFor("edge-b", makePeerProof("edge-b", peer, identities.a)), peer, identities.a)?.refused).toMatch("its certificate belongs to 'edge-a'");
    expect(checkPeerClaim(userAgentFor("edge-b", makePeerProof("edge-b", peer, identities.strangerB)), peer, identities.a)?.refused).toMatch("is not signed by this mesh's CA");
    expect(checkPeerClaim(`${userAgentFor("edge-b")} proof=bm90IGpzb24`, peer, identities.a)?.refused).toMatch("claims to be node 'edge-b'");
  });

  it("takes the name as given in an insecure mesh, and ignores peers that are not leafmesh agents", () => {
    expect(checkPeerClaim(userAgentFor("edge-b"), peer, undefined)).toEqual({ node: "edge-b" });
    expect(checkPeerClaim("js-libp2p/3.0.0", peer, identities.a)).toBeUndefined();
    expect(checkPeerClaim(undefined, peer, identities.a)).toBeUndefined();
  });
});
