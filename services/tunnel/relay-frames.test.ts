/**
 * The relay's wire format by the thousand: every frame round-trips, and no input
 * a peer can send (random bytes, truncations, hostile JSON) makes a decoder throw
 * anything but its own refusal.
 */
import { randomBytes, randomInt } from "node:crypto";
import { describe, expect, it } from "vitest";
import { LeafmeshError } from "../../lib/errors.ts";
import { decodeAccept, decodeCredit, decodeFrame, decodeOpen, encodeAccept, encodeCredit, encodeFrame, encodeOpen, frameTypes, maxWindowBytes, type FrameType } from "./relay-frames.ts";

const types = Object.values(frameTypes) as FrameType[];

describe("relay frames", () => {
  it("round-trip: 5,000 random frames of every type, sequence and size", () => {
    for (let index = 0; index < 5_000; index++) {
      const type = types[index % types.length];
      const sequence = index < 10 ? [0, 1, 0xffffffff, 0x80000000, 4_000_000_000][index % 5] : randomInt(0, 2 ** 32);
      const payload = randomBytes(index % 50 === 0 ? randomInt(0, 70_000) : randomInt(0, 64));
      const frame = decodeFrame(encodeFrame(type, sequence, payload));
      expect(frame.type).toBe(type);
      expect(frame.sequence).toBe(sequence);
      expect(Buffer.from(frame.payload).equals(payload)).toBe(true);
    }
  });

  it("decodes a frame that is a view into a larger buffer (as NATS hands messages over)", () => {
    const inner = encodeFrame(frameTypes.data, 7, new Uint8Array([9, 8, 7]));
    const outer = new Uint8Array(inner.byteLength + 20);
    outer.set(inner, 11);
    const frame = decodeFrame(outer.subarray(11, 11 + inner.byteLength));
    expect(frame).toMatchObject({ type: frameTypes.data, sequence: 7 });
    expect([...frame.payload]).toEqual([9, 8, 7]);
  });

  it("refuses 20,000 random byte strings with its own error, or decodes them as a known type", () => {
    for (let index = 0; index < 20_000; index++) {
      const bytes = randomBytes(randomInt(0, 16));
      try {
        const frame = decodeFrame(bytes);
        expect(types).toContain(frame.type);
        expect(frame.payload.byteLength).toBe(bytes.byteLength - 5);
      } catch (error) {
        expect(error).toBeInstanceOf(LeafmeshError);
        expect((error as LeafmeshError).code).toBe("TUNNEL_FAILED");
      }
    }
    expect(() => decodeFrame(new Uint8Array([3, 0]))).toThrow(/too short/);
    expect(() => decodeFrame(new Uint8Array([99, 0, 0, 0, 0]))).toThrow(/unknown type/);
  });

  it("open and accept payloads: round-trip, and any other payload is refused with a reason, never thrown", () => {
    for (let index = 0; index < 2_000; index++) {
      const window = randomInt(1, maxWindowBytes + 1);
      const purpose = index % 2 ? "libp2p" : "tls-stream";
      expect(decodeOpen(encodeOpen({ window, purpose }))).toEqual({ window, purpose });
      expect(decodeAccept(encodeAccept({ window }))).toEqual({ window });
    }
    // An older agent's open says no purpose: libp2p.
    expect(decodeOpen(new TextEncoder().encode(JSON.stringify({ window: 65_536 })))).toEqual({ window: 65_536, purpose: "libp2p" });
    const hostile = [
      "",
      "null",
      "[]",
      "7",
      '"window"',
      "{",
      '{"window":0}',
      '{"window":-1}',
      '{"window":1.5}',
      `{"window":${maxWindowBytes + 1}}`,
      '{"window":"65536"}',
      '{"window":1e400}',
      '{"window":65536,"purpose":"teleport"}',
      '{"window":65536,"purpose":{"toString":1}}',
      '{"__proto__":{"window":65536}}',
    ];
    for (const text of hostile) {
      const payload = new TextEncoder().encode(text);
      expect(decodeOpen(payload).error, text).toBeDefined();
      if (!text.includes("purpose")) expect(decodeAccept(payload).error, text).toBeDefined();
    }
    expect(decodeOpen(new TextEncoder().encode('{"window":65536,"purpose":"teleport"}')).error).toBe('open frame for an unknown purpose "teleport"');
    for (let index = 0; index < 5_000; index++) {
      const payload = randomBytes(randomInt(0, 40));
      expect(() => decodeOpen(payload)).not.toThrow();
      expect(() => decodeAccept(payload)).not.toThrow();
    }
  });

  it("credit payloads: four bytes, big endian; anything else refused", () => {
    for (let index = 0; index < 2_000; index++) {
      const grant = randomInt(0, 2 ** 32);
      expect(decodeCredit(encodeCredit(grant))).toBe(grant);
    }
    for (const length of [0, 1, 3, 5, 8]) expect(decodeCredit(new Uint8Array(length))).toBeUndefined();
  });
});
