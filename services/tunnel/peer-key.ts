/**
 * The node's libp2p key, kept in its data dir (issue 15, item 10). The peer id
 * is the hash of this key, and every peer binds its path to a node to that peer
 * id (paths.ts; relayed and punched connections must reach it): a key made anew
 * at every start left the node unreachable after a restart for as long as its
 * peers held the old id. So the key is made once (Ed25519, libp2p's protobuf
 * encoding, written 0600 in one step: trust/secret-files.ts), and read back at
 * every start. A file that is there but unreadable, too open or not a key is
 * an error that says so: silently making a new key would change the node's
 * identity behind the operator's back.
 *
 * ```ts
 * const privateKey = await loadOrCreatePeerKey(join(dataDir, "tunnel-peer.key"));
 * ```
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import type { PrivateKey } from "@libp2p/interface";
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from "@libp2p/crypto/keys";
import { describeError, LeafmeshError } from "../../lib/errors.ts";
import { checkSecretFilePermissions, writeSecretFile } from "../../trust/secret-files.ts";
import { makeDirectories } from "../../lib/make-dirs.ts";

/** The key in `file`, made there first when there is none; throws CONFIG_INVALID when the file holds no key. */
export async function loadOrCreatePeerKey(file: string): Promise<PrivateKey> {
  if (!existsSync(file)) {
    const key = await generateKeyPair("Ed25519");
    makeDirectories(dirname(file));
    writeSecretFile(file, privateKeyToProtobuf(key));
    return key;
  }
  checkSecretFilePermissions(file);
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (cause) {
    throw new LeafmeshError("CONFIG_INVALID", `cannot read the tunnel's libp2p key ${file}: ${describeError(cause)}`, { cause });
  }
  try {
    return privateKeyFromProtobuf(bytes);
  } catch (cause) {
    throw new LeafmeshError(
      "CONFIG_INVALID",
      `${file} is not a libp2p private key (${describeError(cause)}): restore it from a backup to keep this node's peer id, or delete it to make a new key (peers follow the new peer id from the node's record)`,
      { cause },
    );
  }
}
