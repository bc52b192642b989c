/**
 * When a spare session is quiet (spares.ts): its peer not heard within spareHeardWithinMs of its take, counted from
 * its handshake and from what the carrier heard since (a relay channel's pings). Sessions are plain Duplexes here:
 * what is decided is a function of the clock; the sockets are early-bytes.test.ts's.
 */
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../lib/clock.ts";
import { isQuietSpare, SpareSessions, spareHeardWithinMs } from "./spares.ts";

describe("a spare's quiet", () => {
  it("is counted from its handshake, and from the last word its carrier heard since", async () => {
    const clock = new ManualClock();
    const spares = new SpareSessions({ clock });
    let heard: number | undefined;
    const heardAt = () => heard;
    spares.prepare("fresh", async () => new PassThrough(), { heardAt });
    spares.prepare("quiet", async () => new PassThrough(), { heardAt });
    spares.prepare("pinged", async () => new PassThrough(), { heardAt: () => clock.monotonic() - 1_000 });
    await new Promise((resolve) => setImmediate(resolve));
    expect(spares.ready().sort()).toEqual(["fresh", "pinged", "quiet"]);
    clock.advance(spareHeardWithinMs);
    expect(isQuietSpare((await spares.take("fresh"))!)).toBe(false);
    clock.advance(1);
    expect(isQuietSpare((await spares.take("quiet"))!)).toBe(true);
    clock.advance(60_000 - spareHeardWithinMs - 2); // within the spare's lifetime, its channel's pings still coming
    expect(isQuietSpare((await spares.take("pinged"))!)).toBe(false);
    spares.close();
  });
});
