import { describe, expect, it } from "vitest";
import { decideMove, defaultChoiceSettings, defaultScoreWeights, orderAfterMove, rankUpstreams, scoreUpstream, type UpstreamProbe, type UpstreamScore } from "./relay-score.ts";

const answered = (...rtts: number[]): UpstreamProbe[] => rtts.map((rttMs) => ({ ok: true, rttMs }));
const lost = (count: number): UpstreamProbe[] => Array.from({ length: count }, () => ({ ok: false }));
const a = "nats-leaf://hub-a:7422";
const b = "nats-leaf://hub-b:7422";
const c = "nats-leaf://hub-c:7422";

describe("scoreUpstream", () => {
  it("is the median RTT of the answered probes when nothing is lost and no load is known", () => {
    const score = scoreUpstream({ url: a, probes: answered(1, 9, 2, 3, 100) });
    expect(score).toMatchObject({ url: a, rttMs: 3, loss: 0, probes: 5, score: 3 });
  });

  it("adds the loss penalty for the share of probes unanswered", () => {
    const score = scoreUpstream({ url: a, probes: [...answered(10, 10, 10, 10, 10, 10, 10, 10, 10), ...lost(1)] });
    expect(score.loss).toBe(0.1);
    expect(score.score).toBe(10 + 0.1 * defaultScoreWeights.lossPenaltyMs);
  });

  it("adds the hub's published load: channels and MiB/s", () => {
    const score = scoreUpstream({ url: a, server: "hub-a", probes: answered(5), load: { channels: 10, bytesPerSecond: 4 * 1024 * 1024 } });
    expect(score.score).toBe(5 + 10 * defaultScoreWeights.channelPenaltyMs + 4 * defaultScoreWeights.loadPenaltyMsPerMiBps);
    expect(score.server).toBe("hub-a");
  });

  it("honours other weights", () => {
    const score = scoreUpstream({ url: a, probes: [...answered(5), ...lost(1)], load: { channels: 3, bytesPerSecond: 1024 * 1024 } }, { lossPenaltyMs: 100, channelPenaltyMs: 0, loadPenaltyMsPerMiBps: 10 });
    expect(score.score).toBe(5 + 50 + 10);
  });

  it("is Infinity when no probe answered, and 0 loss with no probe yet", () => {
    expect(scoreUpstream({ url: a, probes: lost(3) })).toMatchObject({ loss: 1, score: Infinity });
    expect(scoreUpstream({ url: a, probes: [] })).toMatchObject({ loss: 0, probes: 0, score: Infinity });
  });
});

const scored = (url: string, score: number): UpstreamScore => ({ url, loss: 0, probes: 10, rttMs: score, score });

describe("decideMove", () => {
  const settings = { ...defaultChoiceSettings, badRounds: 3, marginMs: 20, marginRatio: 0.5, holdMs: 30_000 };

  it("moves after the set number of bad rounds in a row, to the best other, with the reason", () => {
    const scores = [scored(a, 300), scored(b, 5), scored(c, 50)];
    let state = { current: a, badRounds: 0, lastMoveAt: 0 };
    const first = decideMove(scores, state, settings, 1_000);
    expect(first).toMatchObject({ badRounds: 1 });
    expect(first.move).toBeUndefined();
    state = { ...state, badRounds: first.badRounds };
    const second = decideMove(scores, state, settings, 2_000);
    expect(second.move).toBeUndefined();
    state = { ...state, badRounds: second.badRounds };
    const third = decideMove(scores, state, settings, 3_000);
    expect(third.move?.to.url).toBe(b);
    expect(third.move?.from.url).toBe(a);
    expect(third.move?.reason).toContain("3 probe rounds in a row");
    expect(third.badRounds).toBe(0);
  });

  it("starts the count over after a good round (hysteresis)", () => {
    const good = decideMove([scored(a, 10), scored(b, 5)], { current: a, badRounds: 2, lastMoveAt: 0 }, settings, 1_000);
    expect(good).toMatchObject({ badRounds: 0 });
    expect(good.move).toBeUndefined();
    expect(good.verdict).toContain("within the margin");
  });

  it("needs both the absolute and the relative margin", () => {
    // 15 better: under 20 ms.
    expect(decideMove([scored(a, 20), scored(b, 5)], { current: a, badRounds: 5, lastMoveAt: 0 }, settings, 1).move).toBeUndefined();
    // 30 better, but the other's 100 × 50% = 50 is the margin.
    expect(decideMove([scored(a, 130), scored(b, 100)], { current: a, badRounds: 5, lastMoveAt: 0 }, settings, 1).move).toBeUndefined();
    // 60 better than 100: past both.
    expect(decideMove([scored(a, 160), scored(b, 100)], { current: a, badRounds: 2, lastMoveAt: 0 }, settings, 1).move?.to.url).toBe(b);
  });

  it("moves away from an upstream in use that stopped answering, not to one that does not answer", () => {
    expect(decideMove([scored(a, Infinity), scored(b, 5)], { current: a, badRounds: 2, lastMoveAt: 0 }, settings, 1).move?.to.url).toBe(b);
    const none = decideMove([scored(a, 500), scored(b, Infinity)], { current: a, badRounds: 2, lastMoveAt: 0 }, settings, 1);
    expect(none.move).toBeUndefined();
    expect(none.verdict).toBe("no other upstream answers");
  });

  it("holds after a move", () => {
    const held = decideMove([scored(a, 300), scored(b, 5)], { current: a, badRounds: 2, lastMoveAt: 10_000 }, settings, 20_000);
    expect(held.move).toBeUndefined();
    expect(held.verdict).toContain("held");
    expect(decideMove([scored(a, 300), scored(b, 5)], { current: a, badRounds: 2, lastMoveAt: 10_000 }, settings, 40_001).move?.to.url).toBe(b);
  });

  it("leaves an unattached leaf to its own failover", () => {
    expect(decideMove([scored(a, 300), scored(b, 5)], { current: undefined, badRounds: 2, lastMoveAt: 0 }, settings, 1)).toMatchObject({ badRounds: 0 });
  });
});

describe("ranking and the order after a move", () => {
  it("ranks by score, ties in the given order, and renders the chosen first", () => {
    expect(rankUpstreams([scored(a, 7), scored(b, 5), scored(c, 5)]).map((score) => score.url)).toEqual([b, c, a]);
    expect(orderAfterMove([scored(a, 300), scored(b, 50), scored(c, 5)], b)).toEqual([b, c, a]);
  });
});

describe("parseHubLoad (what a hub's fabric-load record may be)", () => {
  it("takes two non-negative numbers and refuses anything else", async () => {
    const { parseHubLoad } = await import("../roles/relay-choice.ts");
    const bytes = (text: string) => new TextEncoder().encode(text);
    expect(parseHubLoad(bytes('{"channels":3,"bytesPerSecond":1024}'))).toEqual({ channels: 3, bytesPerSecond: 1024 });
    for (const bad of ['{"channels":-1,"bytesPerSecond":0}', '{"channels":"3","bytesPerSecond":0}', '{"channels":1e999,"bytesPerSecond":0}', "not json", "null", "[]", '{"channels":1}']) {
      expect(parseHubLoad(bytes(bad))).toBeUndefined();
    }
  });
});
