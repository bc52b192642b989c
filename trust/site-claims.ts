/**
 * How account updates pushed at the hubs reach a site's resolver, without giving the site a
 * system-account user at the hubs.
 *
 * A site's servers must hear `$SYS.REQ.CLAIMS.UPDATE` (a revocation pushed at the hubs cuts a
 * member off at the site within a second). They used to hold a user of the system account for
 * that, in the site bundle (`sys.creds`): with it, a stolen site bundle opened an ordinary client
 * connection to a hub, or a leaf connection speaking the protocol itself, as the system account,
 * and one `$JS.API.ACCOUNT.PURGE.<mesh account>` deleted every stream of the mesh (catalog, node
 * records, leases, revocations), besides reading every connection of every account
 * (`$SYS.REQ.SERVER.PING.CONNZ`). Measured on 2.9.10; the hub does not check a leaf's publishes.
 *
 * Now the system account exports the two claim-update subjects as a stream, and the account
 * `site-claims` imports them and nothing else (its `$JS.API.INFO` import from the mesh account
 * keeps nats-server from giving it the system account's JetStream API: claims.ts jetStreamInfoApi).
 * A site's system-account remote logs in as a leaf-only user of `site-claims`: the updates flow to
 * the site's own system account, and what the site's credentials send reaches nothing.
 *
 * ```ts
 * const changed = await ensureSiteClaimsAccount(dir);   // account JWTs to push (first use only)
 * const creds = await siteClaimsCreds(dir, "shop-7");   // the site bundle's claims.creds
 * ```
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createAccount, createUser, decode, encodeAccount, encodeUser, fmtCreds, type Account, type Import, type User } from "@nats-io/jwt";
import { algorithm, jetStreamInfoApi, noJetStream, service, systemAccountJwt, systemAccountName } from "./claims.ts";
import { signingKey } from "./signing-keys.ts";
import { readKeyState, writeKeyState, seedFile, readSeed } from "./key-store.ts";
import { writeFileWhole, writeSecretFile } from "./secret-files.ts";

export const siteClaimsAccountName = "site-claims";

/** The site bundle's file with its `site-claims` user (replacing `sys.creds`, a system-account user, of older bundles). */
export const siteClaimsCredsFile = "claims.creds";

/** What a pushed account update is published on (trust/push.ts uses the first; nats-server answers both). */
export const claimsUpdateSubjects = ["$SYS.REQ.CLAIMS.UPDATE", "$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE"] as const;


export async function siteClaimsAccountJwt(options: { operatorSeed: string; accountSeed: string; systemAccount: string; meshAccount: string }): Promise<string> {
  const imports: Import[] = [
    ...claimsUpdateSubjects.map((subject) => ({ name: subject, subject, type: "stream" as const, account: options.systemAccount })),
    service(jetStreamInfoApi, options.meshAccount) as Import,
  ];
  return encodeAccount(
    siteClaimsAccountName,
    signingKey(options.accountSeed),
    // One leaf per site server, for every site of the mesh (@default 1,024 leafs: 340 sites of three
    // servers); nothing subscribes here but those leafs (their resolvers' claim updates).
    { limits: { subs: 1024, data: -1, payload: -1, imports: 4, exports: 0, wildcards: true, conn: 0, leaf: 1024, ...noJetStream }, imports, exports: [] },
    { ...algorithm, signer: signingKey(options.operatorSeed) },
  );
}

/** A site's user of `site-claims`: a leaf connection only, taking the claim updates. */
export async function siteClaimsUserJwt(options: { site: string; userSeed: string; accountSeed: string }): Promise<string> {
  const subjects = [...claimsUpdateSubjects, "$LDS.>"];
  return encodeUser(
    `site-${options.site}-claims`,
    signingKey(options.userSeed),
    signingKey(options.accountSeed),
    { pub: { allow: subjects }, sub: { allow: subjects }, subs: 1024, data: -1, payload: -1, allowed_connection_types: ["LEAFNODE"] },
    algorithm,
  );
}

/** Signs the system account again (its exports), with `revoke` added to the revocations it has. */
async function resignSystemAccount(dir: string, revoke: string[] = []): Promise<string> {
  // One second ahead: a JWT issued in the same second as the revocation is covered too (as node revocations).
  const at = Math.floor(Date.now() / 1000) + 1;
  return resignSystemAccountWith(dir, Object.fromEntries(revoke.map((user) => [user, at])));
}

/** Signs the system account again with `revocations` (user → unix seconds) joined to those it has, the later time of each kept. */
export async function resignSystemAccountWith(dir: string, added: Record<string, number>): Promise<string> {
  const file = join(dir, "accounts", `${systemAccountName}.jwt`);
  const current = decode<Account>(readFileSync(file, "utf8").trim()).nats.revocations ?? {};
  const revocations = { ...current };
  for (const [user, at] of Object.entries(added)) revocations[user] = Math.max(revocations[user] ?? 0, at);
  const jwt = await systemAccountJwt({ operatorSeed: readSeed(join(dir, "operator.seed")), accountSeed: readSeed(seedFile(dir, systemAccountName)), revocations });
  writeFileWhole(file, jwt);
  return jwt;
}

/**
 * The system-account user of a site bundle an older leafmesh made (its `sys.creds`), revoked: it
 * would stay valid at the hubs after the bundle is issued again. Returns the system account's JWT
 * to push, or nothing when the bundle holds none.
 */
export async function revokeOldSiteSystemUser(dir: string, bundle: string): Promise<string[]> {
  const file = join(bundle, "sys.creds");
  if (!existsSync(file)) return [];
  const jwt = /-----BEGIN NATS USER JWT-----\s*(\S+)/.exec(readFileSync(file, "utf8"))?.[1];
  const user = jwt ? decode<User>(jwt).sub : undefined;
  const changed = user ? [await resignSystemAccount(dir, [user])] : [];
  rmSync(file, { force: true });
  return changed;
}

/** Makes `site-claims` on first use (and signs the system account again with its exports). Returns the account JWTs to push. */
export async function ensureSiteClaimsAccount(dir: string): Promise<string[]> {
  const state = readKeyState(dir);
  if (state.siteClaimsAccount && existsSync(seedFile(dir, siteClaimsAccountName))) return [];
  const operatorSeed = readSeed(join(dir, "operator.seed"));
  const account = createAccount();
  writeSecretFile(seedFile(dir, siteClaimsAccountName), new TextDecoder().decode(account.getSeed()));
  const system = await resignSystemAccount(dir);
  const jwt = await siteClaimsAccountJwt({ operatorSeed, accountSeed: readSeed(seedFile(dir, siteClaimsAccountName)), systemAccount: state.systemAccount, meshAccount: state.meshAccount });
  writeFileWhole(join(dir, "accounts", `${siteClaimsAccountName}.jwt`), jwt);
  writeKeyState(dir, { ...state, siteClaimsAccount: account.getPublicKey() });
  // The importer after the exporter: a hub that meets an import of an export it does not know yet drops it.
  return [system, jwt];
}

/** A new user of `site-claims` for `site`, as creds text. */
export async function siteClaimsCreds(dir: string, site: string): Promise<Uint8Array> {
  const user = createUser();
  const jwt = await siteClaimsUserJwt({ site, userSeed: new TextDecoder().decode(user.getSeed()), accountSeed: readSeed(seedFile(dir, siteClaimsAccountName)) });
  return fmtCreds(jwt, user);
}
