/**
 * Connections left behind by a network that changed under the mesh: this host's address replaced
 * (a new DHCP lease, a roam to another segment, network-watch.ts) or a peer's (it connects again,
 * from its new address or through its NAT's new public one). Neither end of a TCP connection is
 * told: the side that lost its address can send nothing more, the other waits for packets to an
 * address nobody has. libp2p's connection monitor found them 10–20 s later, TCP keepalive on TLS
 * streams 15 s later; meanwhile new streams could pick the dead connection, and the record named an
 * address that was gone. Here a sign of change gets the doubted connections pinged at once
 * (connections.ts abortUnanswering), the dead ones aborted (their paths fall back and are found
 * again, paths.ts), and TLS streams on the same sockets reset (peer-liveness.ts).
 *
 * ```ts
 * const watch = watchHostAddresses({ clock, rooms: () => ({ connections, liveness, directory, paths, punches, log }) }); // watch.stop() ends it
 * await followAddressChange({ gone: ["198.18.65.11"], added: ["198.18.65.21"] }, { connections, liveness, directory, punches, log });
 * void doubtOlderConnections(newConnection, { connections, liveness, nodeOf });
 * ```
 */
import type { Connection } from "@libp2p/interface";
import type { Clock } from "../../lib/clock.ts";
import { describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import type { PathConnections } from "./connections.ts";
import { NetworkWatch, type AddressChange } from "./network-watch.ts";
import type { PeerLiveness } from "./peer-liveness.ts";

export interface AddressChangeRooms {
  connections: Pick<PathConnections, "abortUnanswering">;
  /** The watch over direct and punched TLS streams, with certificates. */
  liveness?: Pick<PeerLiveness, "resetWhere">;
  directory: { refreshNow(): void };
  paths: { redialDirect(): void };
  punches: { remeasure(why: string): Promise<void> };
  log: Logger;
}

export type { NetworkWatch };

/** Watches this host's addresses from now on (network-watch.ts) and follows each change (followAddressChange); stop() ends it. */
export function watchHostAddresses(options: { clock: Clock; intervalMs?: number; rooms: () => AddressChangeRooms }): NetworkWatch {
  const watch = new NetworkWatch({ clock: options.clock, intervalMs: options.intervalMs, onChange: (change) => void followAddressChange(change, options.rooms()) });
  watch.start();
  return watch;
}

/**
 * This host's addresses changed: streams on sockets bound to an address that is gone are reset, direct and
 * punched connections that no longer answer are aborted (a connection from a gone address cannot; which
 * address a libp2p connection is bound to it does not say), the record is put at once with the new addresses
 * and the NAT measured again (a new uplink may sit behind another NAT).
 */
export async function followAddressChange(change: AddressChange, rooms: AddressChangeRooms): Promise<void> {
  const { gone, added } = change;
  rooms.log.info({ gone, added }, gone.length > 0 ? "this host's addresses changed: connections checked, the node record put again, the NAT measured again" : "this host has new addresses: the node record put again, the NAT measured again");
  rooms.directory.refreshNow();
  const measured = rooms.punches.remeasure("this host's addresses changed");
  if (gone.length > 0) {
    const vanished = new Set(gone);
    const reset = rooms.liveness?.resetWhere(
      (socket) => socket.localAddress !== undefined && vanished.has(socket.localAddress),
      (socket, node, kind) => `the ${kind} TLS stream with ${node} was bound to ${socket.localAddress}, which this host no longer has`,
    );
    if (reset) rooms.log.info({ streams: reset, gone }, "TLS streams on an address this host no longer has reset");
    rooms.paths.redialDirect();
    await rooms.connections.abortUnanswering(`this host's address ${gone.join(", ")} went away`).catch((error: unknown) => rooms.log.warn({ err: describeError(error) }, "checking connections after an address change failed"));
  }
  await measured;
}

/**
 * `connection` to a peer opened while older direct or punched ones of its kind are open: the peer may have
 * connected again because the network changed under the old ones (its address replaced, its NAT's mapping
 * gone). The older ones are pinged; those that do not answer are aborted, and the TLS streams of that node
 * on the same far address reset with them. A live older one answers and stays.
 */
export async function doubtOlderConnections(connection: Connection, rooms: { connections: PathConnections; liveness?: Pick<PeerLiveness, "resetWhere">; nodeOf: (peerId: string) => string | undefined }): Promise<void> {
  const { connections } = rooms;
  const kind = connections.kindOf(connection);
  if (kind === "relayed") return;
  const peerId = connection.remotePeer.toString();
  const older = (other: Connection) => other !== connection && other.remotePeer.toString() === peerId && connections.kindOf(other) === kind && other.timeline.open < connection.timeline.open;
  const node = rooms.nodeOf(peerId) ?? peerId;
  const aborted = await connections.abortUnanswering(`${node} connected again (${kind}, from ${connection.remoteAddr.toString()})`, older);
  const deadHosts = new Set(aborted.map((dead) => hostOf(dead.remoteAddr.toString())).filter((host) => host !== undefined));
  if (deadHosts.size === 0) return;
  rooms.liveness?.resetWhere(
    (socket, streamNode, streamKind) => streamNode === node && streamKind === kind && socket.remoteAddress !== undefined && deadHosts.has(socket.remoteAddress),
    (socket) => `${node} connected again and its ${kind} connection from ${socket.remoteAddress} no longer answered: this TLS stream on the same address is reset`,
  );
}

/** "/ip4/198.18.1.12/tcp/4101[/p2p/…]" → "198.18.1.12". */
function hostOf(address: string): string | undefined {
  return /^\/ip[46]\/([^/]+)\/tcp\//.exec(address)?.[1];
}
