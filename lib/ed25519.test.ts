/**
 * OpenSSL's Ed25519 in tweetnacl's place (lib/ed25519.ts): the same keys and signatures, byte for byte, as
 * tweetnacl's own JavaScript (a fresh copy of nacl-fast.js, loaded here apart from the one the NATS libraries use),
 * the same answers to damaged input, the same errors for wrong types and sizes; and the NATS libraries that call it
 * (nkeys, jwt's decode and encode) sign and check through it.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import { createAccount, createUser, decode, encodeUser, fromSeed } from "@nats-io/jwt";
import { keyPairFromSeed, signDetached, useNativeEd25519, verifyDetached } from "./ed25519.ts";

const require = createRequire(import.meta.url);
const naclFile = require.resolve("tweetnacl/nacl-fast.js", { paths: [require.resolve("@nats-io/nkeys")] });

/** tweetnacl as published, untouched by useNativeEd25519. */
function pristineTweetnacl() {
  const module = { exports: {} as Record<string, never> };
  new Function("module", "require", readFileSync(naclFile, "utf8"))(module, require);
  return module.exports as unknown as {
    sign: {
      detached: ((message: Uint8Array, secretKey: Uint8Array) => Uint8Array) & { verify: (message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array) => boolean };
      keyPair: { fromSeed: (seed: Uint8Array) => { publicKey: Uint8Array; secretKey: Uint8Array } };
    };
  };
}

const nacl = pristineTweetnacl();
const flip = (bytes: Uint8Array, index: number) => {
  const copy = Uint8Array.from(bytes);
  copy[index % copy.length]! ^= 0x01;
  return copy;
};

