/**
 * The tunnel stream protocol, the same on every carrier (a libp2p stream, a TLS
 * session of its own): the opening side sends the target as a header, the
 * serving side answers with a status, then the stream carries the spliced bytes.
 *
 *   opener → server:  u16 length | JSON { host, port, protocol }  [early bytes]
 *   server → opener:  u8 status (0 ok, 1 refused) | u16 length | JSON { message, code? }
 *
 * Then the bytes, as they are; on a TLS session whose ends both offered end
 * frames by ALPN, a TCP stream's bytes go in end frames both ways (lib/end-frames.ts).
 * A TCP stream's first bytes may follow its header before the status (mesh protocol
 * 2, bus/protocol.ts; lib/early-bytes.ts): the server holds them unread while it
 * connects, writes them to the target first once connected, and drops them with a
 * refusal; the opener puts them back to its client then, to go elsewhere once.
 *
 * The encoding and the target's validation are pure; `requestTarget` and
 * `readTarget` run them on a Duplex.
 *
 * ```ts
 * const stream = await requestTarget(carrierStream, { host: "10.0.0.5", port: 80, protocol: "TCP" }, { timeoutMs: 10_000, peer: "edge-b", log });
 * const target = await readTarget(inbound, 5_000); // on the serving side; then answer with encodeStatus(statusOk)
 * ```
 */
import type { Duplex } from "node:stream";
import { frameEnds, sessionFramesEnds } from "../../lib/end-frames.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import type { StreamTarget } from "../../bus/streams.ts";
import type { Logger } from "../../lib/log.ts";
import type { EarlyBytes } from "../../lib/early-bytes.ts";

export type { StreamTarget } from "../../bus/streams.ts";

export const statusOk = 0;
export const statusRefused = 1;

/**
 * The remote agent answered that it cannot reach the stream's target: no other
 * path or carrier changes that, and the target is at fault, not the mesh.
 * `targetCode` is the remote connect's error code (ECONNREFUSED, ETIMEDOUT, ...)
 * when the agent said it (agents before it did not).
 */
export class TargetRefusedError extends LeafmeshError {
  readonly targetCode: string | undefined;

  constructor(message: string, targetCode?: string) {
    super("TUNNEL_TARGET_REFUSED", message);
    this.targetCode = targetCode;
  }
}

/** A length-prefixed JSON header (u16 big endian length, then UTF-8 JSON). */
export function encodeHeader(json: unknown): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify(json));
  if (body.byteLength > 0xffff) throw new LeafmeshError("TUNNEL_FAILED", `tunnel header too long (${body.byteLength} bytes)`);
  const bytes = new Uint8Array(2 + body.byteLength);
  new DataView(bytes.buffer).setUint16(0, body.byteLength);
  bytes.set(body, 2);
  return bytes;
}

/** The serving side's answer: the status byte, then a header with a message (and the connect's error code) for the opener. */
export function encodeStatus(status: typeof statusOk | typeof statusRefused, message = "", code?: string): Buffer {
  // Bounded: a message says why a target could not be reached, a line, never a header's 64 KiB.
  return Buffer.concat([Buffer.from([status]), encodeHeader({ message: message.slice(0, 1_000), code: code?.slice(0, 40) })]);
}

/**
 * How long the serving side's status is, from its first bytes (lib/end-frames.ts RawPrefix): undefined until
 * its length is read; Infinity for a refusal, after which nothing is framed (the server ends the stream).
 */
export function statusLength(head: Buffer): number | undefined {
  if (head.length >= 1 && head[0] !== statusOk) return Infinity;
  return head.length >= 3 ? 3 + head.readUInt16BE(1) : undefined;
}

/** A target header's JSON as a target; throws on anything else (it comes from a peer). */
export function parseTarget(json: unknown): StreamTarget {
  const target = json as Partial<StreamTarget> | null;
  if (typeof target?.host !== "string" || !Number.isInteger(target.port) || (target.protocol !== "TCP" && target.protocol !== "UDP")) {
    throw new LeafmeshError("TUNNEL_FAILED", "malformed tunnel target");
  }
  return { host: target.host, port: target.port!, protocol: target.protocol };
}

/**
 * Reads exactly `size` bytes from a Duplex in paused mode. Fails when the stream ends, errs or closes first: a
 * stream destroyed without an error (a carrier closed under it) says only 'close', and a wait that heard only 'end'
 * and 'error' held its timer and the stream for the whole timeout. At its end, read(size) hands over what is left
 * even when it is shorter: that is not the header either.
 */
