/**
 * Relay choice on an agent: a node given several upstreams keeps measuring each
 * (a probe round every few seconds: the time to the leafnode port's INFO line,
 * and whether it answered at all) and follows the relay load each hub publishes
 * (`mesh.<hub>.fabric.load`, roles/hub-load.ts). Its relayed streams all ride its
 * one leaf link (docs/one-connection.md), so choosing a relay is choosing the
 * upstream the leaf attaches to: when the one in use stays worse than the best
 * other by the margin for N rounds in a row (nats/relay-score.ts), the leaf moves
 * there — the remote is rendered again with that upstream first and the local
 * nats-server restarted with it (remotes cannot change by reload on 2.9.10). No
 * second connection to the cloud is kept: a probe is a connection that closes as
 * soon as the server's first line arrives.
 *
 * Relayed channels open at the move lose the frames in flight while the leaf
 * restarts; the relay channel's sequence check and idle timeout turn that into a
 * reset at both ends (services/tunnel/relay-channel.ts), never a short clean end.
 *
 * ```ts
 * const choice = new RelayChoice({ node, upstreams, bus, log, currentUpstream, moveLeaf });
 * choice.start();
 * choice.status(); // { inUse, scores: [...], verdict, lastMove }
 * ```
 */
import type { Bus } from "../bus/bus.ts";
import type { RelayChoiceStatus, RelayMoveStatus, RelayUpstreamScore } from "../bus/status.ts";
import { nowIso } from "../bus/events.ts";
import { hubLoadRoot } from "../bus/subjects.ts";
import type { Logger } from "../lib/log.ts";
import { systemClock, type Clock } from "../lib/clock.ts";
import { probeLeafPort, type LeafPortProbe } from "../nats/upstream-probe.ts";
import {
  decideMove,
  defaultScoreWeights,
  describe,
  orderAfterMove,
  scoreUpstream,
  type HubLoad,
  type ScoreWeights,
  type UpstreamProbe,
  type UpstreamScore,
} from "../nats/relay-score.ts";
import { defaultRelayChoiceSettings, type RelayChoiceSettings } from "./relay-choice-settings.ts";

export { defaultRelayChoiceSettings, type RelayChoiceSettings } from "./relay-choice-settings.ts";


/** A hub's load record as sent (roles/hub-load.ts), or undefined for anything else: two non-negative finite numbers. */
export function parseHubLoad(data: Uint8Array): HubLoad | undefined {
  try {
    const value = JSON.parse(new TextDecoder().decode(data)) as { channels?: unknown; bytesPerSecond?: unknown };
    const ok = (number: unknown): number is number => typeof number === "number" && Number.isFinite(number) && number >= 0;
    return ok(value.channels) && ok(value.bytesPerSecond) ? { channels: value.channels, bytesPerSecond: value.bytesPerSecond } : undefined;
  } catch {
    return undefined;
  }
}

/** How long a move's second event waits after the leaf server restarted (a round at least). */
const announceAfterMs = 1_000;


export interface RelayChoiceOptions {
  node: string;
  /** The upstream URLs in the order the leaf was rendered with. */
  upstreams: string[];
  bus: Bus;
  log: Logger;
  /** The URL the leaf is attached to now (the fabric monitor's upstream link). */
  currentUpstream: () => string | undefined;
  /** Renders the leaf remote in `order` and restarts the local server with it. */
  moveLeaf: (order: string[]) => Promise<void>;
  settings?: Partial<RelayChoiceSettings>;
  weights?: Partial<ScoreWeights>;
  clock?: Clock;
  /** Probe of one leafnode port; the real one unless a test hands in another. */
  probe?: (host: string, port: number, timeoutMs: number) => Promise<LeafPortProbe>;
}

export type { RelayChoiceStatus } from "../bus/status.ts";

export class RelayChoice {
  readonly #options: RelayChoiceOptions;
  readonly #settings: RelayChoiceSettings;
  readonly #weights: ScoreWeights;
  readonly #clock: Clock;
  readonly #windows = new Map<string, UpstreamProbe[]>();
  readonly #servers = new Map<string, string>();
  readonly #loads = new Map<string, HubLoad & { receivedAt: number }>();
  #order: string[];
  #scores: UpstreamScore[] = [];
  #badRounds = 0;
  #verdict = "measuring";
  #lastMoveAt = 0;
  #lastMove: RelayMoveStatus | undefined;
  #state: "measuring" | "moving" | "stopped" = "measuring";
  #timer: unknown;
  #unsubscribe: (() => void) | undefined;
  #round: Promise<void> | undefined;
  /** A move to announce again with the first round's scores through the new link (see the `upstream` event). */
  #toAnnounce: RelayMoveStatus | undefined;
  /** Not before then (the clock's ms). */
  #announceAt = 0;

  constructor(options: RelayChoiceOptions) {
    this.#options = options;
    this.#settings = { ...defaultRelayChoiceSettings, ...options.settings };
    this.#weights = { ...defaultScoreWeights, ...options.weights };
    this.#clock = options.clock ?? systemClock;
    this.#order = [...options.upstreams];
  }

