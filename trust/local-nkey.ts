/**
 * The node's local nkey (the one user of the agent's own nats-server, and of `leafmesh status` on the node) derived
 * from the node's TLS key: HKDF-SHA256 over node.key, for this node's name, as an nkeys user seed. Nothing is
 * written: a bundle on a read-only mount (a Kubernetes Secret volume, a bind mount `ro`), or one the agent's user
 * may only read, loads as well as a writable one, and the agent and `status` beside it derive the same key. A
 * `local.nk` an earlier leafmesh wrote into the bundle is still used (trust/security.ts).
 *
 * Whoever can read node.key can already act as the node on the whole mesh; the local key it also gives is the
 * lesser right (this node's own server, with the node's own limits).
 *
 * ```ts
 * const seed = derivedLocalSeed(readFileSync("nodes/edge-a/node.key"), "edge-a"); // "SU…", 58 characters
 * ```
 */
import { hkdfSync } from "node:crypto";

const base32Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function base32(bytes: Uint8Array): string {
  let out = "";
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += base32Alphabet[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += base32Alphabet[(buffer << (5 - bits)) & 31];
  return out;
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

/** nkeys' prefix bytes: a seed (18 << 3) of a user (20 << 3). */
const seedPrefix = 18 << 3;
const userPrefix = 20 << 3;

export function derivedLocalSeed(nodeKeyPem: Uint8Array, node: string): string {
  const raw = new Uint8Array(hkdfSync("sha256", nodeKeyPem, "leafmesh local nkey", node, 32));
  const body = new Uint8Array(2 + raw.length);
  body[0] = seedPrefix | (userPrefix >> 5);
  body[1] = (userPrefix & 31) << 3;
  body.set(raw, 2);
  const crc = crc16(body);
  const whole = new Uint8Array(body.length + 2);
  whole.set(body);
  whole[body.length] = crc & 0xff;
  whole[body.length + 1] = crc >> 8;
  return base32(whole);
}
