/**
 * Ed25519 through OpenSSL (node:crypto) for the NATS libraries, instead of tweetnacl's JavaScript.
 *
 * Every NATS key is an Ed25519 key: @nats-io/nkeys signs and checks with tweetnacl, and everything above it goes
 * through there: a JWT's signature checked by @nats-io/jwt's `decode`, each claim signed by `encodeUser`, a
 * connection's nonce signed by nats.js's creds authenticator. In JavaScript, on a 2-core edge machine (2026-12-07),
 * a signature cost 9 ms, a check 22 ms, and nkeys derives the public key again (9 ms) before each of them. An agent
 * with keys spent ~100 ms of its start there, a `keys issue` most of its work. OpenSSL does each in ~0.1–0.4 ms.
 *
 * nkeys calls tweetnacl through its module object at each use (`nacl.sign.detached(…)`), so the three functions it
 * uses are replaced on that object, once per process (`useNativeEd25519`, from bin/leafmesh.js, the lab's node
 * runner and the test workers). Ed25519 is deterministic: the same seed and message give the same signature, byte
 * for byte (lib/ed25519.test.ts compares them with tweetnacl's own). The argument checks are tweetnacl's, with its
 * errors. One difference, on purpose: OpenSSL refuses a signature whose S is not below the group order (a
 * malleated one), which tweetnacl accepted; nats-server (Go's crypto/ed25519) refuses it too.
 */
import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { createRequire } from "node:module";

interface Tweetnacl {
  sign: {
    detached: ((message: Uint8Array, secretKey: Uint8Array) => Uint8Array) & { verify: (message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array) => boolean };
    keyPair: { fromSeed: (seed: Uint8Array) => { publicKey: Uint8Array; secretKey: Uint8Array } };
  };
}

// DER prefixes of an Ed25519 private key (PKCS #8) and public key (SPKI) around the raw 32 bytes (RFC 8410).
const privatePrefix = Buffer.from("302e020100300506032b657004220420", "hex");
const publicPrefix = Buffer.from("302a300506032b6570032100", "hex");

function checkArrayTypes(...values: unknown[]): void {
  for (const value of values) if (!(value instanceof Uint8Array)) throw new TypeError("unexpected type, use Uint8Array");
}

function privateKey(seed: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([privatePrefix, seed]), format: "der", type: "pkcs8" });
}

function rawPublicKey(key: KeyObject): Uint8Array {
  return new Uint8Array((createPublicKey(key).export({ format: "der", type: "spki" }) as Buffer).subarray(publicPrefix.length));
}

/** tweetnacl's sign.keyPair.fromSeed: the public key, and the 64-byte secret key (seed, then public key). */
export function keyPairFromSeed(seed: Uint8Array): { publicKey: Uint8Array; secretKey: Uint8Array } {
  checkArrayTypes(seed);
  if (seed.length !== 32) throw new Error("bad seed size");
  const publicKey = rawPublicKey(privateKey(seed));
  const secretKey = new Uint8Array(64);
  secretKey.set(seed);
  secretKey.set(publicKey, 32);
  return { publicKey, secretKey };
}

/** tweetnacl's sign.detached: the 64-byte signature of `message` by the secret key's seed. */
export function signDetached(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  checkArrayTypes(message, secretKey);
  if (secretKey.length !== 64) throw new Error("bad secret key size");
  return new Uint8Array(sign(null, message, privateKey(secretKey.subarray(0, 32))));
}

/** tweetnacl's sign.detached.verify: whether `signature` is the public key's over `message` (false for a key that is no point). */
export function verifyDetached(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean {
  checkArrayTypes(message, signature, publicKey);
  if (signature.length !== 64) throw new Error("bad signature size");
  if (publicKey.length !== 32) throw new Error("bad public key size");
  try {
    return verify(null, message, createPublicKey({ key: Buffer.concat([publicPrefix, publicKey]), format: "der", type: "spki" }), signature);
  } catch {
    return false; // bytes OpenSSL will not take as a public key
  }
}

let installed = false;

/** Replaces tweetnacl's Ed25519 functions, as the NATS libraries call them, with OpenSSL's (above). Once per process. */
export function useNativeEd25519(): void {
  if (installed) return;
  installed = true;
  // The copy @nats-io/nkeys loads (one in this tree: npm dedupes it).
  const nkeys = createRequire(import.meta.url).resolve("@nats-io/nkeys");
  const nacl = createRequire(nkeys)("tweetnacl") as Tweetnacl;
  const detached = (message: Uint8Array, secretKey: Uint8Array) => signDetached(message, secretKey);
  nacl.sign.detached = Object.assign(detached, { verify: verifyDetached });
  nacl.sign.keyPair.fromSeed = keyPairFromSeed;
}
