/**
 * One compliance suite for every tunnel carrier (services/tunnel/carrier.ts), as
 * js-libp2p's interface-compliance-tests run one suite per transport: the same
 * tests over a direct TLS stream, a punched one, a relay channel, a libp2p
 * stream... A carrier passes when its streams keep the contract's promises:
 *
 * - order: bytes arrive as written, both ways at once;
 * - half-close in each direction: one end's end() is the other's 'end', and the
 *   other direction keeps flowing;
 * - reset: destroy() before the end reaches the other end as an 'error', never
 *   as an 'end' — also after that other end had half-closed;
 * - backpressure: a writer whose reader does not read stalls within the
 *   carrier's bound, and a slow reader keeps it within that bound (memory);
 * - size: 64 MiB arrive whole (sha-256 at both ends).
 *
 * ```ts
 * carrierCompliance("relay channel", { setup: async () => ({ pair, maxAheadBytes: 8 << 20 }), teardown: async () => ... });
 * ```
 */
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import type { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "./ports.ts";

export interface CarrierHarness {
  /**
   * A fresh pair of connected carrier streams: `near` as the carrier opened it,
   * `far` as the other node's serving side received it (pairTaggedStreams helps).
   */
  pair(): Promise<{ near: Duplex; far: Duplex }>;
  /** How far a writer may run ahead of a reader that does not read: the carrier's windows and both ends' buffers. */
  maxAheadBytes: number;
}

export interface CarrierSetup {
  setup(): Promise<CarrierHarness>;
  teardown(): Promise<void>;
}

/** A stream's reading side, watched: bytes so far, and how it finished ('end', a clean end of stream, or 'error') once 'close' came. */
interface Watched {
  readonly bytes: number;
  done: Promise<{ ended: boolean; error?: Error; bytes: number; sha: string }>;
}

function watch(stream: Duplex): Watched {
  const hash = createHash("sha256");
  let ended = false;
  let error: Error | undefined;
  const watched = {
    bytes: 0,
    // At 'close', `errored` says whether it failed, as pipeline() and finished() read it (a TLS socket may emit 'close' before 'error').
    done: new Promise<{ ended: boolean; error?: Error; bytes: number; sha: string }>((resolve) =>
      stream.once("close", () => resolve({ ended, error: error ?? (stream.errored as Error | null) ?? undefined, bytes: watched.bytes, sha: hash.digest("hex") })),
    ),
  };
  stream.on("data", (chunk: Buffer) => {
    watched.bytes += chunk.byteLength;
    hash.update(chunk);
  });
  stream.once("end", () => (ended = true));
  stream.once("error", (cause: Error) => (error = cause));
  return watched;
}

/** Writes `total` random bytes in chunks of random sizes, honouring backpressure; resolves with their sha-256. */
async function writeRandom(stream: Duplex, total: number, options: { end?: boolean; maxChunk?: number } = {}): Promise<string> {
  const hash = createHash("sha256");
  const block = randomBytes(1024 * 1024);
  for (let written = 0; written < total && !stream.destroyed; ) {
    const size = Math.min(total - written, 1 + Math.floor(Math.random() * (options.maxChunk ?? 70_000)));
    const offset = Math.floor(Math.random() * (block.byteLength - size));
    // A copy with its first bytes made unique: identical chunks would hide a reordering.
    const chunk = Buffer.from(block.subarray(offset, offset + size));
    if (size >= 4) chunk.writeUInt32BE(written >>> 0, 0);
    hash.update(chunk);
    written += size;
    if (!stream.write(chunk)) await drained(stream);
  }
  if (options.end !== false && !stream.destroyed) stream.end();
  return hash.digest("hex");
}

/** The writer's 'drain', or its 'close' (then the loop stops); both listeners go either way. */
function drained(stream: Duplex): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}

/** Resolves once `value()` has not changed for `quietMs` (a writer that stalled); bounded by `timeoutMs`. */
async function settled(value: () => number, quietMs: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = value();
  let since = Date.now();
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const now = value();
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return now;
  }
  throw new Error(`still moving after ${timeoutMs} ms (at ${last})`);
}

