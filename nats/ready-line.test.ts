/** The supervisor's wait between readiness checks ends when the server says it is ready (nats/ready-line.ts). */
import { describe, expect, it } from "vitest";
import { ReadyLine } from "./ready-line.ts";

describe("ReadyLine", () => {
  it("a wait ends when nats-server's ready line comes, and only that line ends it", async () => {
    const said = new ReadyLine();
    let ended = false;
    const waiting = said.within(60_000).then(() => (ended = true));
    said.read("[1] 2026/12/07 04:00:00.000000 [INF] Listening for client connections on 127.0.0.1:4222");
    await new Promise((resolve) => setImmediate(resolve));
    expect(ended).toBe(false);
    expect(said.ready).toBe(false);
    said.read("[1] 2026/12/07 04:00:00.000001 [INF] Server is ready");
    await waiting;
    expect(said.ready).toBe(true);
  });

  it("a wait after the line was read runs its time: the line is said once", async () => {
    const said = new ReadyLine();
    said.read("[INF] Server is ready");
    let ended = false;
    const waiting = said.within(20).then(() => (ended = true));
    said.read("[INF] Server is ready");
    await new Promise((resolve) => setImmediate(resolve));
    expect(ended).toBe(false);
    await waiting;
  });
});
