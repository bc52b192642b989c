/**
 * The paths to other nodes: one path machine per remote node (path-machine.ts),
 * fed by the ways of reaching it — a direct dial, a hole punch, the relay — and
 * by the libp2p connections that come and go (either side may open one). A path
 * is bound to the peer id its node is known by (its record, or identify on the
 * LAN) when it is made. A node that comes back with another peer id (its data dir
 * and with it its libp2p key lost, host.ts) is followed here: its new record or
 * its proven identify moves the path to the new peer id, and a new record
 * (new listen addresses after a restart) retries a path that had given up. A
 * node whose certificate is revoked loses its path (`forget`). Streams ask here
 * which path to take, and wait while it is discovered.
 *
 * Why this file is long: it is the one place where a path's machine, the peer id it is bound
 * to, the connections that hold it and the attempts that made it meet; `why` reads all four at
 * one instant. The ways themselves (punch-coordinator.ts, connections.ts), the machine
 * (path-machine.ts) and the explanation (path-reasons.ts) are apart already.
 *
 * ```ts
 * const paths = new PathTable({ node: "edge-a", host, connections, punches, directory, bus, log, clock });
 * paths.watch();                                        // connection and mDNS events
 * const { peer, kind } = await paths.resolve("edge-b");  // waits for a settled path; throws if unreachable
 * ```
 */