export function carrierCompliance(name: string, common: CarrierSetup): void {
  describe(`carrier compliance: ${name}`, () => {
    let harness: CarrierHarness;

    beforeAll(async () => {
      harness = await common.setup();
    }, 90_000);

    afterAll(async () => {
      await common.teardown();
    }, 30_000);

    it("carries bytes in order, both ways at once", async () => {
      const { near, far } = await harness.pair();
      const [atFar, atNear] = [watch(far), watch(near)];
      const [sentNear, sentFar] = await Promise.all([writeRandom(near, 4 * 1024 * 1024), writeRandom(far, 4 * 1024 * 1024)]);
      const [received, back] = await Promise.all([atFar.done, atNear.done]);
      expect(received).toMatchObject({ ended: true, error: undefined, bytes: 4 * 1024 * 1024, sha: sentNear });
      expect(back).toMatchObject({ ended: true, error: undefined, bytes: 4 * 1024 * 1024, sha: sentFar });
    }, 60_000);

    for (const [from, to] of [
      ["near", "far"],
      ["far", "near"],
    ] as const) {
      it(`half-closes ${from} → ${to}: the other direction keeps flowing until it ends too`, async () => {
        const ends = await harness.pair();
        const [closer, other] = [ends[from], ends[to]];
        const atOther = watch(other);
        const atCloser = watch(closer);
        const sent = await writeRandom(closer, 256 * 1024);
        // The other end reads the closer's bytes to their end, and still writes afterwards.
        await eventually(() => other.readableEnded, 20_000, `'end' at ${to}`);
        const reply = await writeRandom(other, 1024 * 1024);
        const [atTo, atFrom] = await Promise.all([atOther.done, atCloser.done]);
        expect(atTo).toMatchObject({ ended: true, error: undefined, sha: sent });
        expect(atFrom).toMatchObject({ ended: true, error: undefined, bytes: 1024 * 1024, sha: reply });
      }, 60_000);

      it(`passes a reset ${from} → ${to} as an error, never as an end`, async () => {
        const ends = await harness.pair();
        const [resetter, other] = [ends[from], ends[to]];
        resetter.on("error", () => undefined);
        const atOther = watch(other);
        void writeRandom(resetter, 512 * 1024, { end: false });
        await eventually(() => atOther.bytes > 0, 20_000, "bytes flowing");
        resetter.destroy(new Error("carrier compliance: reset"));
        const outcome = await atOther.done;
        expect(outcome.ended, `${to} saw a clean end after ${outcome.bytes} bytes`).toBe(false);
        expect(outcome.error).toBeInstanceOf(Error);
      }, 60_000);

      it(`passes a reset ${from} → ${to} as an error after ${to} half-closed`, async () => {
        const ends = await harness.pair();
        const [resetter, other] = [ends[from], ends[to]];
        resetter.on("error", () => undefined);
        resetter.resume();
        const atOther = watch(other);
        other.end(Buffer.from("request"));
        await eventually(() => resetter.readableEnded, 20_000, `'end' at ${from}`);
        void writeRandom(resetter, 512 * 1024, { end: false });
        await eventually(() => atOther.bytes > 0, 20_000, "bytes flowing back");
        resetter.destroy(new Error("carrier compliance: reset after half-close"));
        const outcome = await atOther.done;
        expect(outcome.ended, `${to} saw a clean end after ${outcome.bytes} bytes`).toBe(false);
        expect(outcome.error).toBeInstanceOf(Error);
      }, 60_000);
    }

    it("holds a writer back while its reader does not read, and within bounds while it reads slowly", async () => {
      const { near, far } = await harness.pair();
      const bound = harness.maxAheadBytes;
      const total = 2 * bound + 8 * 1024 * 1024;
      far.pause();
      let written = 0;
      let read = 0;
      let mostAhead = 0;
      const hash = createHash("sha256");
      const chunk = randomBytes(64 * 1024);
      const writing = (async () => {
        while (written < total && !near.destroyed) {
          written += chunk.byteLength;
          hash.update(chunk);
          if (!near.write(chunk)) await drained(near);
        }
        near.end();
        return hash.digest("hex");
      })();
      // Nobody reads: the writer must stall (no fixed sleep: it is done once it stopped moving).
      const stalledAt = await settled(() => written, 750, 30_000);
      expect(stalledAt, "bytes written while nobody read").toBeLessThanOrEqual(bound);
      expect(stalledAt).toBeLessThan(total);
      // A slow reader: one chunk, then a pause of a millisecond.
      const received = createHash("sha256");
      const done = new Promise<void>((resolve, reject) => {
        far.on("data", (data: Buffer) => {
          read += data.byteLength;
          received.update(data);
          mostAhead = Math.max(mostAhead, written - read);
          far.pause();
          setTimeout(() => far.resume(), 1);
        });
        far.once("end", resolve);
        far.once("error", reject);
      });
      far.resume();
      const sent = await writing;
      await done;
      far.end();
      expect(read).toBe(total);
      expect(received.digest("hex")).toBe(sent);
      expect(mostAhead, "bytes between writer and slow reader").toBeLessThanOrEqual(bound);
    }, 120_000);

    it("carries 64 MiB whole (sha-256 at both ends)", async () => {
      const { near, far } = await harness.pair();
      const [atFar, atNear] = [watch(far), watch(near)];
      far.once("end", () => far.end());
      const sent = await writeRandom(near, 64 * 1024 * 1024, { maxChunk: 256 * 1024 });
      expect(await atFar.done).toMatchObject({ ended: true, error: undefined, bytes: 64 * 1024 * 1024, sha: sent });
      expect(await atNear.done).toMatchObject({ ended: true, error: undefined, bytes: 0 });
    }, 180_000);
  });
}