describe("Ed25519 through node:crypto, against tweetnacl's own", () => {
  it("derives the same key pairs and signatures, and checks them the same way, damaged or not", () => {
    for (let round = 0; round < 24; round++) {
      const seed = new Uint8Array(randomBytes(32));
      const message = new Uint8Array(randomBytes(round * 37)); // from empty to ~850 bytes (a JWT's size)
      const ours = keyPairFromSeed(seed);
      const theirs = nacl.sign.keyPair.fromSeed(seed);
      expect(ours.publicKey).toEqual(theirs.publicKey);
      expect(ours.secretKey).toEqual(theirs.secretKey);
      const signature = signDetached(message, ours.secretKey);
      expect(signature).toBeInstanceOf(Uint8Array);
      expect(signature).toEqual(nacl.sign.detached(message, theirs.secretKey));
      expect(verifyDetached(message, signature, ours.publicKey)).toBe(true);
      const damaged: [Uint8Array, Uint8Array, Uint8Array][] = [
        [message.length ? flip(message, round) : Uint8Array.of(0), signature, ours.publicKey],
        [message, flip(signature, round * 5), ours.publicKey],
        [message, signature, flip(ours.publicKey, round * 3)],
      ];
      for (const [m, s, k] of damaged) {
        expect(verifyDetached(m, s, k)).toBe(nacl.sign.detached.verify(m, s, k));
        expect(verifyDetached(m, s, k)).toBe(false);
      }
    }
  });

  it("says false, as tweetnacl does, for a public key that is no point of the curve", () => {
    const message = new Uint8Array(randomBytes(64));
    const signature = signDetached(message, keyPairFromSeed(new Uint8Array(32)).secretKey);
    // y = 2 has no x on edwards25519 (2² − 1 over 1 + d·2² is no square mod p).
    const noPoint = new Uint8Array(32);
    noPoint[0] = 2;
    expect(nacl.sign.detached.verify(message, signature, noPoint)).toBe(false);
    expect(verifyDetached(message, signature, noPoint)).toBe(false);
  });

  it("refuses wrong types and sizes with tweetnacl's own errors", () => {
    const bytes = (n: number) => new Uint8Array(n);
    const cases: [() => unknown, () => unknown][] = [
      [() => keyPairFromSeed(bytes(31)), () => nacl.sign.keyPair.fromSeed(bytes(31))],
      [() => keyPairFromSeed("seed" as unknown as Uint8Array), () => nacl.sign.keyPair.fromSeed("seed" as unknown as Uint8Array)],
      [() => signDetached(bytes(3), bytes(32)), () => nacl.sign.detached(bytes(3), bytes(32))],
      [() => signDetached([1, 2] as unknown as Uint8Array, bytes(64)), () => nacl.sign.detached([1, 2] as unknown as Uint8Array, bytes(64))],
      [() => verifyDetached(bytes(3), bytes(63), bytes(32)), () => nacl.sign.detached.verify(bytes(3), bytes(63), bytes(32))],
      [() => verifyDetached(bytes(3), bytes(64), bytes(33)), () => nacl.sign.detached.verify(bytes(3), bytes(64), bytes(33))],
    ];
    for (const [ours, theirs] of cases) {
      let expected: Error | undefined;
      try {
        theirs();
      } catch (error) {
        expected = error as Error;
      }
      expect(expected).toBeInstanceOf(Error);
      expect(ours).toThrow(expected!.message);
      expect(() => ours()).toThrow(expected!.constructor as ErrorConstructor);
    }
  });

  it("refuses a malleated signature (S + the group order), which tweetnacl took: as nats-server does", () => {
    const { secretKey, publicKey } = keyPairFromSeed(new Uint8Array(randomBytes(32)));
    const message = new Uint8Array(randomBytes(100));
    const signature = signDetached(message, secretKey);
    // S (little-endian, bytes 32–63) plus L = 2^252 + 27742317777372353535851937790883648493: the same point equation holds.
    const order = Buffer.from("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010", "hex");
    const malleated = Uint8Array.from(signature);
    let carry = 0;
    for (let i = 0; i < 32; i++) {
      const sum = malleated[32 + i]! + order[i]! + carry;
      malleated[32 + i] = sum & 0xff;
      carry = sum >> 8;
    }
    expect(carry).toBe(0); // S < L < 2^253: S + L still fits in 256 bits
    expect(nacl.sign.detached.verify(message, malleated, publicKey)).toBe(true);
    expect(verifyDetached(message, malleated, publicKey)).toBe(false);
  });

  it("is what nkeys and jwt call once installed: claims signed and checked through it, a damaged one refused", async () => {
    useNativeEd25519();
    const naclInUse = createRequire(require.resolve("@nats-io/nkeys"))("tweetnacl") as ReturnType<typeof pristineTweetnacl>;
    expect(naclInUse.sign.keyPair.fromSeed).toBe(keyPairFromSeed);
    expect(naclInUse.sign.detached.verify).toBe(verifyDetached);
    useNativeEd25519(); // twice: still the same functions
    expect(naclInUse.sign.detached.verify).toBe(verifyDetached);

    const account = createAccount();
    const user = createUser();
    const jwt = await encodeUser("edge-a", user, account);
    expect(decode(jwt).sub).toBe(user.getPublicKey());
    // The same signature tweetnacl makes from the same seed.
    const payload = new TextEncoder().encode(jwt.split(".").slice(0, 2).join("."));
    const accountSeed = fromSeed(account.getSeed()) as unknown as { getRawSeed(): Uint8Array }; // nkeys' KP has it; its KeyPair type does not say so
    const accountKey = nacl.sign.keyPair.fromSeed(accountSeed.getRawSeed()).publicKey;
    expect(nacl.sign.detached.verify(payload, new Uint8Array(Buffer.from(jwt.split(".")[2]!, "base64url")), accountKey)).toBe(true);
    const [head, body, signature] = jwt.split(".");
    const tampered = `${head}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(body!, "base64url").toString()), name: "edge-b" })).toString("base64url")}.${signature}`;
    expect(() => decode(tampered)).toThrow("sig verification failed");
  });
});