import { createActor, type ActorRefFrom } from "xstate";
import type { Connection } from "@libp2p/interface";
import type { Bus } from "../../bus/bus.ts";
import { nowIso } from "../../bus/events.ts";
import type { NodeRecord } from "../../bus/node-record.ts";
import type { Clock } from "../../lib/clock.ts";
import { LeafmeshError, describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import type { CarrierPeer } from "./carrier.ts";
import { protocolOf } from "../../bus/protocol.ts";
import type { PathConnections } from "./connections.ts";
import type { TunnelHost } from "./host.ts";
import { LanDials } from "./lan-dials.ts";
import type { NodeDirectory } from "./node-directory.ts";
import { punchPlan } from "./nat.ts";
import { explainPath, type PathReasons } from "./path-reasons.ts";
import { pathKindOf, pathMachine, type PathKind, type PathStateKind } from "./path-machine.ts";
import type { PunchCoordinator } from "./punch-coordinator.ts";
import type { NatView, Netcheck, PathAttempt, PathWhy } from "../../bus/path-why.ts";
import { rpc } from "../../bus/rpc.ts";

type PathActor = ActorRefFrom<typeof pathMachine>;
type PathSnapshot = ReturnType<PathActor["getSnapshot"]>;

/** The ways this node may use; all on by default (turning them off is for tests and odd networks). */
export interface Ways {
  direct?: boolean;
  punch?: boolean;
  relay?: boolean;
}

export interface PathTableOptions {
  node: string;
  host: TunnelHost;
  connections: PathConnections;
  punches: PunchCoordinator;
  directory: NodeDirectory;
  bus: Bus;
  log: Logger;
  clock: Clock;
  ways?: Ways;
  /** Whether this node has a relay endpoint. */
  relays: boolean;
  /** Where attempts are recorded for `status --why` (path-reasons.ts). */
  reasons: PathReasons;
  /** Answers `rpc.<node>.netcheck` (served here with `tunnel.why`, while the paths are watched). */
  netcheck?: () => Promise<Netcheck>;
  /** Each new connection, once told to its path (stale-connections.ts doubts the older ones of its kind). */
  onConnectionOpen?: (connection: Connection) => void;
  /** @default 20_000 — how long a stream waits for a path to a node it has none to yet. */
  pathTimeoutMs?: number;
  /** @default 3_000 — dialling a LAN neighbour found by mDNS. */
  dialTimeoutMs?: number;
  /** Path machine timings (see path-machine.ts). */
  upgradeIntervalMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
}

export class PathTable {
  readonly #options: PathTableOptions;
  readonly #paths = new Map<string, { actor: PathActor; peerId: string }>();
  /** LAN neighbours by node name (from identify), for when the directory is out of reach. */
  readonly #lanPeers = new Map<string, string>();
  /** Nodes already told about with "the keys differ" (said once each). */
  readonly #warnedKeys = new Set<string>();
  #stopped = false;
  readonly #stopServing: (() => void)[] = [];
  /** Dials the LAN neighbours mDNS finds; leaves one that fails the handshake alone for a while. */
  readonly #lanDials: LanDials;

  constructor(options: PathTableOptions) {
    this.#options = options;
    this.#lanDials = new LanDials({ dial: (peer, signal) => options.host.libp2p.dial(peer, { signal }), log: options.log, clock: options.clock, dialTimeoutMs: options.dialTimeoutMs, self: options.host.libp2p.peerId.toString() });
  }

  /** The current path kind to a node. */
  pathTo(node: string): PathStateKind | undefined {
    const path = this.#paths.get(node);
    return path ? pathKindOf(path.actor.getSnapshot().value) : undefined;
  }

  /** The path's kind, last RTT and the reason of its last failure. */
  detail(node: string): { kind: PathStateKind; rttMs?: number; reason?: string } | undefined {
    const path = this.#paths.get(node);
    if (!path) return undefined;
    const snapshot = path.actor.getSnapshot();
    return { kind: pathKindOf(snapshot.value), rttMs: snapshot.context.rttMs, reason: snapshot.context.reason };
  }

  /**
   * Why the path to `node` is what it is (`leafmesh status --why`): both NATs with their
   * evidence, the attempts, the reason and what would change it.
   */
  why(node: string): PathWhy {
    if (node === this.#options.node) throw new LeafmeshError("CONFIG_INVALID", `'${node}' is this node itself: --why takes another node's name`);
    const { punches, directory, reasons, clock, host } = this.#options;
    const path = this.#paths.get(node);
    const snapshot = path?.actor.getSnapshot();
    const record = directory.get(node);
    const detection = punches.detection;
    const local: NatView = {
      node: this.#options.node,
      type: punches.nat,
      ...(punches.mapped ? { mapped: punches.mapped } : {}),
      ...(detection?.evidence ? { evidence: detection.evidence } : {}),
      source: detection ? "measured" : "none",
      ...(detection ? { at: detection.at } : {}),
    };
    // A name no record, path or attempt knows is most often a typo: saying so beats explaining a path to nobody.
    if (!path && !record && reasons.attemptsOf(node).length === 0) {
      const known = directory
        .all()
        .map((entry) => entry.node)
        .filter((name) => name !== this.#options.node)
        .sort();
      throw new LeafmeshError("CONFIG_INVALID", `'${node}' is not a node ${this.#options.node} knows: no node record, path or attempt (nodes it knows: ${known.length > 0 ? known.join(", ") : "none yet"})`);
    }
    const peerNat: NatView = record
      ? { node, type: record.nat, ...(record.observed[0] ? { mapped: record.observed[0] } : {}), ...(record.natEvidence ? { evidence: record.natEvidence } : {}), source: "record", at: record.at }
      : { node, type: "unknown", source: "none" };
    const peerId = path?.peerId ?? record?.peerId;
    const lanPeerIds = new Set(reasons.lanPeers().map((peer) => peer.peerId));
    return explainPath({
      node: this.#options.node,
      peer: node,
      path: snapshot ? pathKindOf(snapshot.value) : "none",
      rttMs: snapshot?.context.rttMs,
      connections: peerId ? this.#options.connections.ranked(peerId).map((entry) => `${entry.kind} ${entry.connection.remoteAddr.toString()}`) : [],
      local,
      peerNat,
      attempts: reasons.attemptsOf(node),
      ways: this.#options.ways ?? {},
      // Found by mDNS, as the answer says: a peer dialled at its record's address is direct, not "found on the LAN".
      lan: peerId !== undefined && lanPeerIds.has(peerId) && host.nodeOf(peerId) === node,
      at: nowIso(clock.now),
    });
  }

  /** The peer a node's path is bound to. */
  peerOf(node: string): CarrierPeer | undefined {
    const path = this.#paths.get(node);
    return path && { node, peerId: path.peerId };
  }

  /** Every path's kind, by node. */
  kinds(): Record<string, PathStateKind> {
    const kinds: Record<string, PathStateKind> = {};
    for (const [node, path] of this.#paths) kinds[node] = pathKindOf(path.actor.getSnapshot().value);
    return kinds;
  }

  /** The path a stream to `node` takes: made if there is none, waited for while it is discovered. Throws when the node is unknown or unreachable. */
  async resolve(node: string): Promise<{ peer: CarrierPeer; kind: PathKind }> {
    let path = this.#paths.get(node);
    if (!path) {
      const peerId = await this.#peerIdOf(node);
      if (!peerId) {
        throw new LeafmeshError("TUNNEL_FAILED", `unknown node '${node}': it has no record in ${"mesh-nodes"} and was not seen on the LAN (is its agent running, with the same mesh?)`);
      }
      path = this.#ensure(node, peerId);
    }
    let snapshot = path.actor.getSnapshot();
    if (pathKindOf(snapshot.value) === "unreachable") {
      throw new LeafmeshError("TUNNEL_FAILED", `node '${node}' is unreachable: ${snapshot.context.reason ?? "every way failed"} (retrying in the background)`);
    }
    if (pathKindOf(snapshot.value) === "discovering") {
      snapshot = await this.#settled(path.actor, this.#options.pathTimeoutMs ?? 20_000, node);
      if (pathKindOf(snapshot.value) === "unreachable") {
        throw new LeafmeshError("TUNNEL_FAILED", `node '${node}' is unreachable: ${snapshot.context.reason ?? "every way failed"}`);
      }
    }
    const record = this.#options.directory.get(node);
    return { peer: { node, peerId: path.peerId, protocol: record && protocolOf(record) }, kind: pathKindOf(snapshot.value) as PathKind };
  }

  /** Follows libp2p's events: mDNS neighbours are dialled, identify names a peer's node, connections opening and closing move the paths. */
  watch(): void {
    const { host, bus, netcheck } = this.#options;
    const libp2p = host.libp2p;
    this.#stopServing.push(bus.serve(rpc.tunnelWhy, (request) => this.why(request.node)));
    if (netcheck) this.#stopServing.push(bus.serve(rpc.netcheck, netcheck));
    // mDNS: a LAN neighbour. Dialled so identify tells us its node name (lan-dials.ts). libp2p says "discovered"
    // of every peer new to its store, also one learned through the relay's identify, whose addresses need not be
    // on this LAN (127.0.0.1 of an IPv6-only node reached this node itself): only mDNS's own answers are dialled.
    libp2p.addEventListener("peer:discovery", (event) => {
      if (this.#stopped || this.#options.ways?.direct === false) return;
      if (this.#options.reasons.wasSeenOnLan(event.detail.id.toString())) this.#lanDials.found(event.detail.id);
    });
    libp2p.addEventListener("peer:identify", (event) => {
      const peerId = event.detail.peerId.toString();
      const node = host.nodeOf(peerId);
      if (node === this.#options.node) return this.#sameName(peerId);
      if (!node || this.#stopped) return;
      if (event.detail.connection && this.#options.connections.kindOf(event.detail.connection) === "direct") this.#lanPeers.set(node, peerId);
      this.#onConnectionChange(node, peerId);
    });
    libp2p.addEventListener("connection:open", (event) => {
      const peerId = event.detail.remotePeer.toString();
      const node = this.#nodeOfPeer(peerId);
      // A path to this node's own name ended the agent (PathTable.why threw from a microtask).
      if (node === this.#options.node) return this.#sameName(peerId);
      // One this node made (a LAN dial, a punch) holds a path once it carried the check's probe (path-check.ts).
      const connection = event.detail;
      if (this.#options.connections.needsCheck(connection)) {
        void this.#options.connections.checked(connection).then(
          () => this.carried(connection),
          (error: unknown) => this.#options.log.debug({ peer: node ?? peerId, err: describeError(error) }, "a new connection failed its path check"),
        );
      }
      if (node && !this.#stopped) this.#onConnectionChange(node, peerId);
      if (!this.#stopped) this.#options.onConnectionOpen?.(connection);
    });
    libp2p.addEventListener("connection:close", (event) => {
      const peerId = event.detail.remotePeer.toString();
      const node = this.#nodeOfPeer(peerId);
      if (!node || this.#stopped) return;
      const path = this.#paths.get(node);
      if (!path) return;
      const current = pathKindOf(path.actor.getSnapshot().value);
      const kind = this.#options.connections.kindOf(event.detail);
      if (kind !== current) return;
      if (this.#options.connections.ranked(peerId).some((other) => other.kind === kind)) return;
      path.actor.send({ type: "LOST", kind, reason: `${kind} connection closed` });
    });
  }

  /** A connection was seen to carry full-sized packets (path-check.ts): it may hold the path now. */
  carried(connection: Connection): void {
    const peerId = connection.remotePeer.toString();
    const node = this.#nodeOfPeer(peerId);
    if (node && node !== this.#options.node && !this.#stopped) this.#onConnectionChange(node, peerId);
  }

  /**
   * A record of `node` arrived (directory.onRecord): a new peer id moves the path to it (the node
   * restarted with another key; the old one answers no more), and a path that had given up is
   * retried at once (a restart usually brings new listen addresses), not after its backoff.
   */
  onRecord(record: NodeRecord): void {
    const path = this.#paths.get(record.node);
    if (!path || this.#stopped) return;
    if (path.peerId !== record.peerId) return this.#rebind(record.node, record.peerId, "its node record");
    this.#retryIfUnreachable(path);
  }

  /**
   * The peers whose record is fresh, at each of the directory's looks (directory.onAlive): a path to one
   * of them that had given up is retried then, not after its backoff (up to a minute). Records are put
   * only when they change or every minute, so this, not their arrival, keeps the pace they set when
   * they came every 5 s.
   */
  retryAlive(records: NodeRecord[]): void {
    if (this.#stopped) return;
    for (const record of records) {
      const path = this.#paths.get(record.node);
      if (path && path.peerId === record.peerId) this.#retryIfUnreachable(path);
    }
  }

  #retryIfUnreachable(path: { actor: PathActor }): void {
    if (pathKindOf(path.actor.getSnapshot().value) === "unreachable") path.actor.send({ type: "RETRY" });
  }

  /**
   * This host's addresses changed (stale-connections.ts): every direct path dials its peer again at once, from
   * the address this host has now, without waiting for the old connections' verdict. The peer, seeing the new
   * connection, doubts its old ones; this side's old ones are aborted when they do not answer.
   */
  redialDirect(): void {
    if (this.#stopped || this.#options.ways?.direct === false) return;
    for (const [node, path] of this.#paths) {
      if (pathKindOf(path.actor.getSnapshot().value) !== "direct") continue;
      void this.#options.connections.dialDirect(path.peerId, this.#options.directory.get(node)).catch((error: unknown) => this.#options.log.debug({ peer: node, err: describeError(error) }, "redial after an address change failed"));
    }
  }

  /** Drops the path to `node` and what is known of it on the LAN (its certificate was revoked): a stream to it then finds no path. */
  forget(node: string, reason: string): void {
    const path = this.#paths.get(node);
    this.#lanPeers.delete(node);
    if (!path) return;
    path.actor.stop();
    this.#paths.delete(node);
    const { bus, clock, log } = this.#options;
    bus.publish("tunnel", "path", { at: nowIso(clock.now), peer: node, kind: "unreachable", detail: reason });
    log.info({ peer: node, reason }, "path dropped");
  }

  stop(): void {
    this.#stopped = true;
    this.#lanDials.stop();
    for (const stopServing of this.#stopServing.splice(0)) stopServing();
    for (const path of this.#paths.values()) path.actor.stop();
    this.#paths.clear();
  }

  #settled(actor: PathActor, timeoutMs: number, node: string): Promise<PathSnapshot> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        subscription.unsubscribe();
        reject(new LeafmeshError("TUNNEL_FAILED", `no path to '${node}' within ${timeoutMs} ms`));
      }, timeoutMs);
      const check = (snapshot: PathSnapshot) => {
        if (pathKindOf(snapshot.value) === "discovering") return false;
        clearTimeout(timer);
        queueMicrotask(() => subscription.unsubscribe());
        resolve(snapshot);
        return true;
      };
      const subscription = actor.subscribe(check);
      check(actor.getSnapshot());
    });
  }

  async #peerIdOf(node: string): Promise<string | undefined> {
    return this.#lanPeers.get(node) ?? (await this.#options.directory.lookup(node))?.peerId;
  }

  #nodeOfPeer(peerId: string): string | undefined {
    return this.#options.host.nodeOf(peerId) ?? this.#options.directory.byPeerId(peerId)?.node;
  }

  /**
   * A peer that goes by this node's own name: another process with this node's identity (a bundle copied to two
   * machines, one node started twice). Said once, and its connections closed: nothing of ours goes there.
   */
  #sameName(peerId: string): void {
    if (this.#stopped) return;
    if (!this.#warnedKeys.has(`same-name ${peerId}`)) {
      this.#warnedKeys.add(`same-name ${peerId}`);
      this.#options.log.error(
        { peerId },
        `another process runs as node '${this.#options.node}' (libp2p peer ${peerId}): two agents with one node's name or bundle; stop one, or give it a name and bundle of its own (leafmesh keys issue --node NAME)`,
      );
    }
    for (const { connection } of this.#options.connections.ranked(peerId)) void connection.close().catch(() => undefined);
  }

  /** A connection appeared (either side opened it): tell the node's path, creating it if needed. */
  #onConnectionChange(node: string, peerId: string): void {
    const existing = this.#paths.get(node);
    if (!existing) {
      this.#ensure(node, peerId);
      return;
    }
    // identify proved `node` at another peer id (with an identity, by its certificate): it restarted with a new key.
    if (existing.peerId !== peerId && this.#options.host.nodeOf(peerId) === node) return this.#rebind(node, peerId, "identify");
    const best = this.#options.connections.ranked(peerId)[0];
    if (!best) return;
    // A better connection the peer opened (its punch, its dial): said once, where this node made no attempt of its own.
    if (pathKindOf(existing.actor.getSnapshot().value) !== best.kind) {
      this.#options.reasons.attempt(node, { way: "inbound", outcome: "connected", ms: 0, detail: `${node} connected (${best.kind}, from ${best.connection.remoteAddr.toString()})` });
    }
    existing.actor.send({ type: "CONNECTED", kind: best.kind });
  }

  /** The path to `node` made again for its new peer id: the old machine's connections and state belong to a key that is gone. */
  #rebind(node: string, peerId: string, from: string): void {
    const old = this.#paths.get(node);
    if (!old || old.peerId === peerId) return;
    this.#options.log.info({ peer: node, from: old.peerId, to: peerId, by: from }, "node has a new peer id (restarted with another key): its path follows");
    old.actor.stop();
    this.#paths.delete(node);
    for (const { connection } of this.#options.connections.ranked(old.peerId)) void connection.close().catch(() => undefined);
    this.#ensure(node, peerId);
  }

  #ensure(node: string, peerId: string): { actor: PathActor; peerId: string } {
    const existing = this.#paths.get(node);
    if (existing) return existing;
    const { bus, log, clock, connections } = this.#options;
    const machine = pathMachine.provide({
      actions: {
        attempt: () => void this.#attempt(node, false),
        // Only one side of a pair tries upgrades (the smaller name), so two punches never race; the other sees the new connection arrive.
        attemptUpgrade: () => (this.#options.node < node ? void this.#attempt(node, true) : queueMicrotask(() => path.actor.send({ type: "UPGRADE_FAILED", reason: `${node} tries the upgrades` }))),
        announce: ({ context }, params) => {
          bus.publish("tunnel", "path", { at: nowIso(clock.now), peer: node, kind: params.kind, rttMs: context.rttMs, detail: context.reason });
          log.info({ peer: node, kind: params.kind, rttMs: context.rttMs, reason: context.reason }, "path changed");
          // The reasons go out with the change (mesh.<node>.tunnel.why), once the machine is in its new state.
          if (params.kind !== "discovering") queueMicrotask(() => this.#announceWhy(node));
        },
        released: (_, params) => {
          for (const { kind, connection } of connections.ranked(peerId)) if (kind === params.kind) connections.closeWhenIdle(connection);
        },
      },
    });
    const actor = createActor(machine, {
      input: { peer: node, upgradeIntervalMs: this.#options.upgradeIntervalMs, backoffMinMs: this.#options.backoffMinMs, backoffMaxMs: this.#options.backoffMaxMs },
      clock,
    });
    const path = { actor, peerId };
    this.#paths.set(node, path);
    actor.start();
    return path;
  }

  #announceWhy(node: string): void {
    if (this.#stopped || !this.#paths.has(node)) return;
    const why = this.why(node);
    this.#options.bus.publish("tunnel", "why", {
      at: why.at,
      peer: node,
      kind: why.path,
      code: why.reason.code,
      reason: why.reason.text,
      wouldChange: why.wouldChange,
      nat: { local: why.nat.local.type, peer: why.nat.peer.type },
      lastAttempt: why.attempts.at(-1),
    });
  }

  /** Tries the ways in order (direct, hole punch, relay; `upgradeOnly`: the first two) and tells the path machine what came of it. */
  async #attempt(node: string, upgradeOnly: boolean): Promise<void> {
    const path = this.#paths.get(node);
    if (!path || this.#stopped) return;
    const { host, connections, punches, directory, log } = this.#options;
    const send = (event: Parameters<PathActor["send"]>[0]) => {
      if (!this.#stopped) path.actor.send(event);
    };
    const reasons: string[] = [];
    // Each way tried is recorded for `status --why` with its plan, time and outcome.
    const record = (way: PathAttempt["way"], started: number, outcome: PathAttempt["outcome"], detail: string, plan?: string) =>
      this.#options.reasons.attempt(node, { way, outcome, ms: Math.round((performance.now() - started) * 10) / 10, detail, ...(plan ? { plan } : {}) });
    try {
      const existing = connections.ranked(path.peerId)[0];
      if (existing && (!upgradeOnly || existing.kind !== "relayed")) {
        record("existing", performance.now(), "connected", `a ${existing.kind} connection was already open (${existing.connection.remoteAddr.toString()})`);
        return send({ type: "CONNECTED", kind: existing.kind, rttMs: await connections.rtt(existing.connection) });
      }
      const peerRecord = directory.get(node);
      if (peerRecord && peerRecord.pskFingerprint !== host.pskFingerprint) {
        const reason = `the pre-shared keys differ: ${node} uses a PSK with fingerprint ${peerRecord.pskFingerprint}, this node ${host.pskFingerprint}; give both agents the same --psk`;
        record("existing", performance.now(), "skipped", reason);
        if (!this.#warnedKeys.has(node)) log.error({ peer: node }, reason);
        this.#warnedKeys.add(node);
        return send({ type: upgradeOnly ? "UPGRADE_FAILED" : "FAILED", reason });
      }
      const ways = this.#options.ways ?? {};
      if (ways.direct !== false) {
        const started = performance.now();
        const connection = await connections.dialDirect(path.peerId, peerRecord).catch((error) => {
          reasons.push(`direct: ${describeError(error)}`);
          record("direct", started, "failed", describeError(error));
        });
        if (connection) {
          record("direct", started, "connected", `${connection.remoteAddr.toString()} answered`);
          return send({ type: "CONNECTED", kind: "direct", rttMs: await connections.rtt(connection) });
        }
      }
      if (ways.punch !== false && peerRecord) {
        const cannot = punches.cannotPunch(peerRecord);
        const plan = `${punchPlan(punches.nat, peerRecord.nat)} (${punches.nat} ↔ ${peerRecord.nat})`;
        if (cannot) {
          reasons.push(`punch: ${cannot}`);
          record("punch", performance.now(), "skipped", cannot, plan);
        } else {
          const started = performance.now();
          const connection = await this.#punch(peerRecord).catch((error) => {
            reasons.push(`punch: ${describeError(error)}`);
            record("punch", started, "failed", describeError(error), plan);
          });
          if (connection) {
            record("punch", started, "connected", `punched to ${connection.remoteAddr.toString()}`, plan);
            return send({ type: "CONNECTED", kind: "hole-punched", rttMs: await connections.rtt(connection) });
          }
        }
      }
      if (upgradeOnly) return send({ type: "UPGRADE_FAILED", reason: reasons.join("; ") || "no better way" });
      if (existing) return send({ type: "CONNECTED", kind: existing.kind, rttMs: await connections.rtt(existing.connection) });
      if (ways.relay !== false && this.#options.relays) {
        const started = performance.now();
        const connection = await connections.openRelayed(node, path.peerId).catch((error) => {
          reasons.push(`relay: ${describeError(error)}`);
          record("relay", started, "failed", describeError(error), "through the fabric (leaf → hub → leaf)");
        });
        if (connection) {
          record("relay", started, "connected", "a relay channel through the fabric carries the connection", "through the fabric (leaf → hub → leaf)");
          if (reasons.length) log.info({ peer: node, reasons }, "relayed: better ways failed");
          return send({ type: "CONNECTED", kind: "relayed", rttMs: await connections.rtt(connection), reason: reasons.join("; ") || undefined });
        }
      }
      send({ type: "FAILED", reason: reasons.join("; ") || "no way to reach it" });
    } catch (error) {
      send({ type: upgradeOnly ? "UPGRADE_FAILED" : "FAILED", reason: describeError(error) });
    }
  }

  /** A hole-punched libp2p connection to `record`'s node. */
  async #punch(record: NodeRecord): Promise<Connection> {
    const socket = await this.#options.punches.punch(record, "libp2p");
    const connection = await this.#options.connections.upgradePunched(socket, "outbound", { node: record.node, peerId: record.peerId });
    return connection!;
  }
}
