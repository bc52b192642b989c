import { randomBytes } from "node:crypto";
import { defaultCrypto } from "@chainsafe/libp2p-noise/crypto";
import { Uint8ArrayList } from "uint8arraylist";
import { describe, expect, it } from "vitest";
import { tunnelNoiseCrypto } from "./noise-crypto.ts";

const bytesOf = (data: Uint8Array | Uint8ArrayList) => Buffer.from(data instanceof Uint8Array ? data : data.subarray());

describe("the tunnel's noise crypto", () => {
  const nonce = randomBytes(12);
  const ad = randomBytes(32);

  it("produces and accepts exactly the library's ciphertext, for arrays and lists, small and large", () => {
    const key = new Uint8Array(randomBytes(32));
    for (const size of [0, 100, 1199, 1200, 65_519]) {
      const plaintext = randomBytes(size);
      const theirs = bytesOf(defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, key));
      expect(bytesOf(tunnelNoiseCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, key))).toEqual(theirs);
      const asList = new Uint8ArrayList(plaintext.subarray(0, size >> 1), plaintext.subarray(size >> 1));
      expect(bytesOf(tunnelNoiseCrypto.chaCha20Poly1305Encrypt(asList, nonce, ad, key))).toEqual(theirs);
      expect(bytesOf(tunnelNoiseCrypto.chaCha20Poly1305Decrypt(theirs, nonce, ad, key))).toEqual(plaintext);
      const cipherList = new Uint8ArrayList(theirs.subarray(0, 7), theirs.subarray(7));
      expect(bytesOf(tunnelNoiseCrypto.chaCha20Poly1305Decrypt(cipherList, nonce, ad, key))).toEqual(plaintext);
    }
  });

  it("refuses a tampered message", () => {
    const key = new Uint8Array(randomBytes(32));
    const sealed = bytesOf(tunnelNoiseCrypto.chaCha20Poly1305Encrypt(randomBytes(4096), nonce, ad, key));
    sealed[100] ^= 1;
    expect(() => tunnelNoiseCrypto.chaCha20Poly1305Decrypt(sealed, nonce, ad, key)).toThrow();
  });

  it("follows a key array whose bytes change (never a stale cached key)", () => {
    const key = new Uint8Array(randomBytes(32));
    const plaintext = randomBytes(4096);
    tunnelNoiseCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, key);
    key.set(randomBytes(32));
    const theirs = bytesOf(defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, key));
    expect(bytesOf(tunnelNoiseCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, key))).toEqual(theirs);
  });
});