  start(): void {
    // `fabric-load.<hub>`: published by hubs only (the mesh account), imported by every node account.
    const subscription = this.#options.bus.connection.subscribe(`${hubLoadRoot}.*`, {
      callback: (error, message) => {
        if (error) return;
        const hub = message.subject.slice(hubLoadRoot.length + 1);
        const load = parseHubLoad(message.data);
        if (!load) return;
        // Bounded: one entry per hub name heard, at most a thousand.
        if (!this.#loads.has(hub) && this.#loads.size >= 1_000) return;
        this.#loads.set(hub, { ...load, receivedAt: this.#clock.monotonic() });
      },
    });
    this.#unsubscribe = () => subscription.unsubscribe();
    this.#timer = this.#clock.setInterval(() => {
      if (!this.#round) this.#round = this.round().finally(() => (this.#round = undefined));
    }, this.#settings.probeIntervalMs);
  }

  async stop(): Promise<void> {
    this.#state = "stopped";
    this.#clock.clearInterval(this.#timer);
    this.#unsubscribe?.();
    await this.#round;
  }

  /** One probe round: probe every upstream, score, decide, and move the leaf if the decision says so. */
  async round(): Promise<void> {
    if (this.#state !== "measuring") return;
    const probe = this.#options.probe ?? probeLeafPort;
    await Promise.all(
      this.#options.upstreams.map(async (url) => {
        const parsed = new URL(url);
        const result = await probe(parsed.hostname.replace(/^\[|\]$/g, ""), Number(parsed.port), this.#settings.probeTimeoutMs);
        if (result.server) this.#servers.set(url, result.server);
        const window = this.#windows.get(url) ?? [];
        window.push({ ok: result.ok, ...(result.rttMs !== undefined ? { rttMs: result.rttMs } : {}) });
        if (window.length > this.#settings.windowRounds) window.shift();
        this.#windows.set(url, window);
      }),
    );
    if (this.#state !== "measuring") return;
    // Ages and hold times on the monotonic clock: NTP setting the wall clock must not hold a move, or make a load look fresh.
    const now = this.#clock.monotonic();
    this.#scores = this.#options.upstreams.map((url) => {
      const server = this.#servers.get(url);
      const load = server ? this.#loads.get(server) : undefined;
      const fresh = load && now - load.receivedAt <= this.#settings.loadMaxAgeMs ? { channels: load.channels, bytesPerSecond: load.bytesPerSecond } : undefined;
      return scoreUpstream({ url, server, probes: this.#windows.get(url) ?? [], load: fresh }, this.#weights);
    });
    const current = this.#options.currentUpstream();
    const announce = this.#toAnnounce;
    // Through the new link, once it has been up a while: the hubs' interest reaches a new leaf link a moment after it
    // is up, longer on a busy machine, and an event published before is dropped (the lab test missed it under load).
    if (announce && current === announce.to && now >= this.#announceAt) {
      this.#toAnnounce = undefined;
      this.#options.bus.publish("fabric", "upstream", { at: nowIso(() => this.#clock.now()), from: announce.from, to: announce.to, reason: announce.reason, scores: announce.scores, movedInMs: announce.movedInMs, after: this.#scores.map(eventScore) });
    }
    const decision = decideMove(this.#scores, { current, badRounds: this.#badRounds, lastMoveAt: this.#lastMoveAt }, this.#settings, now);
    this.#badRounds = decision.badRounds;
    if (decision.verdict !== this.#verdict && decision.badRounds > 0) this.#options.log.info({ badRounds: decision.badRounds }, `relay choice: ${decision.verdict}`);
    this.#verdict = decision.verdict;
    if (decision.move) await this.#move(decision.move.from, decision.move.to, decision.move.reason);
  }

  async #move(from: UpstreamScore, to: UpstreamScore, reason: string): Promise<void> {
    this.#state = "moving";
    const order = orderAfterMove(this.#scores, to.url);
    const move: RelayMoveStatus = { at: nowIso(() => this.#clock.now()), from: from.url, to: to.url, reason, scores: this.#scores.map(eventScore) };
    this.#lastMove = move;
    this.#lastMoveAt = this.#clock.monotonic();
    const { log, bus } = this.#options;
    log.warn({ from: from.url, to: to.url, scores: this.#scores.map(describe), order }, `relay choice: moving the leaf link to ${describe(to)}: ${reason}`);
    bus.publish("fabric", "upstream", { at: move.at, from: move.from, to: move.to, reason, scores: this.#scores.map(eventScore) });
    const started = this.#clock.monotonic();
    try {
      await this.#options.moveLeaf(order);
      this.#order = order;
      move.movedInMs = this.#clock.monotonic() - started;
      this.#announceAt = this.#clock.monotonic() + announceAfterMs;
      log.info({ to: to.url, movedInMs: move.movedInMs }, "relay choice: the leaf server restarted with the new upstream first");
      // Published now it could be lost (the hub's interest reaches a new leaf link a moment after it is up): after the next round.
      this.#toAnnounce = move;
    } catch (error) {
      move.error = error instanceof Error ? error.message : String(error);
      log.error({ err: error, to: to.url }, "relay choice: moving the leaf link failed; the leaf's own failover goes on");
    } finally {
      // Judged afresh from the new position: the old window of the new upstream stays, the count starts over.
      this.#badRounds = 0;
      if (this.#state === "moving") this.#state = "measuring";
    }
  }

  status(): RelayChoiceStatus {
    return {
      inUse: this.#options.currentUpstream() ?? null,
      order: this.#order,
      scores: this.#scores.map(eventScore),
      badRounds: this.#badRounds,
      verdict: this.#verdict,
      ...(this.#lastMove ? { lastMove: this.#lastMove } : {}),
      settings: { ...this.#settings, ...this.#weights } as unknown as Record<string, number>,
    };
  }
}

function eventScore(score: UpstreamScore): RelayUpstreamScore {
  return { ...score, score: Number.isFinite(score.score) ? score.score : null };
}
