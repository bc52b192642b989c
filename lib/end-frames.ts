/**
 * End frames: the bytes of a TCP stream under TLS in length-prefixed frames,
 * and a frame of its own for the end, so that a stream cut by a crash never
 * passes for a whole one.
 *
 * Why: the kernel closes a dead process's sockets with a FIN, and Node's TLS
 * reports a FIN with no close_notify exactly as it reports a close_notify:
 * 'end', no error (TLSWrap passes the transport's EOF up without asking
 * OpenSSL, and nothing of OpenSSL's shutdown state reaches JavaScript). A far
 * agent killed with SIGKILL under a direct TLS stream left the client a clean
 * end after 8 MiB of 256 (lab/stop-kill-matrix.ts). The end frame is the
 * sender's word that it ended: a session that ends without it was cut.
 *
 *   frame:  u32 length (big endian) | length bytes    (length 1 … 2^32-1)
 *   end:    u32 0                                      (nothing may follow)
 *
 * The framing lives in the TLS socket itself (`frameEnds`), so whoever holds
 * the stream reads and writes its bytes as they are: its writes are framed
 * (`_write`, `_writev`), its end() sends the end frame first (`_final`), what
 * it reads is stripped of the headers (`push`), and an end without the end
 * frame destroys it with an error instead ('error', never 'end'). A copy that
 * reads the socket into a buffer of its own (read-buffers.ts: Node's onread,
 * which bypasses `push`) strips them with the socket's own reader
 * (`stripHeaders`); the end still comes through `push`.
 *
 * Both ends frame only when both offered it (tls-streams.ts: the ALPN protocol
 * `endFramesProtocol`; a node of an older release is served as before, without)
 * and only TCP streams, from just after the target header (stream-header.ts):
 * the opening side writes the header as it is and frames what follows (early
 * bytes too), and reads the status as it is, then frames (a refusal stays
 * unframed); the serving side reads framed from after the header (frameReads)
 * and writes framed from after its OK status.
 *
 * ```ts
 * frameEnds(socket, { rawWrites: header.length, rawReads: statusLength }); // the opener, before it writes the target header
 * frameReads(socket);                                                     // the server, once it read the target header
 * frameEnds(socket, { rawWrites: status.length });                       // the server, before it writes its OK status
 * ```
 */
import type { Duplex } from "node:stream";
import { TLSSocket } from "node:tls";
import { LeafmeshError } from "./errors.ts";

/** The ALPN protocol a TLS tunnel session offers and accepts to frame its TCP streams' ends. */
export const endFramesProtocol = "leafmesh-stream/2";

/** Both ends of this TLS session offered end frames (ALPN). */
export function sessionFramesEnds(stream: Duplex): stream is TLSSocket {
  return stream instanceof TLSSocket && stream.alpnProtocol === endFramesProtocol;
}

const headerBytes = 4;
/** The end frame. Shared, never written into. */
const endFrame = Buffer.alloc(headerBytes);
/** What Node's own writes say of a Buffer chunk (the typings know only string encodings). */
const asBuffer = "buffer" as BufferEncoding;

/** Bytes after the end frame: not a stream of this protocol. */
export class EndFrameError extends LeafmeshError {
  constructor(message: string) {
    super("TUNNEL_FAILED", message);
  }
}

/**
 * How many bytes at the start of what is read go as they are, from the first
 * (up to 3) of them: a number once it is known, undefined until then, Infinity
 * for all of them (nothing framed: a refusal).
 */
export type RawPrefix = (head: Buffer) => number | undefined;

/**
 * The receiving side: strips the frames' headers off the bytes as they come
 * (a header may come split over reads), and says whether the end frame came.
 */
export class EndFrameReader {
  /** The bytes read so far of a raw prefix whose length is not known yet. */
  #head: { prefix: RawPrefix; bytes: Buffer; filled: number } | undefined;
  /** Raw bytes still to pass as they are (Infinity: all). */
  #raw = 0;
  /** Bytes of the current frame's data still to come; 0 while a header is read. */
  #remaining = 0;
  readonly #header = Buffer.alloc(headerBytes);
  #headerFilled = 0;
  #ended = false;

  constructor(rawPrefix?: RawPrefix) {
    if (rawPrefix) this.#head = { prefix: rawPrefix, bytes: Buffer.alloc(3), filled: 0 };
  }

  /** The end frame came: the sender wrote its whole stream. */
  get ended(): boolean {
    return this.#ended;
  }

