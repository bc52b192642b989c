import { createHash, randomBytes } from "node:crypto";
import { PassThrough, Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { pipeBatched } from "./stream-server.ts";

/** A writer that records how many chunks each underlying write carried, and finishes each `delayMs` later. */
function recorder(options: { highWaterMark: number; delayMs?: number }) {
  const writes: number[] = [];
  const received: Buffer[] = [];
  const done = (callback: () => void) => (options.delayMs ? setTimeout(callback, options.delayMs) : setImmediate(callback));
  const writable = new Writable({
    highWaterMark: options.highWaterMark,
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
  const finished = new Promise<void>((resolve) => writable.once("finish", resolve));
  return { writable, writes, received, finished };
}

const sha = (buffers: Buffer[]) => createHash("sha256").update(Buffer.concat(buffers)).digest("hex");

describe("pipeBatched", () => {
  it("writes the chunks of one turn of the event loop in one write, and ends the writer", async () => {
    const from = new PassThrough();
    const to = recorder({ highWaterMark: 256 * 1024 });
    pipeBatched(from, to.writable);
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
    pipeBatched(from, to.writable);
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

  it("stops writing to a writer that was destroyed", async () => {
    const from = new PassThrough();
    const to = recorder({ highWaterMark: 256 * 1024 });
    pipeBatched(from, to.writable);
    from.write(randomBytes(100));
    await new Promise((resolve) => setImmediate(resolve));
    to.writable.destroy();
    const errors: Error[] = [];
    to.writable.on("error", (error) => errors.push(error));
    from.write(randomBytes(100));
    from.end();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(to.received).toHaveLength(1);
    expect(errors).toEqual([]);
  });
});
