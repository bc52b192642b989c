/**
 * batchWrites before joinStreams, as the serving end of a tunnel stream splices
 * into its target (stream-server.ts): the chunks of one turn go out in one write,
 * backpressure holds, and nothing is written to a target that is gone.
 */
import { createHash, randomBytes } from "node:crypto";
import { Duplex, PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { joinStreams } from "../../lib/join-streams.ts";
import { batchWrites } from "./stream-server.ts";

/** A target that records how many chunks each underlying write carried, and finishes each `delayMs` later. */
function recorder(options: { highWaterMark: number; delayMs?: number }) {
  const writes: number[] = [];
  const received: Buffer[] = [];
  const done = (callback: () => void) => (options.delayMs ? setTimeout(callback, options.delayMs) : setImmediate(callback));
  const target = new Duplex({
    writableHighWaterMark: options.highWaterMark,
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      writes.push(1);
      received.push(chunk);
      done(callback);
    },
    writev(chunks, callback) {
      writes.push(chunks.length);
      for (const { chunk } of chunks) received.push(chunk as Buffer);
      done(callback);
    },
  });
  const finished = new Promise<void>((resolve) => target.once("finish", resolve));
  return { target, writes, received, finished };
}

/** Batched and joined as stream-server.ts does it. */
function splice(from: Duplex, to: Duplex): void {
  batchWrites(from, to);
  joinStreams(from, to);
}

const sha = (buffers: Buffer[]) => createHash("sha256").update(Buffer.concat(buffers)).digest("hex");

describe("batchWrites", () => {
  it("writes the chunks of one turn of the event loop in one write, and passes the end on", async () => {
    const from = new PassThrough();
    const to = recorder({ highWaterMark: 256 * 1024 });
    splice(from, to.target);
    const chunks = Array.from({ length: 8 }, () => randomBytes(16_384));
    for (const chunk of chunks) from.write(chunk);
    from.end();
    await to.finished;
    expect(to.writes).toEqual([8]);
    expect(sha(to.received)).toBe(sha(chunks));
  });

  it("pauses the reader while the writer is full and loses nothing (1 MiB through a 32 KiB writer)", async () => {
    const from = new PassThrough({ highWaterMark: 16_384 });
    const to = recorder({ highWaterMark: 32 * 1024, delayMs: 1 });
    splice(from, to.target);
    let paused = 0;
    from.on("pause", () => paused++);
    const sent: Buffer[] = [];
    for (let index = 0; index < 64; index++) {
      const chunk = randomBytes(16_384);
      sent.push(chunk);
      if (!from.write(chunk)) await new Promise((resolve) => from.once("drain", resolve));
    }
    from.end();
    await to.finished;
    expect(paused).toBeGreaterThan(0);
    expect(sha(to.received)).toBe(sha(sent));
  });

  it("writes nothing more to a target that was destroyed, and raises no error for it", async () => {
    const from = new PassThrough();
    const to = recorder({ highWaterMark: 256 * 1024 });
    const errors: Error[] = [];
    to.target.on("error", (error) => errors.push(error));
    splice(from, to.target);
    from.write(randomBytes(100));
    await new Promise((resolve) => setImmediate(resolve));
    to.target.destroy();
    from.write(randomBytes(100));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(to.received).toHaveLength(1);
    expect(errors).toEqual([]);
    expect(from.destroyed).toBe(true); // a target gone before its end cuts the stream (joinStreams)
  });
});
