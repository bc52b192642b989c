/**
 * The end frames' reader (end-frames.ts), on bytes split every way a socket may
 * split them. Over real TLS sessions: services/tunnel/tls-end-frames.test.ts.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { EndFrameError, EndFrameReader } from "./end-frames.ts";

const frame = (data: Buffer) => Buffer.concat([Buffer.from([data.length >>> 24, (data.length >>> 16) & 0xff, (data.length >>> 8) & 0xff, data.length & 0xff]), data]);
const end = Buffer.alloc(4);

/** `bytes` cut at `cuts` (offsets), read piece by piece: the data out, and the reader. */
function readSplit(bytes: Buffer, cuts: number[], reader = new EndFrameReader()): { data: Buffer; reader: EndFrameReader } {
  const out: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    out.push(...reader.read(bytes.subarray(from, cut)));
    from = cut;
  }
  return { data: Buffer.concat(out), reader };
}

/** A status as the serving side sends it (stream-header.ts encodeStatus): u8, u16 length, JSON. */
function status(code: number, message: string): Buffer {
  const json = Buffer.from(JSON.stringify({ message }));
  const head = Buffer.alloc(3);
  head[0] = code;
  head.writeUInt16BE(json.length, 1);
  return Buffer.concat([head, json]);
}
const statusLength = (head: Buffer) => (head.length >= 1 && head[0] !== 0 ? Infinity : head.length >= 3 ? 3 + head.readUInt16BE(1) : undefined);

describe("EndFrameReader", () => {
  const parts = [randomBytes(1), randomBytes(5), randomBytes(70_000), randomBytes(16_384), randomBytes(3)];
  const whole = Buffer.concat(parts);
  const stream = Buffer.concat([...parts.map(frame), end]);

  it("gives back the data of frames split at every byte of their headers, and says the end came", () => {
    // Every cut within the first frames' headers and data, one at a time and all at once.
    for (let cut = 1; cut < 20; cut++) {
      const { data, reader } = readSplit(stream, [cut]);
      expect(data.equals(whole), `cut at ${cut}`).toBe(true);
      expect(reader.ended).toBe(true);
      expect(reader.cutAtEnd()).toBeUndefined();
    }
    const everyByte = readSplit(stream, Array.from({ length: 40 }, (_, index) => index + 1));
    expect(everyByte.data.equals(whole)).toBe(true);
    // Cuts across the end frame itself, and reads of 1 KiB.
    for (const cut of [stream.length - 4, stream.length - 3, stream.length - 1]) expect(readSplit(stream, [cut]).reader.ended).toBe(true);
    const kib = readSplit(stream, Array.from({ length: Math.floor(stream.length / 1024) }, (_, index) => (index + 1) * 1024));
    expect(kib.data.equals(whole)).toBe(true);
  });

  it("hands a chunk that lies within one frame's data back as it is, without a copy", () => {
    const reader = new EndFrameReader();
    const big = randomBytes(40_000);
    reader.read(frame(big).subarray(0, 4));
    const chunk = big.subarray(0, 16_384);
    const [out] = reader.read(chunk);
    expect(out).toBe(chunk);
  });

  it("says where a stream that ends without its end frame was cut", () => {
    const cases: [number, RegExp][] = [
      [stream.length - 4, /between frames/],
      [stream.length - 6, /within a frame's header|bytes short/],
      [2, /within a frame's header/],
      [4 + 1 + 4 + 2, /3 bytes short of a frame/],
      [0, /between frames/],
    ];
    for (const [length, reason] of cases) {
      const { reader } = readSplit(stream.subarray(0, length), []);
      expect(reader.ended).toBe(false);
      const cut = reader.cutAtEnd();
      expect(cut, `cut at ${length}`).toBeInstanceOf(EndFrameError);
      expect(cut!.message).toMatch(reason);
      expect(cut!.message).toMatch(/without its end frame/);
    }
  });

  it("refuses bytes after the end frame, in the same read or a later one", () => {
    expect(() => new EndFrameReader().read(Buffer.concat([end, Buffer.from("x")]))).toThrow(/1 bytes came after the tunnel stream's end frame/);
    const reader = new EndFrameReader();
    reader.read(Buffer.concat([frame(Buffer.from("ok")), end]));
    expect(() => reader.read(Buffer.from("late"))).toThrow(EndFrameError);
  });

  it("passes a raw status first, split anywhere, then reads frames; a refusal is never framed", () => {
    const ok = status(0, "");
    const okStream = Buffer.concat([ok, frame(Buffer.from("hello")), end]);
    for (let cut = 1; cut <= ok.length + 2; cut++) {
      const { data, reader } = readSplit(okStream, [cut], new EndFrameReader(statusLength));
      expect(data.equals(Buffer.concat([ok, Buffer.from("hello")])), `cut at ${cut}`).toBe(true);
      expect(reader.ended).toBe(true);
    }
    // A stream that ends right after an OK status owes its end frame: it is framed from there on.
    expect(readSplit(ok, [], new EndFrameReader(statusLength)).reader.cutAtEnd()).toBeInstanceOf(EndFrameError);
    const refused = status(1, "edge-c cannot connect to 127.0.0.1:1: ECONNREFUSED");
    const { data, reader } = readSplit(refused, [1, 2], new EndFrameReader(statusLength));
    expect(data.equals(refused)).toBe(true);
    expect(reader.cutAtEnd()).toBeUndefined();
    // Ended within the status: the header's reader says so (stream-header.ts), not the frames.
    expect(readSplit(ok.subarray(0, 2), [], new EndFrameReader(statusLength)).reader.cutAtEnd()).toBeUndefined();
  });
});
