/**
 * Native signing keys (signing-keys.ts) are nkeys' key pairs, byte for byte:
 * the same public key text, the same Ed25519 signatures, and JWTs that
 * @nats-io/jwt (and so nats-server) accepts as signed by the issuer.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createAccount, createOperator, createUser, decode, encodeAccount, fromSeed, type Account } from "@nats-io/jwt";
import { signingKey } from "./signing-keys.ts";

const seedOf = (pair: { getSeed(): Uint8Array }) => new TextDecoder().decode(pair.getSeed());

describe("native signing keys", () => {
  it("give nkeys' public key and signatures for operator, account and user seeds", () => {
    for (const make of [createOperator, createAccount, createUser]) {
      for (let round = 0; round < 5; round++) {
        const seed = seedOf(make());
        const reference = fromSeed(new TextEncoder().encode(seed));
        const native = signingKey(seed);
        if (typeof native === "string") throw new Error("a seed gave no key pair");
        expect(native.getPublicKey()).toBe(reference.getPublicKey());
        const message = randomBytes(200);
        const signature = native.sign(message);
        expect(Buffer.from(signature).toString("hex")).toBe(Buffer.from(reference.sign(message)).toString("hex"));
        expect(reference.verify(message, signature)).toBe(true);
        expect(native.verify(message, reference.sign(message))).toBe(true);
        expect(native.verify(randomBytes(200), signature)).toBe(false);
        expect(Buffer.from(native.getPrivateKey()).toString()).toBe(Buffer.from(reference.getPrivateKey()).toString());
      }
    }
  });

  it("passes public keys on as they are and refuses a malformed seed", () => {
    const account = createAccount().getPublicKey();
    expect(signingKey(account)).toBe(account);
    expect(() => signingKey("SAnotaseed")).toThrow();
  });

  it("signs an account JWT that @nats-io/jwt verifies as the operator's", async () => {
    const operator = seedOf(createOperator());
    const account = seedOf(createAccount());
    const jwt = await encodeAccount("shop", signingKey(account), { limits: { conn: -1 } }, { signer: signingKey(operator) });
    const claims = decode<Account>(jwt);
    expect(claims.iss).toBe(fromSeed(new TextEncoder().encode(operator)).getPublicKey());
    expect(claims.sub).toBe(fromSeed(new TextEncoder().encode(account)).getPublicKey());
    // A byte changed in the payload: the signature no longer holds.
    const [header, payload, signature] = jwt.split(".");
    const forged = `${header}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload, "base64url").toString()), name: "other" })).toString("base64url")}.${signature}`;
    expect(() => decode(forged)).toThrow(/sig/);
  });
});
