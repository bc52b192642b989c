/**
 * nkeys' key text: base32 of the prefix bytes, the key and its CRC-16 (XMODEM, little-endian), unpadded. Written
 * here because @nats-io/nkeys does not export its codec; trust/signing-keys.test.ts and trust/local-nkey.test.ts
 * hold the texts to what nkeys reads.
 *
 * ```ts
 * encodeNkey([20 << 3], publicKey);                                  // "U…": a user's public key
 * encodeNkey([(18 << 3) | ((20 << 3) >> 5), ((20 << 3) & 31) << 3], seed); // "SU…": a user's seed
 * ```
 */
const base32Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** The prefix an nkey text's character stands for (its position in base32): "U" is a user's. */
export function nkeyPrefixOf(character: string): number {
  return base32Alphabet.indexOf(character) << 3;
}

export function encodeNkey(prefix: readonly number[], key: Uint8Array): Uint8Array {
  const raw = new Uint8Array(prefix.length + key.byteLength + 2);
  raw.set(prefix, 0);
  raw.set(key, prefix.length);
  const checksum = crc16(raw.subarray(0, prefix.length + key.byteLength));
  raw[prefix.length + key.byteLength] = checksum & 0xff;
  raw[prefix.length + key.byteLength + 1] = checksum >> 8;
  let text = "";
  let bits = 0;
  let value = 0;
  for (const byte of raw) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      text += base32Alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) text += base32Alphabet[(value << (5 - bits)) & 31];
  return new TextEncoder().encode(text);
}

/** CRC-16/XMODEM (polynomial 0x1021, initial 0), as nkeys checks its keys with. */
function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}
