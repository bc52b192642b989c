/**
 * The claims of enrolment by token (trust/enrolment.ts): the `enrol` account, a token's user and
 * the enrolling hub's user in it (pure: keys in, JWT text out, as trust/claims.ts).
 */
import { encodeAccount, encodeUser, type Import, type OperatorLimits } from "@nats-io/jwt";
import { signingKey } from "./signing-keys.ts";
import { enrolSubject } from "../bus/subjects.ts";
import { algorithm, jetStreamInfoApi, noJetStream, service } from "./claims.ts";

/** The account of joining nodes' enrolment users (one user per token): it reaches the enrolment request and nothing else. */
export const enrolAccountName = "enrol";

/**
 * The enrol account: joining nodes connect with a user of it (one per token, in the token), and the
 * enrolling hub answers them with a service user of it. Request and answer stay inside this account:
 * no import carries them, so pushing the mesh and node accounts (as every enrolment does) cannot
 * drop an answer on its way (through a service import of the mesh account it did: an answer in
 * flight while the mesh account was updated never arrived). Its limits bound a flood at the server
 * (enrolLimits). Its one import, `$JS.API.INFO` from the mesh account, is there for what it shuts
 * out (jetStreamInfoApi: otherwise nats-server 2.9.10 gives it the system account's `$JS.API.>`).
 */
export async function enrolAccountJwt(options: { operatorSeed: string; accountSeed: string; meshAccount: string; revocations?: Record<string, number> }): Promise<string> {
  const imports: Import[] = [service(jetStreamInfoApi, options.meshAccount) as Import];
  return encodeAccount(
    enrolAccountName,
    signingKey(options.accountSeed),
    { limits: { ...enrolLimits, ...noJetStream }, imports, exports: [], revocations: options.revocations ?? {} },
    { ...algorithm, signer: signingKey(options.operatorSeed) },
  );
}

/**
 * The enrol account's limits. @default 64 connections — a wave of nodes joining at once queues at
 * the hub (one enrolment at a time) and retries; more would only feed a flood. 16 KiB payloads: a
 * request (a certificate request, a public key, a token) is about 2 KiB.
 */
export const enrolLimits: OperatorLimits = { subs: 256, data: -1, payload: 16 * 1024, imports: 4, exports: 0, wildcards: true, conn: 64, leaf: 0 };

/** Where a token's users get their answers (their nats.js `inboxPrefix`): only that token's users may listen there. */
export function enrolInboxPrefix(token: string): string {
  return `_ENROL.${token}`;
}

/**
 * A token's user: may publish the enrolment request and nothing else, and listen under its token's
 * inbox, as an ordinary client (never a leaf), until the token expires. The hub enforces an ordinary
 * client's permissions (unlike a leaf's on 2.9.10, docs/nats-facts.md): it cannot listen to the
 * requests of others (their secrets) nor to other tokens' answers.
 */
export async function enrolUserJwt(options: { token: string; userSeed: string; accountSeed: string; expires: number }): Promise<string> {
  return encodeUser(
    `enrol-${options.token}`,
    signingKey(options.userSeed),
    signingKey(options.accountSeed),
    { pub: { allow: [enrolSubject] }, sub: { allow: [`${enrolInboxPrefix(options.token)}.>`] }, subs: 4, data: -1, payload: 16 * 1024, allowed_connection_types: ["STANDARD"] },
    { ...algorithm, exp: options.expires },
  );
}

/** The enrolling hub's own user in the enrol account: hears the requests, answers under the tokens' inboxes, from loopback only. */
export async function enrolServiceUserJwt(options: { userSeed: string; accountSeed: string }): Promise<string> {
  return encodeUser(
    "enrol-service",
    signingKey(options.userSeed),
    signingKey(options.accountSeed),
    { pub: { allow: ["_ENROL.>"] }, sub: { allow: [enrolSubject] }, subs: 4, data: -1, payload: 64 * 1024, src: ["127.0.0.1/32", "::1/128"], allowed_connection_types: ["STANDARD"] },
    algorithm,
  );
}
