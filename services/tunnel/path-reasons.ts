/**
 * Why each path is what it is: the attempts the path table made to each peer
 * (way, plan, time, outcome, in the words of what failed), the punches peers
 * asked of this node, the LAN peers mDNS showed, and the pure explanation
 * `explainPath` that turns them, with both nodes' NAT behaviour, into the
 * answer of `leafmesh status --why` (bus/path-why.ts). Bounded: a few attempts
 * per peer, a bounded number of peers.
 *
 * ```ts
 * const reasons = new PathReasons({ clock });
 * reasons.attempt("edge-b", { way: "direct", outcome: "failed", ms: 3001, detail: "ECONNREFUSED" });
 * explainPath({ node, peer, path: "relayed", local, peerNat, attempts: reasons.attemptsOf("edge-b"), ways });
 * ```
 */
import type { NatType } from "../../bus/node-record.ts";
import { nowIso } from "../../bus/events.ts";
import type { NatView, Netcheck, PathAttempt, PathReasonCode, PathWhy } from "../../bus/path-why.ts";
import type { Clock } from "../../lib/clock.ts";
import { describeError } from "../../lib/errors.ts";
import type { PathConnections } from "./connections.ts";
import type { TunnelHost } from "./host.ts";
import { punchPlan, type ObserverAddress, type PunchPlan } from "./nat.ts";
import type { PunchCoordinator } from "./punch-coordinator.ts";
import type { PathStateKind } from "./path-machine.ts";
import type { Ways } from "./paths.ts";

/** @default 12 — attempts kept per peer: the last upgrade tries and the one that made the path. */
export const attemptsPerPeer = 12;
/** @default 4_096 — peers whose attempts are kept; the least recently tried goes first. */
export const peersKept = 4_096;
/** @default 1_024 — LAN peers remembered from mDNS. */
export const lanPeersKept = 1_024;

export class PathReasons {
  readonly #clock: Clock;
  readonly #attempts = new Map<string, PathAttempt[]>();
  readonly #lan = new Map<string, { addresses: string[]; lastSeen: number }>();

  constructor(options: { clock: Clock }) {
    this.#clock = options.clock;
  }