/**
 * Pairs carrier streams by a tag the near end writes first: far ends arrive at
 * the serving side in any order (and some never get a tag, as spare sessions
 * made ahead of the next stream), so each far end is matched to its near end by
 * the 16 bytes it reads first.
 */
export class TaggedPairs {
  readonly #waiting = new Map<string, (far: Duplex) => void>();
  readonly #arrived = new Map<string, Duplex>();
  readonly #untagged = new Set<Duplex>();

  /** The serving side: hand every stream that arrives here. */
  arrive(far: Duplex): void {
    this.#untagged.add(far);
    far.on("error", () => undefined); // a spare reset at teardown
    let tag = Buffer.alloc(0);
    const onReadable = () => {
      for (let chunk = far.read(16 - tag.byteLength) as Buffer | null; chunk; chunk = tag.byteLength < 16 ? (far.read(16 - tag.byteLength) as Buffer | null) : null) {
        tag = Buffer.concat([tag, chunk]);
      }
      if (tag.byteLength < 16) return;
      far.off("readable", onReadable);
      this.#untagged.delete(far);
      const key = tag.toString("hex");
      const waiter = this.#waiting.get(key);
      if (waiter) waiter(far);
      else this.#arrived.set(key, far);
    };
    far.on("readable", onReadable);
  }

  /** The opening side: tags `near` and resolves with its far end. */
  async pair(near: Duplex): Promise<{ near: Duplex; far: Duplex }> {
    // The tests read errors through watch(); a stream left open at teardown (the far end closing
    // its server resets it) must not end the test process.
    near.on("error", () => undefined);
    const tag = randomBytes(16);
    const key = tag.toString("hex");
    const far = new Promise<Duplex>((resolve) => this.#waiting.set(key, resolve));
    near.write(tag);
    const arrived = this.#arrived.get(key);
    const matched = arrived ?? (await Promise.race([far, once(near, "close").then(() => Promise.reject(new Error("the near end closed before its far end arrived")))]));
    this.#waiting.delete(key);
    this.#arrived.delete(key);
    return { near, far: matched };
  }

  /** Destroys far ends that never got a tag (spares). */
  close(): void {
    for (const far of this.#untagged) far.destroy();
    this.#untagged.clear();
  }
}
