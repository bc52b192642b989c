/**
 * The punch coordinator: this node's NAT as the observer measured it, and the
 * agreement of a TCP hole punch with a peer through the fabric
 * (`rpc.<node>.tunnel-punch`): the asking side sends its mapped address and
 * NAT type, the answering side replies with its own and both open the socket
 * by the plan of nat.ts (punch.ts opens it). What a punched socket becomes is
 * the asker's purpose: the pair's libp2p connection (a hole-punched path), or
 * one tunnel stream under TLS (the punched TLS carrier's spare).
 *
 * The answering side is where a peer's requests arrive: the home of what limits
 * them.
 *
 * ```ts
 * const punches = new PunchCoordinator({ nats, bus, node: "edge-a", log, observer, directory, peerId: () => id, onPunched });
 * punches.start();                                  // detects the NAT, answers peers
 * const socket = await punches.punch(record, "libp2p");
 * ```
 */
import { isIPv6, type Socket } from "node:net";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Bus } from "../../bus/bus.ts";
import type { NatType, NodeRecord } from "../../bus/node-record.ts";
import { LeafmeshError, describeError } from "../../lib/errors.ts";
import { BurstLog } from "../../lib/burst-log.ts";
import { systemClock } from "../../lib/clock.ts";
import type { Logger } from "../../lib/log.ts";
import { rpc, type PunchPurpose, type PunchReply, type PunchRequest } from "../../bus/rpc.ts";
import { rpcRequest, RpcError } from "../../bus/bus.ts";
import { askObserver, detectNat, freeLocalPort, punchPlan, type HostPort, type NatDetection, type ObserverAddress } from "./nat.ts";
import { acceptOnce, dialPunched, primeRestrictedCone, simultaneousOpen } from "./punch.ts";

export type { PunchPurpose, PunchReply, PunchRequest } from "../../bus/rpc.ts";

import { defaultMaxPunchesPerPeer } from "./limits.ts";

export { defaultMaxPunchesPerPeer };

export interface PunchCoordinatorOptions {
  nats: NatsConnection;
  bus: Bus;
  node: string;
  log: Logger;
  /** The NAT observer next to the hubs; without it the NAT stays "unknown" and this node neither asks nor answers punches. */
  observer?: ObserverAddress;
  /** @default true — false: this node declines every punch (tests, odd networks). */
  allowed?: boolean;
  /** @default 8_000 — a hole punch that has not connected by then has failed. */
  punchTimeoutMs?: number;
  /** Other nodes' records: an asker's peer id must be its record's. */
  recordOf: (node: string) => NodeRecord | undefined;
  /** This node's libp2p peer id, sent with each request. */
  peerId: () => string;
  /** Whether this node serves TLS streams (a "tls-stream" punch is declined otherwise). */
  servesTlsStreams: () => boolean;
  /** The answering side's punched socket, for what the asker meant it. */
  onPunched: (socket: Socket, purpose: PunchPurpose, from: string) => Promise<unknown> | void;
  /** How each punch a peer asked for ended on this side (`status --why` on the side that did not ask). */
  onAnswered?: (from: string, outcome: { plan: string; ok: boolean; ms: number; detail: string }) => void;
  /**
   * @default 16 — punches one peer may have under way here at once (each holds a port, an
   * observer query and a socket for up to the punch timeout); the next is declined with the
   * reason, counted in `refused` (issue 15 item 7). A node's spares need one at a time.
   */
  maxPunchesPerPeer?: number;
  /**
   * @default natRemeasureMs — how often the NAT is measured again while nothing else says it changed: a carrier's
   * re-dial gives the node another public address (and may give it another NAT) with nothing changed on the node.
   */
  remeasureMs?: number;
  /** A measurement after the first found another public address or NAT type (the node record is put again at once). */
  onChanged?: (detection: NatDetection) => void;
  /**
   * Security on: signs this node's requests, and says why a peer's request does not prove its
   * `from` (services/tunnel/punch-proof.ts). Such a request is declined before it takes a place.
   */
  proof?: {
    sign: (request: PunchRequest, to: string) => PunchRequest;
    check: (request: PunchRequest) => string | undefined;
  };
}

/**
 * @default 300_000 — the NAT is measured again every 5 minutes at least (a few TCP connections to the observer
 * each time: 1,000 nodes cost it ~3 a second). Sooner when there is a sign: a punch's observer query sees this
 * node at another public address (a punch follows every lost punched path), or this host's addresses changed.
 */
export const natRemeasureMs = 300_000;
/** @default 10_000 — measurements of the NAT start no closer together than this, whatever asks for them. */
export const natRemeasureMinGapMs = 10_000;

