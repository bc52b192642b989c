/**
 * A revoked join token stays revoked at the hubs. Its state in state.json alone did not last: a keys
 * directory restored from a backup made before the revocation had the token active again, and the
 * enrolling hub enrolled nodes with it. So revoking a token also revokes its NATS user in the `enrol`
 * account (the account JWT's `revocations`, signed in the keys directory and pushed with `--hub`), as
 * revoking a node does in the node's account. The hubs' full resolvers keep that JWT; a hub restarted
 * from an older directory preloads the newer JWT it stored (trust/security.ts newestAccountJwts), so the
 * token's user is refused at the door ("Authorization Violation", and the hub's auditor says which token
 * and when). The enrolling hub pushes its directory's enrol account at start through the push that keeps
 * the hubs' revocations (trust/push.ts): a revocation the hubs hold and the directory lacks is taken back
 * into state.json (the token shows as revoked in `keys tokens` again) and said as an error.
 *
 * ```ts
 * const jwt = await signEnrolAccount(dir, state);                // after marking tokens revoked in `state`
 * const taken = takeBackTokenRevocations(state, revocations);    // tokens the hubs revoked and `state` lacked
 * ```
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { decode, type Account, type User } from "@nats-io/jwt";
import { enrolAccountJwt, enrolAccountName } from "./enrolment-claims.ts";
import { explainUserKey, jwtFile, readKeyState, readSeed, seedFile, type KeyState } from "./key-store.ts";
import { writeFileWhole } from "./secret-files.ts";
import type { TokenState } from "./tokens.ts";

/**
 * The revocation time of a token's user (seconds): one second past its revocation, so that a JWT issued in that
 * second is covered too (a revocation covers JWTs issued at or before it).
 */
export function tokenRevocationTime(token: TokenState): number | undefined {
  return token.revokedAt ? Math.floor(Date.parse(token.revokedAt) / 1000) + 1 : undefined;
}

/** The enrol account's revocations as state.json has them: every revoked token's user. */
export function enrolRevocations(state: KeyState, kept: Record<string, number> = {}): Record<string, number> {
  const revocations: Record<string, number> = { ...kept };
  for (const token of Object.values(state.tokens ?? {})) {
    const at = tokenRevocationTime(token);
    if (at !== undefined) revocations[token.user] = Math.max(revocations[token.user] ?? 0, at);
  }
  return revocations;
}

/** The revocations of the enrol account JWT in `dir` (none when there is none). */
export function storedEnrolRevocations(dir: string): Record<string, number> {
  const file = jwtFile(dir, enrolAccountName);
  if (!existsSync(file)) return {};
  return decode<Account>(readFileSync(file, "utf8").trim()).nats.revocations ?? {};
}

/**
 * Signs the enrol account again with every revoked token's user (and the revocations it already held, and `kept`:
 * revocations the hubs hold), writes it, returns the JWT.
 */
export async function signEnrolAccount(dir: string, state: KeyState, kept: Record<string, number> = {}): Promise<string> {
  const jwt = await enrolAccountJwt({
    operatorSeed: readSeed(join(dir, "operator.seed")),
    accountSeed: readSeed(seedFile(dir, enrolAccountName)),
    meshAccount: state.meshAccount,
    revocations: enrolRevocations(state, { ...storedEnrolRevocations(dir), ...kept }),
  });
  writeFileWhole(jwtFile(dir, enrolAccountName), jwt);
  return jwt;
}

/** Whether the enrol account JWT in `dir` lacks a revoked token's user (a token revoked by an older leafmesh, in state.json only). */
export function enrolAccountLacksRevocations(dir: string, state: KeyState): boolean {
  const stored = storedEnrolRevocations(dir);
  return Object.entries(enrolRevocations(state)).some(([user, at]) => (stored[user] ?? 0) < at);
}

/**
 * Marks the tokens whose users `revocations` (user → seconds, from the hubs' enrol account) names as revoked in
 * `state` (changed in place, not written). Returns one sentence per token taken back, and the users no token of
 * `state` has (kept in the account as they are).
 */
export function takeBackTokenRevocations(state: KeyState, revocations: Record<string, number>, dir: string): string[] {
  const said: string[] = [];
  for (const [user, at] of Object.entries(revocations)) {
    const token = Object.values(state.tokens ?? {}).find((candidate) => candidate.user === user);
    if (!token || token.revokedAt) continue;
    token.revokedAt = new Date((at - 1) * 1000).toISOString();
    said.push(
      `the hubs hold the revocation of join token ${token.id} (revoked at ${token.revokedAt}) that ${dir} lacked (restored from a backup?): taken back into state.json; the token enrols nothing, and its credentials are refused at the hubs`,
    );
  }
  return said;
}

/**
 * Why the hub refused a token's user, from the keys directory and the enrol account JWT the hub's resolver holds
 * (`heldRevocations`): the joining node itself hears only "Authorization Violation".
 */
export function explainTokenUser(state: KeyState, claims: { sub: string; iat: number; exp?: number; name: string }, now: number, heldRevocations: Record<string, number> = {}): string {
  const token = Object.values(state.tokens ?? {}).find((candidate) => candidate.user === claims.sub);
  const name = token ? `join token ${token.id}` : `join token user '${claims.name}' (no token of this keys directory)`;
  const revokedAt = Math.max(tokenRevocationTime(token ?? ({} as TokenState)) ?? 0, heldRevocations[claims.sub] ?? 0, heldRevocations["*"] ?? 0);
  if (revokedAt > 0 && claims.iat <= revokedAt) {
    const pushedOnly = token && !token.revokedAt ? " (pushed to this hub; its keys directory predates the revocation)" : "";
    return `credentials of ${name} (user ${claims.sub}) were revoked at ${new Date((revokedAt - 1) * 1000).toISOString()}${pushedOnly}: that token enrols nothing`;
  }
  if (claims.exp && claims.exp * 1000 <= now) return `credentials of ${name} expired at ${new Date(claims.exp * 1000).toISOString()}`;
  return `credentials of ${name} are valid in this keys directory, yet the server refused them (too many joining connections at once, or keys older than the mesh's)`;
}

/**
 * Why the hub refused a login whose user JWT is `userJwt`: a join token's user (the enrol account) is explained by
 * explainTokenUser, anything else by explainUserKey (node credentials).
 */
export function explainRefusedUser(dir: string, userJwt: string, now: () => number = Date.now, resolverDir?: string): string {
  const claims = decode<User>(userJwt);
  const state = readKeyState(dir);
  if (!state.enrolAccount || claims.iss !== state.enrolAccount) return explainUserKey(dir, userJwt, now, resolverDir);
  const heldFile = resolverDir ? join(resolverDir, `${state.enrolAccount}.jwt`) : undefined;
  let held: Record<string, number> = {};
  try {
    if (heldFile && existsSync(heldFile)) held = decode<Account>(readFileSync(heldFile, "utf8").trim()).nats.revocations ?? {};
  } catch {
    held = {}; // not a JWT: the keys directory's word stands
  }
  return explainTokenUser(state, claims, now(), held);
}
