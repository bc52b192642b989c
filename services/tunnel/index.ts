/**
 * The tunnel actor: streams to any node of the mesh — direct on a LAN (mDNS),
 * hole-punched across NATs that allow it, relayed through the NATS fabric
 * otherwise — all as libp2p connections (noise + yamux, the mesh key bound into the handshake), so a relaying
 * hub sees ciphertext only. One path machine per remote node publishes every
 * change on `mesh.<node>.tunnel.path`.
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
 */
export { createTunnelActor, TunnelActor, type TunnelDialer, type TunnelOptions } from "./tunnel-actor.ts";
export { startObserver, detectNat, punchPlan, canPunch, classifyNat, type Observer, type ObserverOptions, type ObserverAddress, type PunchPlan } from "./nat.ts";
export { parsePsk, pskFingerprint, tunnelProtocol, type TunnelTarget } from "./host.ts";
export { pathMachine, type PathKind, type PathStateKind } from "./path-machine.ts";
export { RelayEndpoint, RelayChannel } from "./relay.ts";
export { checkPeerClaim, decodeDirectoryValue, encodeDirectoryValue, type NodeIdentity } from "./node-identity.ts";
