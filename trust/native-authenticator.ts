/**
 * nats.js authenticators for leafmesh's own clients that sign the server's nonce
 * through Node's Ed25519 (signing-keys.ts) with a key pair made once per seed.
 * nats.js's nkeyAuthenticator, jwtAuthenticator and credsAuthenticator derive the
 * key pair from the seed in JavaScript (tweetnacl) twice at every connect and
 * reconnect (once for the public key, once to sign): bench/herd's hub profile
 * showed ~5 s of CPU in it while 16 nodes joined, the trust auditor logging in
 * once per node. What they send is the same: the user's public key, the nonce's
 * signature in base64 (nkeys' `encode`, padded standard base64; nats-server also
 * takes base64url), and the JWT; Ed25519 is deterministic, so the very same bytes
 * (trust/native-authenticator.test.ts holds them to nats.js's).
 *
 * ```ts
 * connect({ servers, authenticator: credsFileAuthenticator(readFileSync(file), file) });
 * connect({ servers, authenticator: userJwtAuthenticator(jwt, seed) });
 * connect({ servers, authenticator: nkeySeedAuthenticator(localSeed) });
 * ```
 */
import type { Authenticator, JwtAuth, NKeyAuth } from "@nats-io/transport-node";
import { LeafmeshError, describeError } from "../lib/errors.ts";
import { signingKey } from "./signing-keys.ts";

/** Signs with the seed's key pair, made here once (a malformed seed throws now, not at each connect). */
export function nkeySeedAuthenticator(seed: string): Authenticator {
  const pair = signingKey(seed.trim());
  if (typeof pair === "string") throw new LeafmeshError("TRUST_FAILED", `an nkey seed starts with "S"; got a text starting with "${seed.trim().slice(0, 2)}"`);
  const nkey = pair.getPublicKey();
  return (nonce?: string): NKeyAuth => {
    // As nats.js: no nonce (a server that asked for none), no signature.
    const sig = nonce ? Buffer.from(pair.sign(new TextEncoder().encode(nonce))).toString("base64") : "";
    return { nkey, sig };
  };
}

/** A user JWT and its seed: what the server checks is the JWT, and the nonce signed by the JWT's subject. */
export function userJwtAuthenticator(jwt: string, seed: string): Authenticator {
  const signed = nkeySeedAuthenticator(seed);
  return (nonce?: string): JwtAuth => ({ jwt, ...(signed(nonce) as NKeyAuth) });
}

/**
 * A creds file's text (the user JWT, then its seed, each between dashed lines, as nats.js's
 * credsAuthenticator reads it); `source` names the file in the error when it holds neither.
 */
export function credsFileAuthenticator(creds: Uint8Array | string, source: string): Authenticator {
  const text = typeof creds === "string" ? creds : new TextDecoder().decode(creds);
  // nats.js's pattern: a block is a line of three or more dashes, the value, another such line.
  const blocks = /\s*(?:(?:[-]{3,}[^\n]*[-]{3,}\n)(.+)(?:\n\s*[-]{3,}[^\n]*[-]{3,}\n))/gi;
  const jwt = blocks.exec(text)?.[1]?.trim();
  const seed = jwt ? blocks.exec(text)?.[1]?.trim() : undefined;
  if (!jwt || !seed) throw new LeafmeshError("TRUST_FAILED", `${source} is not a creds file: it needs a user JWT and then its seed, each between '-----BEGIN …-----' and '------END …------' lines (copy it from the keys directory again)`);
  try {
    return userJwtAuthenticator(jwt, seed);
  } catch (cause) {
    throw new LeafmeshError("TRUST_FAILED", `${source}: its user seed does not decode (${describeError(cause)}); copy it from the keys directory again`, { cause });
  }
}
