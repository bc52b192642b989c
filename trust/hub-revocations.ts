/**
 * Revocations only grow. The hubs' resolvers hold the account JWTs last pushed to them; a keys
 * directory restored from a backup made before a revocation holds an older state.json, and the next
 * change signed there (another node issued, `keys resign`, an enrolment) re-signs the revoked node's
 * account without the revocation. The hubs take any newer JWT the operator signed, so the revoked
 * node was let in again. Before a push, what the hubs hold is read back
 * (`$SYS.REQ.ACCOUNT.<account>.CLAIMS.LOOKUP`), and a revocation the directory lacks is written back
 * into state.json and signed into the account again, before anything is pushed.
 *
 * ```ts
 * const lacking = revocationsLacking(accountRevocations(verifiedClaims(heldJwt)), accountRevocations(claimsSignedHere(offeredJwt))); // {} when the offered one keeps every revocation
 * const { jwts, said } = await takeBackRevocations(dir, new Map([[account, lacking]]));
 * ```
 */
import { join } from "node:path";
import type { Account, ClaimsData } from "@nats-io/jwt";
import type { NatsConnection } from "@nats-io/transport-node";
import { LeafmeshError, describeError } from "../lib/errors.ts";
import { withKeysLock } from "./keys-lock.ts";
import { readKeyState, readSeed, resignNodeAccount, writeKeyState, type KeyState } from "./key-store.ts";
import { pruneEnded, signRevocationList, verifyRevocationList, type RevocationList } from "./revocation-list.ts";
import { writeFileWhole } from "./secret-files.ts";
import { revocationListFile } from "./node-credentials.ts";
import { resignSystemAccountWith } from "./site-claims.ts";
import { signEnrolAccount, takeBackTokenRevocations } from "./token-revocations.ts";

/**
 * Adds `certificates` to the state's revoked certificates (those it lacks), gives the list a version
 * above both the state's and `aboveVersion` (a list the hubs hold), and signs it into hub/revocations.json.
 * `state` is changed in place and not written. Returns the signed list.
 */
export function signListAgain(dir: string, state: KeyState, certificates: RevocationList["revoked"], aboveVersion: number, now = Date.now()): Uint8Array {
  state.revokedCertificates ??= [];
  for (const revoked of certificates) {
    if (!state.revokedCertificates.some((known) => known.certificate === revoked.certificate)) state.revokedCertificates.push(revoked);
  }
  state.revokedCertificates = pruneEnded(state.revokedCertificates, now);
  state.revocationVersion = Math.max(state.revocationVersion ?? 0, aboveVersion) + 1;
  const signed = signRevocationList(
    { version: state.revocationVersion, issuedAt: new Date(now).toISOString(), revoked: state.revokedCertificates },
    readSeed(join(dir, "ca", "ca.key")),
  );
  writeFileWhole(revocationListFile(dir), signed);
  return signed;
}

/** The revocations of `held` that `offered` does not carry, or carries from an earlier time (a revocation covers JWTs issued up to its time: an earlier one lets the JWTs issued between in again). */
export function revocationsLacking(held: Record<string, number>, offered: Record<string, number>): Record<string, number> {
  const lacking: Record<string, number> = {};
  for (const [user, at] of Object.entries(held)) {
    const offeredAt = offered[user];
    if (offeredAt === undefined || offeredAt < at) lacking[user] = at;
  }
  return lacking;
}

/** The revocations of an account's claims (read with trust/jwt-claims.ts: checked or not by where the JWT came from). */
export function accountRevocations(claims: ClaimsData<Account>): Record<string, number> {
  return claims.nats.revocations ?? {};
}

/** The accounts whose JWT the hub's resolver holds (a lookup of any other goes unanswered, and the hub logs an error for it). */
export async function listHeldAccounts(connection: NatsConnection, timeoutMs: number): Promise<Set<string>> {
  let reply;
  try {
    reply = await connection.request("$SYS.REQ.CLAIMS.LIST", "", { timeout: timeoutMs });
  } catch (cause) {
    throw new LeafmeshError("NATS_DENIED", `the hub did not list the accounts it holds (no full resolver there, or not the system user?): ${describeError(cause)}`, { cause });
  }
  const body = reply.json<{ data?: unknown }>();
  return new Set(Array.isArray(body.data) ? body.data.filter((entry): entry is string => typeof entry === "string") : []);
}

/** The account JWT the hub's resolver holds now (ask only for one listHeldAccounts names). */
export async function lookupAccountJwt(connection: NatsConnection, account: string, timeoutMs: number): Promise<string | undefined> {
  let reply;
  try {
    reply = await connection.request(`$SYS.REQ.ACCOUNT.${account}.CLAIMS.LOOKUP`, "", { timeout: timeoutMs });
  } catch (cause) {
    throw new LeafmeshError("NATS_DENIED", `the hub did not say which JWT it holds for account ${account}: ${describeError(cause)}`, { cause });
  }
  const text = reply.string().trim();
  return text.startsWith("ey") ? text : undefined;
}

/**
 * Writes `lacking` (account → user → time) back into the node entries of `dir`'s state.json, clears a
 * current key the hubs revoked, and signs those node accounts again. Returns their new JWTs by account
 * and one sentence per node taken back. An account that is no node's is refused: the directory cannot
 * be trusted to sign it.
 */