export function readExactly(duplex: Duplex, size: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new HeaderTimeout(timeoutMs)), timeoutMs);
    const finish = (error?: Error, value?: Buffer) => {
      clearTimeout(timer);
      duplex.off("readable", onReadable);
      duplex.off("end", onEnd);
      duplex.off("error", onError);
      duplex.off("close", onClose);
      if (error) reject(error);
      else resolve(value!);
    };
    const onReadable = () => {
      const chunk = duplex.read(size) as Buffer | null;
      if (chunk === null) return;
      if (chunk.length === size) finish(undefined, chunk);
      else finish(new CutHeader(chunk.length, size));
    };
    const onEnd = () => finish(new LeafmeshError("TUNNEL_FAILED", "tunnel stream ended before its header"));
    const onError = (error: Error) => finish(error);
    const onClose = () => finish(duplex.errored ?? new LeafmeshError("TUNNEL_FAILED", "tunnel stream closed before its header"));
    duplex.on("readable", onReadable);
    duplex.once("end", onEnd);
    duplex.once("error", onError);
    duplex.once("close", onClose);
    if (duplex.destroyed) return onClose();
    onReadable();
  });
}

/** A header (or a status) that did not come in time: a peer that stalls, unlike one that closed. */
class HeaderTimeout extends LeafmeshError {
  constructor(timeoutMs: number) {
    super("TUNNEL_FAILED", `tunnel header not received within ${timeoutMs} ms`);
  }
}

/** A stream that ended part-way through a header: it began, so it is a peer's fault, not a retired spare. */
class CutHeader extends LeafmeshError {
  constructor(got: number, wanted: number) {
    super("TUNNEL_FAILED", `tunnel stream ended after ${got} of a header's ${wanted} bytes`);
  }
}

/**
 * A carrier that closed before the first byte of a header: a TLS session made ahead of a stream (a
 * spare) that its opener retired unused, or a peer that went away. Ordinary, unlike a header that
 * came and is wrong.
 */
export class StreamNeverStarted extends LeafmeshError {
  constructor(cause: unknown) {
    super("TUNNEL_FAILED", "the carrier closed before a stream header began", { cause });
  }
}

/** Reads one length-prefixed JSON header. */
export async function readHeader(duplex: Duplex, timeoutMs: number): Promise<unknown> {
  const started = duplex.readableLength > 0;
  const length = (
    await readExactly(duplex, 2, timeoutMs).catch((error: unknown) => {
      const closed = !started && duplex.readableLength === 0 && !(error instanceof HeaderTimeout) && !(error instanceof CutHeader);
      throw closed ? new StreamNeverStarted(error) : error;
    })
  ).readUInt16BE(0);
  return JSON.parse((await readExactly(duplex, length, timeoutMs)).toString("utf8"));
}

/** The serving side: the stream's target, or a rejection for a late, short or malformed header. */
export async function readTarget(duplex: Duplex, timeoutMs: number): Promise<StreamTarget> {
  return parseTarget(await readHeader(duplex, timeoutMs));
}

/**
 * The opening side: sends the target header on a fresh carrier stream and waits
 * for the remote agent's status. Resolves with the same stream, ready for the
 * spliced bytes; a refusal rejects with TargetRefusedError (and destroys it).
 */
export async function requestTarget(duplex: Duplex, target: StreamTarget, options: { timeoutMs: number; peer: string; log: Logger; early?: EarlyBytes }): Promise<Duplex> {
  // A reset after the header was read (a peer that refuses us, a cut) must not go unhandled; the caller adds its own handling.
  duplex.on("error", (error) => options.log.debug({ err: error, peer: options.peer }, "tunnel stream error"));
  const header = encodeHeader(target);
  // A TCP stream on a session that frames ends (lib/end-frames.ts): the header and the status go as they are.
  if (target.protocol === "TCP" && sessionFramesEnds(duplex)) frameEnds(duplex, { rawWrites: header.length, rawReads: statusLength });
  duplex.write(header);
  // A TCP client's first bytes right behind the header (lib/early-bytes.ts), to a peer that reads them (protocol 2).
  const early = target.protocol === "TCP" ? options.early : undefined;
  early?.sendTo(duplex);
  const status = (await readExactly(duplex, 1, options.timeoutMs))[0];
  const { message, code } = (await readHeader(duplex, options.timeoutMs)) as { message?: unknown; code?: unknown };
  if (status === statusOk) early?.commit();
  else {
    early?.giveBack();
    duplex.destroy();
    throw new TargetRefusedError(typeof message === "string" && message ? message : "the remote agent refused the stream", typeof code === "string" ? code : undefined);
  }
  return duplex;
}
