/**
 * Relay choice, the pure part: one score per upstream from its recent probes
 * (round-trip time, loss) and the relay load its hub publishes, and the
 * decision to move the leaf link — which carries every relayed stream of the
 * node — to another upstream. No socket and no clock here: roles/relay-choice.ts
 * probes, keeps the windows and acts; docs/relay-choice.md explains the numbers.
 *
 * ```ts
 * const a = scoreUpstream({ url: "nats-leaf://hub-a:7422", probes, load }, defaultScoreWeights);
 * a.score; // ms-equivalents, lower is better: rtt + loss × 1000 + channels × 2 + MiB/s × 5
 * const decision = decideMove([a, b], { current: a.url, badRounds: 2, lastMoveAt: 0 }, defaultChoiceSettings, now);
 * decision.move; // { to: b.url, reason: "..." } after 3 bad rounds in a row
 * ```
 */

/** One probe of an upstream's leafnode port: answered (with the time to its INFO line) or not. */
export interface UpstreamProbe {
  ok: boolean;
  rttMs?: number;
}

/** What a hub publishes of its relay work (`mesh.<hub>.fabric.load`, roles/hub-load.ts). */
export interface HubLoad {
  /** Relay channels open through it (counted once per channel, over the nodes attached to it). */
  channels: number;
  /** Bytes per second through its leaf connections (relayed bytes are most of them). */
  bytesPerSecond: number;
}

export interface ScoreWeights {
  /**
   * @default 1_000 — ms added per unit of loss: 10% of probes unanswered costs as much as 100 ms
   * of round trip. A lost TCP segment costs a retransmit timeout (≥ 200 ms on Linux) on every
   * relayed stream it hits, so loss weighs far more than its share.
   */
  lossPenaltyMs: number;
  /** @default 2 — ms added per relay channel open through the hub: 50 busy channels ≈ 100 ms. */
  channelPenaltyMs: number;
  /** @default 5 — ms added per MiB/s through the hub's leaf connections: a hub moving 20 MiB/s ≈ 100 ms. */
  loadPenaltyMsPerMiBps: number;
}

export const defaultScoreWeights: ScoreWeights = { lossPenaltyMs: 1_000, channelPenaltyMs: 2, loadPenaltyMsPerMiBps: 5 };

export interface UpstreamScore {
  url: string;
  /** The hub's server name as its INFO line said it (the key of its published load). */
  server?: string;
  /** Median round trip of the answered probes in the window; undefined when none answered. */
  rttMs?: number;
  /** Share of the window's probes that went unanswered (0..1). */
  loss: number;
  probes: number;
  load?: HubLoad;
  /** rtt + loss × lossPenalty + channels × channelPenalty + MiB/s × loadPenalty; Infinity when unreachable. */
  score: number;
}

/** The score of one upstream from its window of probes and its hub's last published load. */
export function scoreUpstream(input: { url: string; server?: string; probes: readonly UpstreamProbe[]; load?: HubLoad }, weights: ScoreWeights = defaultScoreWeights): UpstreamScore {
  const answered = input.probes.filter((probe) => probe.ok && probe.rttMs !== undefined).map((probe) => probe.rttMs!);
  const loss = input.probes.length === 0 ? 0 : (input.probes.length - answered.length) / input.probes.length;
  const rttMs = answered.length === 0 ? undefined : round(median(answered));
  const base = { url: input.url, ...(input.server ? { server: input.server } : {}), ...(rttMs !== undefined ? { rttMs } : {}), loss: round(loss), probes: input.probes.length, ...(input.load ? { load: input.load } : {}) };
  if (rttMs === undefined) return { ...base, score: Infinity };
  const load = input.load ? input.load.channels * weights.channelPenaltyMs + (input.load.bytesPerSecond / (1024 * 1024)) * weights.loadPenaltyMsPerMiBps : 0;
  return { ...base, score: round(rttMs + loss * weights.lossPenaltyMs + load) };
}