export async function takeBackRevocations(dir: string, lacking: Map<string, Record<string, number>>): Promise<{ jwts: Map<string, string>; said: string[] }> {
  return withKeysLock(dir, async () => {
    const state = readKeyState(dir);
    const jwts = new Map<string, string>();
    const said: string[] = [];
    const revokeCertificates: RevocationList["revoked"] = [];
    const now = Date.now();
    for (const [account, revocations] of lacking) {
      const entry = Object.values(state.nodes).find((candidate) => candidate.account === account);
      if (!entry && account === state.systemAccount) {
        // A system user revoked after the backup (an older site bundle's, `keys issue-site`): signed in again.
        jwts.set(account, await resignSystemAccountWith(dir, revocations));
        said.push(`the hubs hold ${Object.keys(revocations).length} revocation(s) of the system account that ${dir} lacked (restored from a backup?): signed into it again`);
        continue;
      }
      if (!entry && account === state.enrolAccount) {
        // Join tokens revoked after the backup (their users in the enrol account): revoked in state.json again.
        said.push(...takeBackTokenRevocations(state, revocations, dir));
        jwts.set(account, await signEnrolAccount(dir, state, revocations));
        continue;
      }
      if (!entry) {
        throw new LeafmeshError(
          "TRUST_FAILED",
          `the hubs hold revocations of account ${account} (users ${Object.keys(revocations).join(", ")}) that the keys directory ${dir} lacks, and no node of this directory owns that account: the directory is older than the hubs' state (restored from a backup?). Nothing was pushed; restore the newest copy of the keys directory`,
        );
      }
      for (const [user, at] of Object.entries(revocations)) entry.revocations[user] = Math.max(entry.revocations[user] ?? 0, at);
      const currentRevoked = entry.user !== undefined && revocations[entry.user] !== undefined;
      if (currentRevoked) {
        entry.user = undefined;
        // Its certificate goes with its key, as `keys revoke` does (the list is signed again below).
        if (entry.certificate) revokeCertificates.push({ node: entry.node, certificate: entry.certificate, at: new Date(now).toISOString() });
        entry.certificate = undefined;
      }
      said.push(
        `the hubs hold ${Object.keys(revocations).length} revocation(s) of node '${entry.node}' that ${dir} lacked (restored from a backup?): taken back into state.json${currentRevoked ? `; its current key is revoked there, so '${entry.node}' stays revoked (issue it again for a new key)` : ""}`,
      );
    }
    for (const [account] of lacking) {
      const entry = Object.values(state.nodes).find((candidate) => candidate.account === account);
      if (entry) jwts.set(account, await resignNodeAccount(dir, state, entry));
    }
    if (revokeCertificates.length > 0) signListAgain(dir, state, revokeCertificates, 0, now);
    writeKeyState(dir, state);
    return { jwts, said };
  });
}

/**
 * The hubs' list (`held`) against the one to publish (`offered`, signed in `dir`): when the hubs' names a
 * certificate `dir` lacks, or is at the same version or above while `offered` names one it lacks (a
 * directory restored from a backup: a list the hubs would keep, silently, over the new one), the two are
 * joined in `dir` above the hubs' version and signed again. Undefined when `offered` can go as it is.
 */
export async function takeBackCertificates(dir: string, held: Uint8Array, offered: Uint8Array, caCertPem: string): Promise<{ signed: Uint8Array; said: string } | undefined> {
  let hubs: RevocationList;
  try {
    hubs = verifyRevocationList(held, caCertPem);
  } catch {
    return undefined; // not the CA's: publishRevocationList replaces it (and says so)
  }
  const ours = verifyRevocationList(offered, caCertPem);
  const known = (list: RevocationList, certificate: string) => list.revoked.some((entry) => entry.certificate === certificate);
  // Not those that ended long ago: the directory dropped them on purpose (pruneEnded), and they are refused by their dates.
  const lacking = pruneEnded(hubs.revoked, Date.now()).filter((entry) => !known(ours, entry.certificate));
  const news = ours.revoked.filter((entry) => !known(hubs, entry.certificate));
  if (lacking.length === 0 && (news.length === 0 || ours.version > hubs.version)) return undefined;
  return withKeysLock(dir, async () => {
    const state = readKeyState(dir);
    for (const entry of Object.values(state.nodes)) {
      if (entry.certificate && lacking.some((revoked) => revoked.certificate === entry.certificate)) entry.certificate = undefined;
    }
    const signed = signListAgain(dir, state, [...lacking, ...ours.revoked], hubs.version);
    writeKeyState(dir, state);
    const nodes = [...new Set(lacking.map((entry) => entry.node))];
    return {
      signed,
      said:
        lacking.length > 0
          ? `the hubs' revocation list (version ${hubs.version}) names ${lacking.length} certificate(s) ${dir} lacked (of ${nodes.join(", ")}; restored from a backup?): taken back into state.json, the list signed again as version ${state.revocationVersion}`
          : `the hubs' revocation list is at version ${hubs.version}, above ${dir}'s (restored from a backup?): the list signed again as version ${state.revocationVersion}`,
    };
  });
}