  /**
   * Records one try of one way to `peer` (bounded per peer and in peers). A try that ends as one
   * of the last few did (the same way, plan, outcome and words: a relayed path's upgrade failing
   * every interval) replaces it and counts `repeats`, and the latest connected try (what made the
   * path) is kept however many tries came after it.
   */
  attempt(peer: string, attempt: Omit<PathAttempt, "at" | "repeats">): void {
    const list = this.#attempts.get(peer) ?? [];
    this.#attempts.delete(peer);
    const entry: PathAttempt = { at: new Date(this.#clock.now()).toISOString(), ...attempt, detail: attempt.detail.slice(0, 500) };
    const same = (other: PathAttempt) => other.way === entry.way && other.plan === entry.plan && other.outcome === entry.outcome && other.detail === entry.detail;
    const recent = list.findLastIndex((other, index) => index >= list.length - 3 && same(other));
    if (recent >= 0 && entry.outcome !== "connected") {
      entry.repeats = (list[recent].repeats ?? 1) + 1;
      list.splice(recent, 1);
    }
    list.push(entry);
    while (list.length > attemptsPerPeer) {
      const pinned = list.findLastIndex((other) => other.outcome === "connected");
      list.splice(pinned === 0 ? 1 : 0, 1);
    }
    this.#attempts.set(peer, list);
    if (this.#attempts.size > peersKept) this.#attempts.delete(this.#attempts.keys().next().value!);
  }

  attemptsOf(peer: string): PathAttempt[] {
    return [...(this.#attempts.get(peer) ?? [])];
  }

  /** A peer mDNS announced on the LAN. */
  /** Whether mDNS announced `peerId` on this LAN (one of the last peers it announced). */
  wasSeenOnLan(peerId: string): boolean {
    return this.#lan.has(peerId);
  }

  seenOnLan(peerId: string, addresses: string[]): void {
    this.#lan.delete(peerId);
    this.#lan.set(peerId, { addresses: addresses.slice(0, 16), lastSeen: this.#clock.now() });
    if (this.#lan.size > lanPeersKept) this.#lan.delete(this.#lan.keys().next().value!);
  }

  lanPeers(): { peerId: string; addresses: string[]; lastSeen: string }[] {
    return [...this.#lan].map(([peerId, seen]) => ({ peerId, addresses: seen.addresses, lastSeen: new Date(seen.lastSeen).toISOString() }));
  }
}

const natWords: Record<NatType, string> = {
  none: "no NAT (a public address)",
  "full-cone": "a full-cone NAT (admits anyone once a mapping exists)",
  "restricted-cone": "a restricted-cone NAT (admits addresses it has sent to)",
  "port-restricted": "a port-restricted NAT (admits only the address and port it has sent to)",
  symmetric: "a symmetric NAT (a new public port for every destination)",
  unknown: "a NAT not measured yet",
};

/** Why no punch exists between two NAT types (DESIGN.md's table), in words. */
function unpunchableWhy(local: NatType, peer: NatType): string {
  const symmetricSide = local === "symmetric" ? "this node" : "the peer";
  if (local === "symmetric" && peer === "symmetric") return "both sides are behind symmetric NATs: each gives the other's packets a new port nobody can predict";
  return `${symmetricSide} is behind a symmetric NAT, whose port towards the other side cannot be known in advance, and the other side's port-restricted NAT admits only the exact address and port it has sent to`;
}

export interface ExplainInput {
  node: string;
  peer: string;
  path: PathStateKind | "none";
  rttMs?: number;
  connections: string[];
  local: NatView;
  peerNat: NatView;
  attempts: PathAttempt[];
  ways: Ways;
  /** Whether a direct connection came from the LAN (mDNS) rather than a record's address. */
  lan: boolean;
  at: string;
}

/** The answer of `status --why`: pure, from what was measured and tried. */
export function explainPath(input: ExplainInput): PathWhy {
  const plan: PunchPlan = punchPlan(input.local.type, input.peerNat.type);
  const lastOf = (way: PathAttempt["way"]) => [...input.attempts].reverse().find((attempt) => attempt.way === way);
  const lastPunch = lastOf("punch") ?? lastOf("inbound");
  const lastDirect = lastOf("direct");
  const pair = `this node: ${natWords[input.local.type]}; ${input.peer}: ${natWords[input.peerNat.type]}`;
  let code: PathReasonCode;
  let text: string;
  const wouldChange: string[] = [];
  const directFailed = lastDirect && lastDirect.outcome === "failed" ? `the direct dial failed (${lastDirect.detail})` : "no direct address answered";
  switch (input.path) {
    case "direct":
      code = input.lan ? "lan-direct" : "direct";
      text = input.lan
        ? `${input.peer} is on this node's LAN (found by mDNS) and a direct connection answered: the best path there is, no NAT in between`
        : `a direct connection to ${input.peer}'s listen address answered: the best path there is`;
      wouldChange.push(`losing the direct connection (a LAN or address change) makes the path fall back to ${plan === "relay" ? "the relay" : "a hole punch, then the relay"}`);
      break;
    case "hole-punched":
      code = "punched";
      text = `${directFailed}; ${pair}: the pair can be punched (plan ${plan}) and the punch connected${lastPunch?.outcome === "connected" ? ` in ${Math.round(lastPunch.ms)} ms` : ""}`;
      wouldChange.push(`a direct address of ${input.peer} becoming reachable (the same LAN, a public address) would make the path direct`);
      wouldChange.push("a router that forgets the punched mapping (idle timeout, reboot) drops the path back to discovery; the relay carries streams until a new punch connects");
      break;
    case "relayed":
    case "unreachable":
    case "discovering":
    case "none": {
      if (input.ways.punch === false) {
        code = "punch-off";
        text = `hole punching is turned off on this node (--tunnel-ways without punch); ${directFailed}`;
        wouldChange.push("allowing punches (--tunnel-ways direct,punch,relay)");
      } else if (input.local.type === "unknown" || input.peerNat.type === "unknown") {
        code = "nat-unknown";
        const which = input.local.type === "unknown" ? "this node's NAT is not measured (is --observer set, and does the hub's observer answer?)" : `${input.peer}'s NAT is not measured (its record says unknown)`;
        text = `${which}, so no punch plan can be made; ${directFailed}`;
        wouldChange.push("both NATs measured by the hub's NAT observer (a punch is then tried if the pair allows it)");
      } else if (plan === "relay") {
        code = "nat-pair-unpunchable";
        text = `${directFailed}; ${pair}: no hole punch exists for this pair — ${unpunchableWhy(input.local.type, input.peerNat.type)}`;
        wouldChange.push("either node on the other's LAN, or with a public address or port forward (direct)");
        wouldChange.push(
          input.local.type === "symmetric" && input.peerNat.type === "symmetric"
            ? "either side behind a NAT with a stable public port (cone or port-restricted) next to a cone on the other side"
            : "the symmetric side behind a NAT that keeps one public port per local port, or the other side behind a cone NAT (full or restricted)",
        );
      } else {
        code = "punch-failed";
        text = `${directFailed}; ${pair}: a punch is possible (plan ${plan}) but ${lastPunch ? `the last one failed: ${lastPunch.detail}` : "none has connected yet"}`;
        wouldChange.push("a punch that connects: it is retried while the path is relayed (every upgrade interval, by the node whose name sorts first)");
      }
      if (input.path === "unreachable") {
        const relay = lastOf("relay");
        text = `every way failed: ${text}${relay ? `; relay: ${relay.detail}` : ""}`;
        code = code === "nat-pair-unpunchable" || code === "nat-unknown" || code === "punch-off" ? code : "unreachable";
        wouldChange.push("the relay through the fabric answering (both leaves attached to the hubs)");
      } else if (input.path === "discovering") {
        code = "discovering";
        text = `the first attempt is under way; ${text}`;
      } else if (input.path === "none") {
        code = "none";
        text = `no path to ${input.peer} yet (no stream asked for one, and it did not connect to this node)`;
      }
      break;
    }
  }
  return {
    node: input.node,
    peer: input.peer,
    at: input.at,
    path: input.path,
    ...(input.rttMs !== undefined ? { rttMs: input.rttMs } : {}),
    connections: input.connections,
    nat: { local: input.local, peer: input.peerNat },
    punchPlan: plan,
    reason: { code, text },
    wouldChange,
    attempts: input.attempts,
  };
}

/** `leafmesh netcheck`: the NAT detected again now (with its evidence), each upstream timed, the LAN peers mDNS showed. */
export async function gatherNetcheck(parts: {
  node: string;
  punches: PunchCoordinator;
  host: TunnelHost;
  connections: PathConnections;
  reasons: PathReasons;
  clock: Clock;
  observer?: ObserverAddress;
  mdns: boolean;
  measureUpstreams?: () => Promise<{ url: string; rttMs?: number }[]>;
}): Promise<Netcheck> {
  const { punches, host, reasons, connections } = parts;
  const [nat, upstreams] = await Promise.all([
    punches.detectNow().then(
      (detection): Netcheck["nat"] => ({ node: parts.node, type: detection.type, mapped: detection.mapped, ...(detection.evidence ? { evidence: detection.evidence } : {}), source: "measured", at: detection.at }),
      (error: unknown): Netcheck["nat"] => ({ node: parts.node, type: punches.nat, source: "none", error: describeError(error) }),
    ),
    parts.measureUpstreams?.() ?? Promise.resolve([]),
  ]);
  const lan = reasons.lanPeers().map((peer) => {
    const node = host.nodeOf(peer.peerId);
    return { ...peer, ...(node ? { node } : {}), connected: connections.ranked(peer.peerId).some((entry) => entry.kind === "direct") };
  });
  return { node: parts.node, at: nowIso(parts.clock.now), nat, ...(parts.observer ? { observer: parts.observer } : {}), upstreams, lan, mdns: parts.mdns };
}
