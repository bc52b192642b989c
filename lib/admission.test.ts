/**
 * Admission at a proxy's door (admission.ts) and its burst log (burst-log.ts),
 * pure: a manual clock, no sockets.
 */
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { Admission, AdmissionRefused, type AdmissionLimits, type AdmissionTicket } from "./admission.ts";
import { BurstLog } from "./burst-log.ts";
import { ManualClock } from "./clock.ts";
import { createLogger } from "./log.ts";

const limits = (overrides: Partial<AdmissionLimits> = {}): AdmissionLimits => ({ maxConnections: 4, maxOpening: 2, maxPerClient: 3, maxWaiting: 2, waitTimeoutMs: 1_000, ...overrides });

const reasonOf = (promise: Promise<unknown>) =>
  promise.then(
    () => "admitted",
    (error: unknown) => (error instanceof AdmissionRefused ? error.reason : String(error)),
  );

describe("admission", () => {
  it("admits up to the opening limit at once, queues the rest first come first served, and lets one in as an open finishes", async () => {
    const admission = new Admission({ clock: new ManualClock(), limits: limits({ maxPerClient: 10 }) });
    const first = await admission.admit("a");
    const second = await admission.admit("b");
    const order: string[] = [];
    const third = admission.admit("c").then((ticket) => (order.push("c"), ticket));
    const fourth = admission.admit("d").then((ticket) => (order.push("d"), ticket));
    expect(admission.counts).toMatchObject({ connections: 2, opening: 2, waiting: 2 });
    first.opened();
    await third;
    expect(order).toEqual(["c"]);
    second.opened();
    await fourth;
    expect(order).toEqual(["c", "d"]);
    expect(admission.counts).toMatchObject({ connections: 4, opening: 2, waiting: 0 });
  });

  it("holds the connections limit: an opened connection keeps its place until released", async () => {
    const admission = new Admission({ clock: new ManualClock(), limits: limits({ maxConnections: 2, maxPerClient: 10 }) });
    const tickets: AdmissionTicket[] = [await admission.admit("a"), await admission.admit("a")];
    for (const ticket of tickets) ticket.opened();
    let admitted = false;
    const waiting = admission.admit("b").then(() => (admitted = true));
    await Promise.resolve();
    expect(admitted).toBe(false);
    tickets[0].release();
    tickets[0].release(); // idempotent
    await waiting;
    expect(admission.counts).toMatchObject({ connections: 2, opening: 1, waiting: 0 });
  });

  it("refuses with a reason: a client over its share, a full queue, a wait too long, a client that left", async () => {
    const clock = new ManualClock();
    const admission = new Admission({ clock, limits: limits() });
    await admission.admit("greedy");
    await admission.admit("greedy");
    const queued = admission.admit("greedy");
    expect(await reasonOf(admission.admit("greedy"))).toBe("client over its limit");
    const left = new AbortController();
    const leaving = reasonOf(admission.admit("other", left.signal));
    expect(await reasonOf(admission.admit("third"))).toBe("queue full");
    left.abort();
    expect(await leaving).toBe("client left while queued");
    clock.advance(1_000);
    expect(await reasonOf(queued)).toBe("queue timeout");
    // Every refusal gave back what it held: the client may come again.
    expect(admission.counts).toMatchObject({ waiting: 0, clients: 1 });
  });

  it("refuses the waiting and every later connection once closed", async () => {
    const admission = new Admission({ clock: new ManualClock(), limits: limits({ maxOpening: 1 }) });
    await admission.admit("a");
    const waiting = reasonOf(admission.admit("b"));
    admission.close();
    expect(await waiting).toBe("closed");
    expect(await reasonOf(admission.admit("c"))).toBe("closed");
  });
});

describe("burst log", () => {
  it("says a burst of refusals in two lines: the first, then how many when it is over", () => {
    const clock = new ManualClock();
    const lines: { reason?: string; refused?: number; msg: string }[] = [];
    const log = createLogger({ level: "info", destination: new Writable({ write: (chunk, _encoding, callback) => (lines.push(JSON.parse(chunk.toString())), callback()) }) });
    const refusals = new BurstLog({ log, clock, message: "refused", quietMs: 1_000 });
    for (let i = 0; i < 500; i++) {
      refusals.note("queue full");
      clock.advance(5);
    }
    expect(lines).toHaveLength(1);
    clock.advance(1_000);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ reason: "queue full", refused: 500 });
    refusals.note("queue full");
    expect(lines).toHaveLength(3);
  });
});
