/**
 * The relay's wire format, pure: frames as they cross NATS (relay.ts carries
 * them, relay-channel.ts gives them meaning). Nothing here touches a socket, so
 * the codec is tested by the thousand with random and hostile input.
 *
 *   frame   = type (u8) | sequence (u32, big endian, per direction) | payload
 *   open    = JSON { window, purpose? }   (purpose: "libp2p" when absent, as older agents sent)
 *   accept  = JSON { window }
 *   credit  = u32 bytes granted
 *   reset   = UTF-8 reason
 *   data    = bytes;  fin, ping = empty
 *
 * ```ts
 * const bytes = encodeFrame(frameTypes.open, 0, encodeOpen({ window: 65_536, purpose: "tls-stream" }));
 * const frame = decodeFrame(bytes);           // throws a LeafmeshError on anything malformed
 * const open = decodeOpen(frame.payload);     // { window, purpose } or { error }
 * ```
 */
import { LeafmeshError } from "../../lib/errors.ts";

export const frameTypes = { open: 1, accept: 2, data: 3, credit: 4, fin: 5, reset: 6, ping: 7 } as const;
export type FrameType = (typeof frameTypes)[keyof typeof frameTypes];
const frameTypeValues = new Set<number>(Object.values(frameTypes));

/** type (1) | sequence (4, big endian) | payload */
export const headerBytes = 5;
/** The largest window a peer may offer: beyond it an open or accept is malformed. */
export const maxWindowBytes = 64 * 1024 * 1024;
/** What a libp2p connection over the relay writes at a time: one noise message, its 2-byte length and up to 65,535 bytes. */
const noiseMessageBytes = 2 + 65_535;
/** A full TLS 1.3 record: 5-byte header, 16 KiB of data, its content type and a 16-byte tag. */
const tlsRecordBytes = 5 + 16_384 + 1 + 16;

/** What a relay channel carries: a libp2p connection, or one tunnel stream under TLS. */
export type RelayPurpose = "libp2p" | "tls-stream";

/**
 * Payload bytes per NATS message, by what the channel carries (bench/tunnel, relayed):
 * - libp2p: four whole noise messages, ~45 MB/s against ~33 with one per message;
 * - tls-stream: two whole TLS records, 130–150 MB/s against 100–120 with 256 KiB frames.
 *   A message the NATS client reads in one socket read (64 KiB) is handed over as a view;
 *   a larger one is gathered into buffers that grow by copying, all of it garbage.
 */
export const defaultFrameBytes: Record<RelayPurpose, number> = { libp2p: 4 * noiseMessageBytes, "tls-stream": 2 * tlsRecordBytes };

export interface RelayFrame {
  type: FrameType;
  sequence: number;
  payload: Uint8Array;
}

export function encodeFrame(type: FrameType, sequence: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const bytes = frameWithHeader(type, sequence, payload.byteLength);
  bytes.set(payload, headerBytes);
  return bytes;
}

/** A frame of `payloadBytes` with its header written and its payload left to fill (not zeroed: every byte is written). */
export function frameWithHeader(type: FrameType, sequence: number, payloadBytes: number): Buffer {
  const bytes = Buffer.allocUnsafe(headerBytes + payloadBytes);
  bytes[0] = type;
  bytes.writeUInt32BE(sequence >>> 0, 1);
  return bytes;
}

/** Throws on anything that is not a well-formed frame. */
export function decodeFrame(bytes: Uint8Array): RelayFrame {
  if (bytes.byteLength < headerBytes) throw new LeafmeshError("TUNNEL_FAILED", `relay frame too short (${bytes.byteLength} bytes)`);
  const type = bytes[0];
  if (!frameTypeValues.has(type)) throw new LeafmeshError("TUNNEL_FAILED", `relay frame of unknown type ${type}`);
  const sequence = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(1);
  return { type: type as FrameType, sequence, payload: bytes.subarray(headerBytes) };
}

export function encodeOpen(open: { window: number; purpose: RelayPurpose }): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(open));
}

export function encodeAccept(accept: { window: number }): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(accept));
}

/** An open frame's payload; `error` says why it is refused (the channel is reset with it). */
export function decodeOpen(payload: Uint8Array): { window: number; purpose: RelayPurpose; error?: undefined } | { error: string } {
  const json = parseJson(payload);
  const window = windowOf(json);
  if (window === undefined) return { error: "malformed open frame" };
  const purpose = (json as { purpose?: unknown }).purpose;
  if (purpose === undefined || purpose === "libp2p" || purpose === "tls-stream") return { window, purpose: purpose ?? "libp2p" };
  // Said as JSON: String() of a peer's object ({"toString":1}) throws.
  return { error: `open frame for an unknown purpose ${JSON.stringify(purpose).slice(0, 40)}` };
}

/** An accept frame's payload. */
export function decodeAccept(payload: Uint8Array): { window: number; error?: undefined } | { error: string } {
  const window = windowOf(parseJson(payload));
  return window === undefined ? { error: "malformed accept frame" } : { window };
}

export function encodeCredit(bytes: number): Uint8Array {
  const payload = new Uint8Array(4);
  new DataView(payload.buffer).setUint32(0, bytes);
  return payload;
}

/** A credit frame's grant, or undefined when its payload is not 4 bytes. */
export function decodeCredit(payload: Uint8Array): number | undefined {
  if (payload.byteLength !== 4) return undefined;
  return new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0);
}

function parseJson(payload: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(payload));
  } catch {
    return undefined; // malformed: the caller says which frame
  }
}

function windowOf(json: unknown): number | undefined {
  const window = (json as { window?: unknown } | null | undefined)?.window;
  return typeof window === "number" && Number.isInteger(window) && window > 0 && window <= maxWindowBytes ? window : undefined;
}
