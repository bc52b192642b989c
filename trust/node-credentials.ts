/**
 * A node's credentials over its life: issue (a NATS user key, a TLS certificate, the bundle to copy
 * to the node), rotate, revoke (the key on its account's revocations, the certificate on the mesh's
 * signed revocation list). Each holds the keys directory's lock (keys-lock.ts): an enrolling hub
 * writes the same state.json.
 *
 * ```ts
 * await issueNode({ dir, node: "edge-a" });
 * await issueNode({ dir, node: "edge-a", rotate: true }); // the old key and certificate revoked
 * const { accountJwt, revocationList } = await revokeNode({ dir, node: "edge-a" });
 * ```
 */
import { copyFileSync, existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { X509Certificate } from "node:crypto";
import { createUser, fmtCreds } from "@nats-io/jwt";
import { LeafmeshError } from "../lib/errors.ts";
import { checkNodeName } from "../bus/subjects.ts";
import { makePrivateDir, writeFileWhole, writeSecretFile } from "./secret-files.ts";
import { issueCertificate } from "./tls.ts";
import { certificateFingerprint, pruneEnded, signRevocationList } from "./revocation-list.ts";
import { withKeysLock } from "./keys-lock.ts";
import { nodeAccountName, nodeUserJwt } from "./claims.ts";
import { ensureNodeAccount, nodeBundleDir, readKeyState, readSeed, resignNodeAccount, seedFile, serverOfSite, writeKeyState, type NodeState } from "./key-store.ts";

export interface IssueOptions {
  dir: string;
  node: string;
  /** Host names / IPs for the node's certificate. @default [node] */
  hosts?: string[];
  /** Unix seconds after which the node's NATS credentials expire. @default never (revoke instead) */
  expires?: number;
  /**
   * A node that has credentials already: revoke them (key and certificate) and issue new ones. Without
   * it such a node is refused: a second issue would leave the first key valid where `keys revoke` no
   * longer reaches it (state.json names one current key per node).
   */
  rotate?: boolean;
}

export interface IssueResult {
  node: NodeState;
  bundleDir: string;
  /** Account JWTs that changed and must reach running hubs (pushClaims). */
  changedAccounts: string[];
  /** With `rotate`: the revocation of the node's previous credentials, to push as `keys revoke` does. */
  revoked?: RevokeResult;
}

/**
 * Issues (or re-issues) a node: its account on first issue, always a NEW user
 * key (docs/nats-facts.md: a new JWT for a revoked key silently undoes the revocation), a
 * TLS certificate, and the bundle directory to copy to the node. A node with current credentials is
 * issued again only with `rotate`, which revokes them first. Holds the keys directory's lock.
 */
export async function issueNode(options: IssueOptions): Promise<IssueResult> {
  const node = checkNodeName(options.node, "--node");
  return withKeysLock(options.dir, async () => {
    const current = readKeyState(options.dir).nodes[node];
    if (current?.user && !options.rotate) {
      throw new LeafmeshError(
        "TRUST_FAILED",
        `node '${node}' already has credentials (user ${current.user}, issued ${current.issuedAt}): issuing again would leave them valid, and \`leafmesh keys revoke\` names only the newest key. Give --rotate to revoke them and issue new ones in one step, or run \`leafmesh keys revoke --node ${node}\` first`,
      );
    }
    const revoked = current?.user ? await revokeNode({ dir: options.dir, node }) : undefined;
    return { ...(await issueNewIdentity(options, node)), revoked };
  });
}

async function issueNewIdentity(options: IssueOptions, node: string): Promise<IssueResult> {
  const { dir } = options;
  const state = readKeyState(dir);
  const { entry, changedAccounts } = await ensureNodeAccount(dir, state, node);
  const user = createUser();
  const bundle = nodeBundleDir(dir, node);
  makePrivateDir(bundle);
  const userJwt = await nodeUserJwt({ node, userSeed: new TextDecoder().decode(user.getSeed()), accountSeed: readSeed(seedFile(dir, nodeAccountName(node))), expires: options.expires, site: serverOfSite(state, node) });
  writeSecretFile(join(bundle, "node.creds"), fmtCreds(userJwt, user));
  entry.user = user.getPublicKey();
  entry.issuedAt = new Date().toISOString();
  entry.expiresAt = options.expires ? new Date(options.expires * 1000).toISOString() : undefined;
  entry.enrolledBy = undefined;

  await issueCertificate({
    caCertFile: join(dir, "ca", "ca.crt"),
    caKeyFile: join(dir, "ca", "ca.key"),
    certFile: join(bundle, "node.crt"),
    keyFile: join(bundle, "node.key"),
    commonName: node,
    hosts: options.hosts ?? [node],
  });
  entry.certificate = certificateFingerprint(readFileSync(join(bundle, "node.crt")));
  copyFileSync(join(dir, "ca", "ca.crt"), join(bundle, "ca.crt"));
  writeSecretFile(join(bundle, "swarm.key"), readFileSync(join(dir, "swarm.key")));
  writeKeyState(dir, state);
  return { node: entry, bundleDir: bundle, changedAccounts };
}

export interface RevokeResult {
  node: NodeState;
  revokedUser: string;
  /** The node account JWT carrying the revocation: push it to running hubs. */
  accountJwt: string;
  /** The mesh's revocation list with this node's certificate on it, signed by the CA (also in hub/revocations.json): publish it to running hubs. */
  revocationList: Uint8Array;
}

/** Where the signed revocation list is kept: under hub/, which is copied to the hubs. */
export function revocationListFile(dir: string): string {
  return join(dir, "hub", "revocations.json");
}

/** The signed revocation list of a keys directory (or a hub's copy of it), or undefined when nothing was ever revoked. */
export function readSignedRevocationList(dir: string): Uint8Array | undefined {
  const path = revocationListFile(dir);
  return existsSync(path) ? readFileSync(path) : undefined;
}

/** Revokes the node's current user key (from now on) and deletes its creds from the bundle. */
export async function revokeNode(options: { dir: string; node: string; now?: () => number }): Promise<RevokeResult> {
  return withKeysLock(options.dir, () => revokeHeld(options));
}

async function revokeHeld(options: { dir: string; node: string; now?: () => number }): Promise<RevokeResult> {
  const state = readKeyState(options.dir);
  const entry = state.nodes[options.node];
  if (!entry) throw new LeafmeshError("TRUST_FAILED", `node '${options.node}' was never issued in ${resolve(options.dir)} (see \`leafmesh keys list\`)`);
  if (!entry.user) throw new LeafmeshError("TRUST_FAILED", `node '${options.node}' is already revoked and has no current credentials (issue new ones with \`leafmesh keys issue\`)`);
  const revokedUser = entry.user;
  // A revocation covers JWTs issued at or before its time; +1 s so one issued in this very second is covered too.
  const now = (options.now ?? Date.now)();
  entry.revocations[revokedUser] = Math.floor(now / 1000) + 1;
  entry.user = undefined;
  // Its certificate goes on the list peers enforce (a node issued before certificates were recorded: read from its bundle).
  const bundleCert = join(nodeBundleDir(options.dir, entry.node), "node.crt");
  const certificate = entry.certificate ?? (existsSync(bundleCert) ? certificateFingerprint(readFileSync(bundleCert)) : undefined);
  state.revokedCertificates ??= [];
  // Its earlier certificates too, renewed since (trust/renewal-service.ts): the same key, and maybe not yet ended.
  const notEnded = (entry.renewedFrom ?? []).filter((earlier) => Date.parse(earlier.ends) > now);
  // The current certificate's end, from the public copy the keys directory keeps, when it is that one.
  const currentEnds = certificate && existsSync(bundleCert) && certificateFingerprint(readFileSync(bundleCert)) === certificate ? new Date(new X509Certificate(readFileSync(bundleCert)).validTo).toISOString() : undefined;
  for (const revoked of [...notEnded, ...(certificate ? [{ certificate, ends: currentEnds }] : [])]) {
    if (!state.revokedCertificates.some((known) => known.certificate === revoked.certificate)) {
      state.revokedCertificates.push({ node: entry.node, certificate: revoked.certificate, at: new Date(now).toISOString(), ...(revoked.ends ? { ends: revoked.ends } : {}) });
    }
  }
  state.revokedCertificates = pruneEnded(state.revokedCertificates, now);
  entry.certificate = undefined;
  entry.renewedFrom = undefined;
  state.revocationVersion = (state.revocationVersion ?? 0) + 1;
  const revocationList = signRevocationList(
    { version: state.revocationVersion, issuedAt: new Date(now).toISOString(), revoked: state.revokedCertificates },
    readSeed(join(options.dir, "ca", "ca.key")),
  );
  writeFileWhole(revocationListFile(options.dir), revocationList);
  const accountJwt = await resignNodeAccount(options.dir, state, entry);
  writeKeyState(options.dir, state);
  return { node: entry, revokedUser, accountJwt, revocationList };
}
