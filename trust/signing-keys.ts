/**
 * NKey pairs that sign through Node's own Ed25519 (OpenSSL) instead of
 * tweetnacl's JavaScript. @nats-io/nkeys derives the key pair from the seed
 * again at every call (a scalar multiplication in JavaScript), and
 * @nats-io/jwt makes four to six such calls per JWT: on this project's machine
 * re-signing the mesh's accounts for one new node took ~0.1 s per node already
 * in the mesh (6 s at 60 nodes, CPU profile: 85 % tweetnacl), so joins queued
 * behind each other past their 30 s timeout from a few dozen nodes on. Ed25519
 * is deterministic: the signatures are the same bytes.
 *
 * ```ts
 * await encodeAccount(name, signingKey(accountSeed), claims, { ...algorithm, signer: signingKey(operatorSeed) });
 * ```
 */
import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { fromSeed, type KeyPair } from "@nats-io/jwt";
import { encodeNkey, nkeyPrefixOf } from "./nkey-text.ts";

/** nkeys' prefix byte of a private key ("P…"). */
const privatePrefix = 15 << 3;
/** The DER of an Ed25519 private key (PKCS #8) before its 32-byte seed. */
const ed25519Pkcs8Prefix = Buffer.from("302e020100300506032b657004220420", "hex");

class NativeKeyPair implements KeyPair {
  readonly #seed: Uint8Array;
  readonly #publicKey: string;
  readonly #privateKey: KeyObject;
  readonly #verifyKey: KeyObject;
  /** nkeys' private key text ("P…": the seed and the public key), which @nats-io/jwt asks for at every signing. */
  readonly #privateText: Uint8Array;

  constructor(seed: string) {
    this.#seed = new TextEncoder().encode(seed);
    // Checks the seed's encoding and checksum (no curve arithmetic): a malformed seed throws here as with nkeys.
    const raw = (fromSeed(this.#seed) as unknown as { getRawSeed(): Uint8Array }).getRawSeed();
    this.#privateKey = createPrivateKey({ key: Buffer.concat([ed25519Pkcs8Prefix, raw]), format: "der", type: "pkcs8" });
    this.#verifyKey = createPublicKey(this.#privateKey);
    const rawPublic = Buffer.from(this.#verifyKey.export({ format: "jwk" }).x!, "base64url");
    // The key's role is the seed's second character (SA… account, SO… operator, SU… user): its prefix byte.
    this.#publicKey = new TextDecoder().decode(encodeNkey([nkeyPrefixOf(seed.charAt(1))], rawPublic));
    this.#privateText = encodeNkey([privatePrefix], Buffer.concat([raw, rawPublic]));
  }

  getPublicKey(): string {
    return this.#publicKey;
  }

  getPrivateKey(): Uint8Array {
    return this.#privateText;
  }

  getSeed(): Uint8Array {
    return this.#seed;
  }

  sign(input: Uint8Array): Uint8Array {
    return new Uint8Array(sign(null, input, this.#privateKey));
  }

  verify(input: Uint8Array, signature: Uint8Array): boolean {
    return verify(null, input, this.#verifyKey, signature);
  }

  clear(): void {
    // Seeds live in the keys directory's files; nothing here outlives the process.
  }

  seal(): Uint8Array {
    throw new Error("signing keys do not seal");
  }

  open(): Uint8Array | null {
    throw new Error("signing keys do not open");
  }
}

const cache = new Map<string, KeyPair>();

/** The key pair of an nkey seed ("S…"), made once per process; anything else (a public key) is passed on as it is. */
export function signingKey(seedOrPublic: string): KeyPair | string {
  if (!seedOrPublic.startsWith("S")) return seedOrPublic;
  let pair = cache.get(seedOrPublic);
  if (!pair) {
    // Bounded: one per account and operator of the mesh in practice; a process signing for more starts again.
    if (cache.size >= 100_000) cache.clear();
    pair = new NativeKeyPair(seedOrPublic);
    cache.set(seedOrPublic, pair);
  }
  return pair;
}
