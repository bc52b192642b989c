/**
 * The claims of account JWTs, read at the cost of what is new. @nats-io/jwt's `decode` checks each
 * JWT's signature in JavaScript (tweetnacl, 8–15 ms here), and the hub's revocation checks read the
 * same JWTs again and again: every enrolment re-signs every account and pushes them, and before
 * each push the hub compares what its resolver holds with what it offers (trust/push.ts), so 16
 * joins at once cost the hub's event loop seconds of decoding JWTs it had signed itself or read
 * before (bench/herd, docs/limits.md "(b'')").
 *
 * Two doors, by where the text comes from:
 * - `claimsSignedHere`: a JWT this process or its keys directory signed (the operator's seed is in
 *   that directory: whoever can change its JWTs can sign new ones). Read, not checked.
 * - `verifiedClaims`: anything else (what a server's resolver holds, a stored file). Checked, once
 *   per distinct text: a text equal to one already read is the same claims.
 *
 * ```ts
 * const account = claimsSignedHere(jwtJustSigned).sub;
 * const revocations = verifiedClaims<Account>(heldByTheHub).nats.revocations ?? {};
 * ```
 */
import { decode, type ClaimsData } from "@nats-io/jwt";
import { LeafmeshError } from "../lib/errors.ts";

/**
 * @default 4096 JWT texts, 32 MiB of them — a push reads each account's JWT twice (the hub's, which is the one pushed
 * before, and the offered one): two per account keeps a mesh of a few hundred nodes in hand (a node account imports
 * from every other node: ~40 KiB each at 200 nodes). Past either bound the oldest texts are let go, and read (and
 * checked) again when they come back.
 */
export const rememberedJwts = { count: 4_096, chars: 32 * 1024 * 1024 };

const known = new Map<string, ClaimsData<unknown>>();
let knownChars = 0;

/** The claims of a JWT from outside this process (a server, a file it did not write), its signature checked once per text. */
export function verifiedClaims<T = unknown>(jwt: string): ClaimsData<T> {
  const seen = recall(jwt);
  if (seen) return seen as ClaimsData<T>;
  return remember(jwt, decode<T>(jwt));
}

/**
 * The claims of a JWT this process or its keys directory signed, read without checking the signature
 * it made. Throws when the text is no JWT with a subject (a keys directory's file damaged). `keep: false`
 * for a JWT read once and never again (one of the many an enrolment batch signs on its way to the last).
 */
export function claimsSignedHere<T = unknown>(jwt: string, options: { keep?: boolean } = {}): ClaimsData<T> {
  const seen = recall(jwt);
  if (seen) return seen as ClaimsData<T>;
  const payload = jwt.split(".")[1];
  let claims: ClaimsData<T> | undefined;
  try {
    claims = payload ? (JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as ClaimsData<T>) : undefined;
  } catch (cause) {
    throw new LeafmeshError("TRUST_FAILED", `a JWT signed with the keys directory does not read as one (${String(cause)}): ${jwt.slice(0, 40)}…`, { cause });
  }
  if (typeof claims?.sub !== "string") throw new LeafmeshError("TRUST_FAILED", `a JWT signed with the keys directory has no subject: ${jwt.slice(0, 40)}…`);
  return options.keep === false ? claims : remember(jwt, claims);
}

function recall(jwt: string): ClaimsData<unknown> | undefined {
  const claims = known.get(jwt);
  if (claims) {
    // Used again: the newest at the end, so that the oldest is the one let go.
    known.delete(jwt);
    known.set(jwt, claims);
  }
  return claims;
}

function remember<T>(jwt: string, claims: ClaimsData<T>): ClaimsData<T> {
  // Shared by every reader of the same text: none may change it.
  deepFreeze(claims);
  known.set(jwt, claims);
  knownChars += jwt.length;
  while (known.size > rememberedJwts.count || (knownChars > rememberedJwts.chars && known.size > 1)) {
    const oldest = known.keys().next().value!;
    known.delete(oldest);
    knownChars -= oldest.length;
  }
  return claims;
}

function deepFreeze(value: unknown): void {
  if (value === null || typeof value !== "object" || Object.isFrozen(value)) return;
  Object.freeze(value);
  for (const inner of Object.values(value)) deepFreeze(inner);
}