export interface ChoiceSettings {
  /** @default 3 — probe rounds in a row the upstream in use must be worse than the best other by the margin before the leaf moves (one slow round is noise). */
  badRounds: number;
  /**
   * @default 50 — the best other must be better by at least this many ms-equivalents (and by marginRatio):
   * moving costs a leaf restart, and a probe's time jitters by tens of ms on a busy node (20 ms was
   * crossed twice in a row by jitter alone in the lab, on 2 shared cores).
   */
  marginMs: number;
  /** @default 0.5 — and better by this share of its own score: 50 ms vs 80 ms is not worth a move, 50 vs 200 is. */
  marginRatio: number;
  /** @default 30_000 — after a move, no other move for this long: a leaf that just moved settles before it is judged again (no flapping). */
  holdMs: number;
}

export const defaultChoiceSettings: ChoiceSettings = { badRounds: 3, marginMs: 50, marginRatio: 0.5, holdMs: 30_000 };

export interface ChoiceState {
  /** The upstream the leaf is attached to now (undefined while it is attached to none). */
  current?: string;
  /** Bad rounds in a row so far. */
  badRounds: number;
  /** When the leaf last moved (ms, the caller's clock); 0: never. */
  lastMoveAt: number;
}

export interface Decision {
  badRounds: number;
  /** Why this round counted as bad, or why nothing moves. */
  verdict: string;
  move?: { from: UpstreamScore; to: UpstreamScore; reason: string };
}

/** The lowest score first; ties keep the given order. */
export function rankUpstreams(scores: readonly UpstreamScore[]): UpstreamScore[] {
  return scores.map((score, index) => ({ score, index })).sort((a, b) => a.score.score - b.score.score || a.index - b.index).map((entry) => entry.score);
}

/**
 * One round's decision: is the upstream in use worse than the best other by the margin
 * (both marginMs and marginRatio of the other's score), and has it been for badRounds
 * rounds in a row, outside the hold after a move? Then move to the best other.
 */
export function decideMove(scores: readonly UpstreamScore[], state: ChoiceState, settings: ChoiceSettings, now: number): Decision {
  const current = scores.find((score) => score.url === state.current);
  if (!current) return { badRounds: 0, verdict: "not attached to any upstream measured: the leaf's own failover decides" };
  const best = rankUpstreams(scores.filter((score) => score.url !== current.url))[0];
  if (!best || best.score === Infinity) return { badRounds: 0, verdict: "no other upstream answers" };
  const margin = Math.max(settings.marginMs, best.score * settings.marginRatio);
  if (!(current.score - best.score > margin)) return { badRounds: 0, verdict: `in use ${describe(current)} is within the margin (${round(margin)}) of the best other ${describe(best)}` };
  const badRounds = state.badRounds + 1;
  const reason = `${describe(current)} in use is worse than ${describe(best)} by ${current.score === Infinity ? "all" : round(current.score - best.score)} (margin ${round(margin)}) for ${badRounds} probe rounds in a row`;
  if (badRounds < settings.badRounds) return { badRounds, verdict: `${reason}; moving after ${settings.badRounds}` };
  if (state.lastMoveAt > 0 && now - state.lastMoveAt < settings.holdMs) return { badRounds, verdict: `${reason}; held: the last move was ${now - state.lastMoveAt} ms ago (hold ${settings.holdMs} ms)` };
  return { badRounds: 0, verdict: reason, move: { from: current, to: best, reason } };
}

/** The upstream order to render after a move: the chosen one first, the others by score. */
export function orderAfterMove(scores: readonly UpstreamScore[], chosen: string): string[] {
  return [chosen, ...rankUpstreams(scores.filter((score) => score.url !== chosen)).map((score) => score.url)];
}

export function describe(score: UpstreamScore): string {
  const parts = [score.rttMs === undefined ? "no answer" : `rtt ${score.rttMs}ms`, `loss ${Math.round(score.loss * 100)}%`];
  if (score.load) parts.push(`${score.load.channels} channels, ${formatRate(score.load.bytesPerSecond)}`);
  return `${score.server ?? score.url} (score ${score.score === Infinity ? "∞" : score.score}: ${parts.join(", ")})`;
}

function formatRate(bytesPerSecond: number): string {
  return bytesPerSecond >= 1024 * 1024 ? `${round(bytesPerSecond / (1024 * 1024))} MiB/s` : `${Math.round(bytesPerSecond / 1024)} KiB/s`;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