export class PunchCoordinator {
  readonly #options: PunchCoordinatorOptions;
  #nat: NatType = "unknown";
  #mapped: HostPort | undefined;
  #detection: (NatDetection & { at: string }) | undefined;
  #stopServe: (() => void) | undefined;
  #stopped = false;
  readonly #answering = new Map<string, number>();
  /** Punch requests declined for a limit, by reason. */
  readonly refused = new Map<string, number>();
  #refusals: BurstLog | undefined;
  #remeasureTimer: ReturnType<typeof setInterval> | undefined;
  /** The measurement under way, if any; when the last one started (performance.now()). */
  #measuring: Promise<void> | undefined;
  #lastMeasureStarted = -Infinity;

  constructor(options: PunchCoordinatorOptions) {
    this.#options = options;
  }

  /** This node's NAT type, once measured. */
  get nat(): NatType {
    return this.#nat;
  }

  /** This node's address as the observer saw it (published in the node record). */
  get mapped(): HostPort | undefined {
    return this.#mapped;
  }

  /** The last detection with what it was concluded from (status --why, netcheck, the node record). */
  get detection(): (NatDetection & { at: string }) | undefined {
    return this.#detection;
  }

  /** Runs the NAT detection again now (netcheck); the result replaces the last one. */
  async detectNow(): Promise<NatDetection & { at: string }> {
    if (!this.#options.observer) throw new LeafmeshError("TUNNEL_FAILED", "no NAT observer configured (agent --observer): the NAT cannot be measured");
    const detection = { ...(await detectNat({ observer: this.#options.observer })), at: new Date().toISOString() };
    this.#nat = detection.type;
    this.#mapped = detection.mapped;
    this.#detection = detection;
    return detection;
  }

  /** Answers peers' punch requests; detects the NAT in the background (bounded retries). */
  start(): void {
    this.#stopServe = this.#options.bus.serve(rpc.tunnelPunch, (request) => this.answer(request));
    if (!this.#options.observer) return;
    void this.#detect(this.#options.observer);
    // Also after a first detection that gave up (the observer away at the start).
    this.#remeasureTimer = setInterval(() => void this.remeasure("its periodic measurement"), this.#options.remeasureMs ?? natRemeasureMs);
    this.#remeasureTimer.unref();
  }

  stop(): void {
    this.#stopped = true;
    this.#stopServe?.();
    clearInterval(this.#remeasureTimer);
  }

  /**
   * Measures the NAT again, saying why (logged with what changed); at most one at a time and none within
   * natRemeasureMinGapMs of the last. A failed measurement keeps the last result. Resolves when it is done.
   */
  remeasure(why: string): Promise<void> {
    const observer = this.#options.observer;
    if (!observer || this.#stopped) return Promise.resolve();
    if (this.#measuring) return this.#measuring;
    if (performance.now() - this.#lastMeasureStarted < natRemeasureMinGapMs) return Promise.resolve();
    this.#lastMeasureStarted = performance.now();
    const before = this.#detection;
    this.#measuring = detectNat({ observer })
      .then((detection) => {
        if (this.#stopped) return;
        this.#nat = detection.type;
        this.#mapped = detection.mapped;
        this.#detection = { ...detection, at: new Date().toISOString() };
        if (before?.mapped.host === detection.mapped.host && before.type === detection.type) return;
        this.#options.log.info({ why, nat: detection.type, was: before?.type, mapped: detection.mapped, wasMapped: before?.mapped }, "NAT measured again: this node's public address or NAT type changed; its record follows");
        this.#options.onChanged?.(detection);
      })
      .catch((error: unknown) => this.#options.log.warn({ why, err: describeError(error) }, "NAT measured again: failed; the last measurement stays"))
      .finally(() => (this.#measuring = undefined));
    return this.#measuring;
  }

  /** Why a punch to `record`'s node cannot be tried now, or undefined when it can. */
  cannotPunch(record: NodeRecord): string | undefined {
    if (punchPlan(this.#nat, record.nat) === "relay") return `not possible between ${this.#nat} and ${record.nat} NATs`;
    if (!this.#mapped || !this.#options.observer) return "own mapped address unknown (no NAT observer)";
    const peerHost = record.observed[0]?.host;
    if (peerHost && familyOf(peerHost) !== familyOf(this.#mapped.host)) return acrossFamilies(this.#mapped.host, record.node, peerHost);
    return undefined;
  }

  /** Both NATs measured and published (the punch plan and the address to admit depend on them). */
  measured(record: NodeRecord | undefined): boolean {
    return this.#options.observer !== undefined && this.#mapped !== undefined && this.#nat !== "unknown" && record !== undefined && record.nat !== "unknown" && record.observed.length > 0;
  }

  /** Punches a TCP connection to `record`'s node, agreed through the fabric (rpc.<node>.tunnel-punch). */
  async punch(record: NodeRecord, purpose: PunchPurpose): Promise<Socket> {
    const plan = punchPlan(this.#nat, record.nat);
    const timeoutMs = this.#options.punchTimeoutMs ?? 8_000;
    const peerHost = record.observed[0]?.host;
    if (plan === "relay") throw new LeafmeshError("TUNNEL_FAILED", `cannot punch between ${this.#nat} and ${record.nat} NATs`);
    if (peerHost && this.#mapped && familyOf(peerHost) !== familyOf(this.#mapped.host)) throw new LeafmeshError("TUNNEL_FAILED", acrossFamilies(this.#mapped.host, record.node, peerHost));
    // Listening, we admit only the peer's address: without it (its NAT not measured yet) nothing could come in.
    if (plan === "a-listens" && !peerHost) throw new LeafmeshError("TUNNEL_FAILED", `${record.node}'s mapped address is not known yet`);
    const localPort = await freeLocalPort();
    const mapped = await this.#observe(localPort);
    let accepting: Promise<Socket> | undefined;
    if (plan === "a-listens") {
      // We are the cone side: listen, and open a restricted cone towards the peer's address.
      accepting = acceptOnce({ localPort, fromHost: peerHost ?? "", timeoutMs });
      accepting.catch(() => undefined);
      if (this.#nat === "restricted-cone" && peerHost) primeRestrictedCone(peerHost);
    }
    const unsigned: PunchRequest = { from: this.#options.node, peerId: this.#options.peerId(), nat: this.#nat, mapped, purpose };
    const request = this.#options.proof ? this.#options.proof.sign(unsigned, record.node) : unsigned;
    let reply: PunchReply;
    try {
      reply = await rpcRequest(this.#options.nats, record.node, rpc.tunnelPunch, request, 5_000);
    } catch (error) {
      if (error instanceof RpcError) throw new LeafmeshError("TUNNEL_FAILED", `${record.node} declined the punch: ${error.message}`, { cause: error });
      throw error;
    }
    if (!reply.mapped) throw new LeafmeshError("TUNNEL_FAILED", `${record.node} declined the punch: ${reply.error ?? "no reason"}`);
    if (plan === "simultaneous") return simultaneousOpen({ localPort, remote: reply.mapped, timeoutMs });
    if (plan === "a-listens") return accepting!;
    return dialPunched({ remote: reply.mapped, timeoutMs });
  }

  /** The answering side of a punch: replies at once, and opens its side of the socket in the background. */
  async answer(request: PunchRequest): Promise<PunchReply> {
    const { observer, node } = this.#options;
    if (!observer || this.#options.allowed === false) return { error: `${node} does not punch (no NAT observer configured)` };
    if (typeof request?.from !== "string" || typeof request.mapped?.host !== "string" || !Number.isInteger(request.mapped?.port)) return { error: "malformed punch request" };
    const purpose = request.purpose ?? "libp2p";
    // Said as JSON: String() of a peer's object ({"toString":1}) throws.
    if (purpose !== "libp2p" && purpose !== "tls-stream") return { error: `unknown punch purpose ${JSON.stringify(purpose).slice(0, 40)}` };
    if (purpose === "tls-stream" && !this.#options.servesTlsStreams()) return { error: `${node} does not serve TLS streams` };
    // Before anything is counted under `from`: a request that does not prove it would take that node's places.
    const unproven = this.#options.proof?.check(request);
    if (unproven) {
      this.refused.set("asker not proven", (this.refused.get("asker not proven") ?? 0) + 1);
      (this.#refusals ??= new BurstLog({ log: this.#options.log, clock: systemClock, message: "punch request declined" })).note("asker not proven", { claimed: request.from, why: unproven });
      return { error: unproven };
    }
    const record = this.#options.recordOf(request.from);
    if (record && record.peerId !== request.peerId) return { error: "peer id does not match the node record" };
    const under = this.#answering.get(request.from) ?? 0;
    const limit = this.#options.maxPunchesPerPeer ?? defaultMaxPunchesPerPeer;
    if (under >= limit) {
      this.refused.set("peer over its punch limit", (this.refused.get("peer over its punch limit") ?? 0) + 1);
      (this.#refusals ??= new BurstLog({ log: this.#options.log, clock: systemClock, message: "punch request declined" })).note("peer over its punch limit", { peer: request.from, under });
      return { error: `${node} has ${under} punches under way for ${request.from}, its limit` };
    }
    this.#answering.set(request.from, under + 1);
    let handedOver = false;
    try {
      const reply = await this.#answerPunch(request, purpose, () => (handedOver = true), () => this.#doneAnswering(request.from));
      return reply;
    } finally {
      if (!handedOver) this.#doneAnswering(request.from);
    }
  }

  #doneAnswering(from: string): void {
    const left = (this.#answering.get(from) ?? 1) - 1;
    if (left > 0) this.#answering.set(from, left);
    else this.#answering.delete(from);
  }

  /** A punch request that passed the checks: opens this side in the background; `handOver` once that runs, `done` when it ends. */
  async #answerPunch(request: PunchRequest, purpose: PunchPurpose, handOver: () => void, done: () => void): Promise<PunchReply> {
    // The plan from the requester's side: "a" is the requester.
    const plan = punchPlan(request.nat, this.#nat);
    const timeoutMs = this.#options.punchTimeoutMs ?? 8_000;
    if (this.#mapped && familyOf(request.mapped.host) !== familyOf(this.#mapped.host)) return { error: acrossFamilies(this.#mapped.host, request.from, request.mapped.host) };
    const localPort = await freeLocalPort();
    const mapped = await this.#observe(localPort);
    const started = performance.now();
    const answered = (ok: boolean, detail: string) => this.#options.onAnswered?.(request.from, { plan, ok, ms: performance.now() - started, detail });
    const finish = (socketPromise: Promise<Socket>) => {
      handOver();
      return socketPromise
        .then((socket) => {
          answered(true, `${request.from} asked for a ${purpose} punch (plan ${plan}): connected from ${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`);
          return this.#options.onPunched(socket, purpose, request.from);
        })
        .catch((error) => {
          answered(false, `${request.from} asked for a ${purpose} punch (plan ${plan}): ${describeError(error)}`);
          this.#options.log.info({ peer: request.from, err: describeError(error) }, "punch (answering side) failed");
        })
        .finally(done);
    };
    if (plan === "simultaneous") void finish(simultaneousOpen({ localPort, remote: request.mapped, timeoutMs }));
    else if (plan === "b-listens") {
      const accepting = acceptOnce({ localPort, fromHost: request.mapped.host, timeoutMs });
      if (this.#nat === "restricted-cone") primeRestrictedCone(request.mapped.host);
      void finish(accepting);
    } else if (plan === "a-listens") void finish(dialPunched({ remote: request.mapped, timeoutMs }));
    else return { error: `cannot punch between ${request.nat} and ${this.#nat}` };
    return { mapped };
  }

  async #observe(localPort: number): Promise<HostPort> {
    const observer = this.#options.observer!;
    const { observed } = await askObserver<{ observed: HostPort }>({ host: observer.host, port: observer.ports[0] }, localPort, "observe");
    // The observer sees this node elsewhere than the last measurement said (a carrier's re-dial): its record is stale.
    if (this.#mapped && observed.host !== this.#mapped.host) void this.remeasure(`a punch's observer query saw this node at ${observed.host}, not ${this.#mapped.host}`);
    return observed;
  }

  async #detect(observer: ObserverAddress): Promise<void> {
    // Bounded retries: the observer may come up after the agent.
    for (let attempt = 0; attempt < 5 && !this.#stopped; attempt++) {
      this.#lastMeasureStarted = performance.now();
      try {
        const detection = await detectNat({ observer });
        this.#nat = detection.type;
        this.#mapped = detection.mapped;
        this.#detection = { ...detection, at: new Date().toISOString() };
        this.#options.log.info({ nat: detection.type, mapped: detection.mapped }, "NAT behaviour detected");
        return;
      } catch (error) {
        this.#options.log.warn({ err: describeError(error), attempt }, "NAT detection failed; retrying");
        await new Promise((resolve) => setTimeout(resolve, 1_000 * (attempt + 1)));
      }
    }
  }
}

function familyOf(host: string): "IPv4" | "IPv6" {
  return isIPv6(host) && !/^::ffff:\d/i.test(host) ? "IPv6" : "IPv4";
}

/** Why two nodes seen in different address families are not punched: no TCP connection joins an IPv4 end to an IPv6 one. */
function acrossFamilies(ownHost: string, peer: string, peerHost: string): string {
  return `not possible across address families: the observer sees this node at ${familyOf(ownHost)} ${ownHost}, ${peer} at ${familyOf(peerHost)} ${peerHost} (relayed)`;
}