  /** The data in `chunk`, without headers: `chunk` itself, or views into it. Throws EndFrameError on bytes after the end. */
  read(chunk: Buffer): Buffer[] {
    if (this.#remaining >= chunk.length && chunk.length > 0) {
      this.#remaining -= chunk.length;
      return [chunk];
    }
    const data: Buffer[] = [];
    const pass = (from: number, to: number) => data.push(from === 0 && to === chunk.length ? chunk : chunk.subarray(from, to));
    let offset = 0;
    /** Passes up to `count` bytes on as data; returns how many it passed. */
    const passUpTo = (count: number): number => {
      const take = Math.min(count, chunk.length - offset);
      pass(offset, offset + take);
      offset += take;
      return take;
    };
    while (offset < chunk.length) {
      if (this.#head) {
        const head = this.#head;
        const take = Math.min(head.bytes.length - head.filled, chunk.length - offset);
        chunk.copy(head.bytes, head.filled, offset, offset + take);
        head.filled += take;
        pass(offset, offset + take);
        offset += take;
        const raw = head.prefix(head.bytes.subarray(0, head.filled));
        if (raw === undefined) continue;
        this.#head = undefined;
        this.#raw = Math.max(0, raw - head.filled);
        continue;
      }
      if (this.#raw > 0) {
        this.#raw -= passUpTo(this.#raw);
        continue;
      }
      if (this.#ended) throw new EndFrameError(`${chunk.length - offset} bytes came after the tunnel stream's end frame`);
      if (this.#remaining > 0) {
        this.#remaining -= passUpTo(this.#remaining);
        continue;
      }
      const take = Math.min(headerBytes - this.#headerFilled, chunk.length - offset);
      chunk.copy(this.#header, this.#headerFilled, offset, offset + take);
      this.#headerFilled += take;
      offset += take;
      if (this.#headerFilled < headerBytes) continue;
      this.#headerFilled = 0;
      this.#remaining = this.#header.readUInt32BE(0);
      if (this.#remaining === 0) this.#ended = true;
    }
    return data;
  }

  /** Why a stream that ends here was cut, or undefined when it ended whole (or was never framed: a raw prefix to its end). */
  cutAtEnd(): Error | undefined {
    if (this.#ended || this.#head || this.#raw > 0) return undefined;
    const where = this.#remaining > 0 ? `${this.#remaining} bytes short of a frame` : this.#headerFilled > 0 ? "within a frame's header" : "between frames";
    return new EndFrameError(`the tunnel stream ended without its end frame (${where}): its far end was cut, not ended (a crash, a lost connection)`);
  }
}

const readers: unique symbol = Symbol("leafmesh.endFrameReader");
const rawWritesLeft: unique symbol = Symbol("leafmesh.endFrameRawWrites");

type Framed = TLSSocket & { [readers]?: EndFrameReader; [rawWritesLeft]?: { bytes: number } };
type WriteCallback = (error?: Error | null) => void;

/**
 * From now on, the bytes of `socket` (a TLS tunnel stream of a TCP target whose session frames ends) go in end
 * frames, both ways, and its end without the end frame is an error. Called before the last bytes of the
 * stream's header go either way, which stay as they are: the first `rawWrites` bytes written, and a first
 * part of what is read as long as `rawReads` says (the serving side's status; Infinity: nothing framed).
 */
export function frameEnds(socket: TLSSocket, options: { rawWrites?: number; rawReads?: RawPrefix } = {}): void {
  const framed = socket as Framed;
  if (framed[readers]) {
    // Its reads are framed already (frameReads: a server that reads early bytes before its answer): now its writes too.
    if (options.rawWrites !== undefined) framed[rawWritesLeft]!.bytes = options.rawWrites;
    return;
  }
  const reader = new EndFrameReader(options.rawReads);
  framed[readers] = reader;
  const writes = { bytes: options.rawWrites ?? 0 };
  framed[rawWritesLeft] = writes;

  const push = socket.push.bind(socket);
  socket.push = (chunk: unknown, encoding?: BufferEncoding) => {
    if (chunk === null) {
      const cut = reader.cutAtEnd();
      if (!cut) return push(null);
      socket.destroy(cut);
      return false;
    }
    const data = stripHeaders(socket, typeof chunk === "string" ? Buffer.from(chunk, encoding) : (chunk as Buffer));
    if (!data) return false;
    let more = socket.readableLength < socket.readableHighWaterMark;
    for (const piece of data) more = push(piece);
    return more;
  };

  // Node's own writes under the socket's (net.Socket's _write and _writev), each chunk as a frame. A chunk framed
  // in place already (`frameInPlace`) goes as it is. Any other goes behind its header: in one write of the two
  // joined (TLSWrap takes one write at a time: a second one under way aborts the process, Assertion failed:
  // !current_write_), or in a writev, which TLSWrap joins into one buffer itself.
  /** The chunk as it goes: raw bytes first while some are left, then a header and the rest. */
  const partsOf = (data: Buffer): Buffer[] => {
    // Empty: as it is (a frame of length 0 is the end).
    if (framedInPlace.has(data) || data.length === 0) return [data];
    const raw = Math.min(writes.bytes, data.length);
    writes.bytes -= raw;
    if (raw === data.length) return [data];
    const rest = data.subarray(raw);
    const header = Buffer.allocUnsafe(headerBytes);
    header.writeUInt32BE(rest.length, 0);
    return raw > 0 ? [data.subarray(0, raw), header, rest] : [header, rest];
  };
  const bytesOf = (chunk: Buffer | string, encoding: BufferEncoding) => (typeof chunk === "string" ? Buffer.from(chunk, encoding) : chunk);
  const write = socket._write.bind(socket);
  const writev = socket._writev!.bind(socket);
  socket._write = (chunk: Buffer | string, encoding: BufferEncoding, callback: WriteCallback) => {
    const parts = partsOf(bytesOf(chunk, encoding));
    write(parts.length === 1 ? parts[0] : Buffer.concat(parts), asBuffer, callback);
  };
  socket._writev = (chunks: { chunk: Buffer | string; encoding: BufferEncoding }[], callback: WriteCallback) =>
    writev(
      chunks.flatMap(({ chunk, encoding }) => partsOf(bytesOf(chunk, encoding)).map((part) => ({ chunk: part, encoding: asBuffer }))),
      callback,
    );
  const final = socket._final.bind(socket);
  // The end frame, then close_notify and the FIN once it is out (a write under way holds TLS's output back).
  // Writes not framed at all (a refusal after frameReads) end as they are.
  socket._final = (callback: WriteCallback) => (writes.bytes === Infinity ? final(callback) : write(endFrame, asBuffer, (error) => (error ? callback(error) : final(callback))));
}

/**
 * The serving side of a TCP stream, once its target header is read: what follows the header is framed (an opener's
 * early bytes, stream-header.ts), also what the socket read already; its own writes go as they are (a refusal)
 * until `frameEnds(socket, { rawWrites })` before its OK status.
 */
export function frameReads(socket: TLSSocket): void {
  frameEnds(socket, { rawWrites: Infinity });
  const held = socket.readableLength;
  if (held === 0) return;
  // read(n) of what is held never emits 'end' (only a read that finds nothing left does), so unshift stays allowed.
  const data = stripHeaders(socket, socket.read(held) as Buffer);
  if (data && data.length > 0) socket.unshift(data.length === 1 ? data[0] : Buffer.concat(data));
}

/** Chunks whose frame header was written in the bytes before them (frameInPlace): written as they are. */
const framedInPlace = new WeakSet<Buffer>();

/** Whether `stream` frames ends (frameEnds): what is written to it goes in frames. */
export function framesEnds(stream: Duplex): boolean {
  return (stream as Framed)[readers] !== undefined;
}

/**
 * A read of `bytes` into `into`, which has 4 bytes of its own memory before it (a buffer made by
 * `withHeadroom`), as one frame without a copy: the header goes in those bytes, and the socket's write
 * takes the frame as it is.
 */
export function frameInPlace(into: Buffer, bytes: number): Buffer {
  const frame = Buffer.from(into.buffer, into.byteOffset - headerBytes, headerBytes + bytes);
  frame.writeUInt32BE(bytes, 0);
  framedInPlace.add(frame);
  return frame;
}

/** A buffer of `size` bytes with room of its own for a frame header before it, for frameInPlace. */
export function withHeadroom(size: number): Buffer {
  return Buffer.from(new ArrayBuffer(headerBytes + size), headerBytes, size);
}

/**
 * The data in `chunk`, read from `stream` (a socket that frames ends), without frame headers: what its push hands
 * on, and what a copy that reads the socket into a buffer of its own writes (Node's onread bypasses push). Bytes
 * after the end frame destroy the stream with the error; undefined then.
 */
export function stripHeaders(stream: Duplex, chunk: Buffer): Buffer[] | undefined {
  try {
    return (stream as Framed)[readers]!.read(chunk);
  } catch (error) {
    stream.destroy(error as Error);
    return undefined;
  }
}
