/**
 * Punch requests per peer (punch-coordinator.ts, issue 15 item 7): each punch an
 * answering node takes on holds a port, an observer query and a socket for up to
 * the punch timeout; a peer asking for more at once than its limit is declined
 * with the reason, counted, while another peer's request is still taken on.
 */
import { describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { freePort } from "../../test/support/ports.ts";
import { PunchCoordinator, type PunchRequest } from "./punch-coordinator.ts";

describe("punch requests per peer", () => {
  it("declines a peer's punch over its limit with the reason, and still takes on another peer's", async () => {
    // An observer address where nothing answers: every punch taken on fails at its observer query, after the limit was checked.
    const coordinator = new PunchCoordinator({
      nats: undefined as never,
      bus: undefined as never,
      node: "edge-b",
      log: silentLogger(),
      observer: { host: "127.0.0.1", ports: [await freePort(), await freePort()] },
      recordOf: () => undefined,
      peerId: () => "peer-b",
      servesTlsStreams: () => true,
      onPunched: () => undefined,
      maxPunchesPerPeer: 2,
    });
    const request = (from: string): PunchRequest => ({ from, peerId: `peer-${from}`, nat: "full-cone", mapped: { host: "127.0.0.1", port: 4000 }, purpose: "tls-stream" });
    const answers = [coordinator.answer(request("edge-a")), coordinator.answer(request("edge-a")), coordinator.answer(request("edge-a")), coordinator.answer(request("edge-c"))];
    const settled = await Promise.allSettled(answers);
    expect(settled[2]).toEqual({ status: "fulfilled", value: { error: "edge-b has 2 punches under way for edge-a, its limit" } });
    // Taken on (then failed at the observer): not declined for the limit.
    for (const index of [0, 1, 3]) expect(JSON.stringify(settled[index])).not.toContain("its limit");
    expect(coordinator.refused.get("peer over its punch limit")).toBe(1);
    // Done punches give their places back.
    const again = await coordinator.answer(request("edge-a")).catch((error: unknown) => ({ error: String(error) }));
    expect(JSON.stringify(again)).not.toContain("its limit");
  });
});
