/**
 * Noise's ChaCha20-Poly1305 for the tunnel's data path: @chainsafe/libp2p-noise's
 * own crypto, with two costs of its per-message node:crypto calls removed.
 *
 * - The key: `createCipheriv` with raw key bytes builds a KeyObject for every
 *   message (getKeyObjectSlots/getSlots were ~10% of a direct stream's CPU in a
 *   profile). A connection's cipher key is one Uint8Array for its whole life; its
 *   KeyObject is made once and reused while the bytes are unchanged.
 * - The copy: the library concatenates ciphertext and tag into a new buffer for
 *   each 64 KiB message; a list of the two is what its encoder appends anyway.
 *
 * Small messages (< 1200 bytes, yamux headers and window updates) stay on the
 * library's WebAssembly path, as it chooses.
 *
 * ```ts
 * noise({ crypto: tunnelNoiseCrypto, prologueBytes })
 * ```
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from "node:crypto";
import type { ICryptoInterface } from "@chainsafe/libp2p-noise";
import { defaultCrypto } from "@chainsafe/libp2p-noise/crypto";
import { Uint8ArrayList } from "uint8arraylist";

const algorithm = "chacha20-poly1305";
const tagLength = 16;
/** Below this, the library's WebAssembly implementation is faster (its own measurement). */
const smallMessage = 1200;

const keyObjects = new WeakMap<Uint8Array, { bytes: Buffer; key: KeyObject }>();

function keyObjectOf(k: Uint8Array): KeyObject {
  const cached = keyObjects.get(k);
  // Same array, same bytes: noise never rekeys in place, but a stale key would be silent corruption, so check.
  if (cached && cached.bytes.equals(k)) return cached.key;
  const bytes = Buffer.from(k);
  const key = createSecretKey(bytes);
  keyObjects.set(k, { bytes, key });
  return key;
}

export const tunnelNoiseCrypto: ICryptoInterface = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt(plaintext, nonce, ad, k) {
    if (plaintext.byteLength < smallMessage) return defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, k);
    const cipher = createCipheriv(algorithm, keyObjectOf(k), nonce, { authTagLength: tagLength });
    cipher.setAAD(ad, { plaintextLength: plaintext.byteLength });
    const output = new Uint8ArrayList();
    if (plaintext instanceof Uint8Array) output.append(cipher.update(plaintext));
    else for (const buffer of plaintext) output.append(cipher.update(buffer));
    const final = cipher.final();
    if (final.byteLength > 0) output.append(final);
    output.append(cipher.getAuthTag());
    return output;
  },
  chaCha20Poly1305Decrypt(ciphertext, nonce, ad, k, dst) {
    if (ciphertext.byteLength < smallMessage) return defaultCrypto.chaCha20Poly1305Decrypt(ciphertext, nonce, ad, k, dst);
    const decipher = createDecipheriv(algorithm, keyObjectOf(k), nonce, { authTagLength: tagLength });
    const text = ciphertext instanceof Uint8Array ? ciphertext.subarray(0, ciphertext.byteLength - tagLength) : ciphertext.sublist(0, ciphertext.byteLength - tagLength);
    decipher.setAAD(ad, { plaintextLength: text.byteLength });
    decipher.setAuthTag(ciphertext.subarray(ciphertext.byteLength - tagLength));
    if (text instanceof Uint8Array) {
      const output = decipher.update(text);
      const final = decipher.final();
      return final.byteLength > 0 ? Buffer.concat([output, final]) : output;
    }
    const output = new Uint8ArrayList();
    for (const buffer of text) output.append(decipher.update(buffer));
    const final = decipher.final();
    if (final.byteLength > 0) output.append(final);
    return output;
  },
};
