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
import { encodeNkey } from "./nkey-text.ts";

/** nkeys' prefix bytes: a seed (18 << 3) of a user (20 << 3). */
const seedPrefix = 18 << 3;
const userPrefix = 20 << 3;

export function derivedLocalSeed(nodeKeyPem: Uint8Array, node: string): string {
  const raw = new Uint8Array(hkdfSync("sha256", nodeKeyPem, "leafmesh local nkey", node, 32));
  return new TextDecoder().decode(encodeNkey([seedPrefix | (userPrefix >> 5), (userPrefix & 31) << 3], raw));
}
