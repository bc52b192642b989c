/**
 * The tunnel actor: streams to any node of the mesh — direct on a LAN (mDNS),
 * hole-punched across NATs that allow it, relayed through the NATS fabric
 * otherwise. Every path is a libp2p connection (noise + yamux, the mesh key bound
 * into the handshake), so a relaying hub sees ciphertext only; with node
 * certificates each stream rides a TLS session of its own over the path instead
 * (carrier.ts). One path machine per remote node publishes every change on
 * `mesh.<node>.tunnel.path`.
 *
 * ```ts
 * import { createTunnelActor } from "./services/tunnel/index.ts";
 * const tunnel = createTunnelActor({ bus, log, node: "edge-a", nats: leafConnection, listen: ["/ip4/0.0.0.0/tcp/4101"], psk, clock,
 *   observer: { host: "198.18.64.1", ports: [3478, 3479] } });
 * await tunnel.start();
 * const link = linkActorToBus({ bus, actorName: "tunnel", actor: tunnel.actor });
 * const stream = await tunnel.openStream("edge-b", { host: "10.0.0.5", port: 80, protocol: "TCP" }); // a Duplex
 * await tunnel.stop();
 * ```
 *
 * The hub side runs the NAT observer: `startObserver({ hosts: [primary, secondary], ports: [3478, 3479], log })`.
 *
 * Inside (one job per file): tunnel-actor.ts assembles the rooms; paths.ts and
 * path-machine.ts keep one path per node; connections.ts makes and ranks the libp2p
 * connections that hold paths up; punch-coordinator.ts agrees hole punches (nat.ts
 * the plan, punch.ts the socket); carrier.ts is the contract of what carries one
 * stream, stream-opener.ts picks a carrier (tls-carriers.ts, spares.ts), and
 * stream-header.ts / stream-server.ts are the stream protocol's two ends; relay.ts,
 * relay-channel.ts, relay-budget.ts and relay-frames.ts are the relay; host.ts the
 * libp2p host; node-directory.ts and node-identity.ts the node records and proofs.
 */
export { createTunnelActor, TunnelActor, type TunnelOptions } from "./tunnel-actor.ts";
export type { StreamDialer } from "../../bus/streams.ts";
export { startObserver, detectNat, punchPlan, canPunch, classifyNat, type Observer, type ObserverOptions, type ObserverAddress, type PunchPlan } from "./nat.ts";
export { tunnelProtocol } from "./host.ts";
export { parsePsk, pskFingerprint } from "./psk.ts";
export type { StreamTarget } from "./stream-header.ts";
export { defaultMaxStreamsPerPeer } from "./stream-server.ts";
export { defaultMaxPunchesPerPeer } from "./punch-coordinator.ts";
export { pathMachine, type PathKind, type PathStateKind } from "./path-machine.ts";
export { RelayEndpoint, RelayChannel } from "./relay.ts";
export { checkPeerClaim, decodeDirectoryValue, encodeDirectoryValue, type NodeIdentity } from "./node-identity.ts";
