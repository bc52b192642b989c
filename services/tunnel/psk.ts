/**
 * The mesh's pre-shared key: parsed from the swarm.key format, bound into every
 * noise handshake as its prologue (host.ts), and published as a salted
 * fingerprint in the node record, so that a peer with another key is told
 * "the keys differ" instead of seeing handshakes fail. The LAN discovery's mDNS
 * service is named after the key too, so meshes sharing a LAN never see each other.
 *
 * ```ts
 * const psk = parsePsk(readFileSync("swarm.key"));
 * noise({ prologueBytes: pskPrologue(psk) });
 * record.pskFingerprint = pskFingerprint(psk);
 * ```
 */
import { createHash } from "node:crypto";
import { LeafmeshError } from "../../lib/errors.ts";

/** Parses a PSK in the go-ipfs swarm.key format (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits). */
export function parsePsk(psk: string | Uint8Array): Uint8Array {
  const text = typeof psk === "string" ? psk : new TextDecoder().decode(psk);
  const lines = text.trim().split(/\r?\n/);
  if (lines.length !== 3 || lines[0] !== "/key/swarm/psk/1.0.0/" || lines[1] !== "/base16/" || !/^[0-9a-fA-F]{64}$/.test(lines[2])) {
    throw new LeafmeshError(
      "CONFIG_INVALID",
      "tunnel psk: expected the swarm.key format: three lines '/key/swarm/psk/1.0.0/', '/base16/' and 64 hex digits (the mesh's swarm.key, made by `leafmesh keys init` and copied into every node's bundle)",
    );
  }
  return new TextEncoder().encode(`${lines.join("\n")}\n`);
}

/** The noise prologue made of the PSK: peers with another key fail the handshake. */
export function pskPrologue(psk: Uint8Array): Uint8Array {
  return createHash("sha256").update("leafmesh noise prologue\0").update(psk).digest();
}

/** A salted hash of the PSK, published in the node record: lets peers say "the keys differ". */
export function pskFingerprint(psk: Uint8Array): string {
  return createHash("sha256").update("leafmesh psk fingerprint\0").update(psk).digest("hex").slice(0, 16);
}

/**
 * The mDNS service the mesh's agents query and answer on the LAN, named after its key: agents of another mesh
 * on the same LAN (a second line in the factory, a staging mesh, another test) are never found, so never dialled
 * (each dial would be a failed handshake, repeated at every query). 40 bits of a salted hash: it tells nothing of
 * the key, and a DNS-SD service name holds at most 15 characters.
 */
export function lanServiceTag(psk: Uint8Array): string {
  return `_lm-${createHash("sha256").update("leafmesh mdns service\0").update(psk).digest("hex").slice(0, 10)}._udp.local`;
}
