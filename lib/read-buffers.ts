/**
 * Bulk bytes between two TCP sockets read into a buffer the copy keeps, not into
 * a new one per read (lib/join-streams.ts hands a direction over here once it
 * carries bulk).
 *
 * Node reads a socket into a fresh 64 KiB ArrayBuffer every time and hands it to
 * JavaScript through the Readable machinery; at loopback speeds that allocation
 * drives ~10 mark-compact GCs a second and a JavaScript turn per 64 KiB
 * (docs/performance.md). Node's `onread` option reads into a buffer the caller
 * owns and calls back with the byte count, but only on sockets Node is asked to
 * create: a server's accepted sockets (every proxy's client side) never get it.
 * This module turns it on for a socket that exists, through the same three
 * fields Node's own constructor sets (found by their symbols' names), and the
 * handle's `useUserBuffer`. On a Node where they are not found, nothing is
 * switched: the copy stays on data events.
 *
 * The buffer is reused, so a chunk must be gone before the next read lands in
 * it. A write that the kernel takes at once (Node tried it synchronously) leaves
 * nothing behind; a write left pending keeps a reference to the buffer, so the
 * direction stops reading until that write completes. Nothing is copied, nothing
 * is buffered beyond the sockets' own.
 *
 * Memory is bounded per process: a direction reads into 256 KiB while it moves
 * bulk, at most `bigBuffersMax` of those at once (16 MiB); a direction whose
 * reads turn small gives its big buffer back and reads into 16 KiB of its own;
 * at most `directionsMax` directions at once (16 MiB more). A TLS socket (a
 * tunnel stream) hands out a record (16 KiB) a read: it reads into 16 KiB, and
 * saves the allocation, not the turns. An idle connection that never carried
 * bulk holds none (Node's default).
 *
 * ```ts
 * if (readIntoOwnBuffer(from, to, onEnd)) from.off("data", onData);
 * ```
 */
import { Socket } from "node:net";
import { TLSSocket } from "node:tls";
import type { Duplex } from "node:stream";
import { frameInPlace, framesEnds, stripHeaders, withHeadroom } from "./end-frames.ts";

export const bigBufferBytes = 256 * 1024;
export const smallBufferBytes = 16 * 1024;
export const bigBuffersMax = 64;

/** A read of at least this many bytes from a kernel socket says the kernel held more: Node's own read size. */
export const bulkReadBytes = 64 * 1024;
/** What a TLS socket hands out per read: one record's plaintext at most (Node reads 16 KiB of cleartext at a time). */
export const tlsReadBytes = 16 * 1024;
/** @default 1024 directions reading into buffers of their own at once (16 KiB each at least); more stay on data events. */
export const directionsMax = 1024;

let bigBuffersLent = 0;
let directionsOpen = 0;
let directionsSwitched = 0;
let readsHeldForWrites = 0;

/**
 * What the process holds now and has done, for tests and metrics: big buffers lent, directions reading into
 * buffers of their own now and ever, and reads held back until a pending write of the buffer was done.
 */
export function readBufferStats(): { bigBuffersLent: number; directionsOpen: number; directionsSwitched: number; readsHeldForWrites: number } {
  return { bigBuffersLent, directionsOpen, directionsSwitched, readsHeldForWrites };
}

/** The read size that says `from` carries bulk: a full read (Node's 64 KiB from a kernel socket, a whole record from TLS). */
export function bulkReadOf(from: Duplex): number {
  return from instanceof TLSSocket ? tlsReadBytes : bulkReadBytes;
}

interface Fields {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

/** The symbols of Node's own onread fields, from a socket of this Node (undefined where they are not found). */
const fields: Fields | undefined = (() => {
  const probe = new Socket();
  const named = (name: string) => Object.getOwnPropertySymbols(probe).find((symbol) => symbol.description === name);
  const found = { buffer: named("kBuffer"), callback: named("kBufferCb"), generator: named("kBufferGen") };
  probe.destroy();
  return found.buffer && found.callback && found.generator ? (found as Fields) : undefined;
})();

interface StreamHandle {
  useUserBuffer?: (buffer: Uint8Array) => void;
  constructor: { name: string };
}

const handleOf = (stream: Duplex): StreamHandle | undefined => (stream as unknown as { _handle?: StreamHandle | null })._handle ?? undefined;

/** A net.Socket over a kernel stream (TCP or a Unix socket), not TLS, not a JavaScript stream. */
function kernelSocket(stream: Duplex): stream is Socket {
  if (!(stream instanceof Socket) || stream instanceof TLSSocket) return false;
  const handle = handleOf(stream);
  return typeof handle?.useUserBuffer === "function" && (handle.constructor.name === "TCP" || handle.constructor.name === "Pipe");
}

/**
 * Marks a 'data' listener that only watches for reads (services/tunnel/stream-server.ts batchWrites corks
 * the target at a turn's first chunk): it does not count as another reader, and goes when the direction
 * switches to its own buffer (which emits no 'data').
 */
export const watchesReadsOnly: unique symbol = Symbol("leafmesh.watchesReadsOnly");

const readers = (stream: Duplex) => stream.listeners("data").filter((listener) => !(watchesReadsOnly in listener)).length;

/** A TLS socket over Node's TLSWrap (over TCP or over a JavaScript stream: a relay channel). */
function tlsSocket(stream: Duplex): stream is TLSSocket {
  const handle = handleOf(stream);
  return stream instanceof TLSSocket && typeof handle?.useUserBuffer === "function" && handle.constructor.name === "TLSWrap";
}

/**
 * What never changes for a pair: from is a kernel or TLS socket, to a kernel or TLS socket, and this Node's
 * onread fields were found. A copy asks once (a tunnel stream over libp2p never switches: no need to ask again
 * at every read).
 */
export function socketsCanSwitch(from: Duplex, to: Duplex): boolean {
  return fields !== undefined && (kernelSocket(from) || tlsSocket(from)) && (kernelSocket(to) || to instanceof TLSSocket);
}

/**
 * - from is a kernel or TLS socket with nothing buffered, still open, on a Node whose onread fields were
 *   found, with no reader besides the copy: at most one 'data' listener besides those marked
 *   `watchesReadsOnly`, no 'readable' one (a read into the copy's buffer emits no 'data', so another
 *   listener would silently stop hearing).
 * - to is a kernel socket or a TLS socket (a tunnel stream: it encrypts the chunk, and its write completes
 *   only when the records are out, a turn later at the soonest).
 * - Fewer than `directionsMax` directions read into buffers of their own.
 */
export function canReadIntoOwnBuffer(from: Duplex, to: Duplex): from is Socket {
  if (!socketsCanSwitch(from, to) || directionsOpen >= directionsMax) return false;
  if (readers(from) > 1 || from.listenerCount("readable") > 0) return false;
  return !from.destroyed && !to.destroyed && from.readableLength === 0;
}

/**
 * Switches from's reads into a buffer of this copy's own: each read is written to `to` at once, and from
 * reads again only when that write is done (any write to `to` still pending, ours or one before). Call it
 * from from's 'data' handler (the chunk just taken was the last one Node allocates) or while from is paused
 * with nothing buffered (canReadIntoOwnBuffer checks that).
 * `to.end()` on from's end stays the caller's ('end' is emitted as before).
 */
export function readIntoOwnBuffer(from: Duplex, to: Duplex): boolean {
  if (!fields || !canReadIntoOwnBuffer(from, to)) return false;
  // TLS hands out a record at a time: a bigger buffer would never fill. And it decrypts every record it holds
  // in one go, a read each, also after the read that stopped the reads (a kernel socket's reads stop at once).
  const tls = from instanceof TLSSocket;
  const grows = !tls;
  let buffer: Buffer;
  let big = grows && bigBuffersLent < bigBuffersMax;
  if (big) bigBuffersLent++;
  // Into a socket that frames ends (lib/end-frames.ts): each read is framed where it lies, in room left before it.
  const framesTo = framesEnds(to);
  const allocate = (size: number) => (framesTo ? withHeadroom(size) : Buffer.allocUnsafe(size));
  buffer = allocate(big ? bigBufferBytes : smallBufferBytes);
  let small: Buffer | undefined = big ? undefined : buffer;
  let lastRead = 0;
  /** The buffer is referenced by a write still pending: no read may land in it, and it may not be swapped. */
  let lent = false;

  // A socket that frames ends (lib/end-frames.ts): Node's onread bypasses its push, so its reader strips the
  // headers here (its end still goes through push, which checks for the end frame).
  const framesFrom = framesEnds(from);
  /** Whether anything of `chunk` was written (not when it held headers alone, nor when it broke the frames). */
  const writeData = (chunk: Buffer): boolean => {
    const data = stripHeaders(from, chunk) ?? [];
    for (let index = 0; index < data.length; index++) to.write(data[index], index === data.length - 1 ? written : undefined);
    return data.length > 0;
  };
  const giveBack = () => {
    if (!big) return;
    big = false;
    bigBuffersLent--;
  };
  const written = () => {
    if (!lent || to.writableLength !== 0) return;
    lent = false;
    if (!from.destroyed) from.resume();
  };
  const onRead = (bytes: number, into: Buffer): boolean => {
    lastRead = bytes;
    if (to.destroyed) return false;
    if (!framesFrom) to.write(framesTo ? frameInPlace(into, bytes) : into.subarray(0, bytes), written);
    else if (!writeData(into.subarray(0, bytes))) return !from.destroyed; // headers alone: nothing refers to the buffer
    if (!lent && to.writableLength === 0) return true;
    lent = true;
    readsHeldForWrites++;
    return false;
  };
  /** Called by Node after every read: the buffer the next read goes into. */
  const next = (): Buffer => {
    // No read may land in a buffer a pending write still reads: TLS's reads after the one that stopped them
    // each get a fresh buffer; a kernel socket reads no more until from.resume().
    if (lent) return tls ? (buffer = allocate(buffer.length)) : buffer;
    if (big && lastRead < smallBufferBytes) {
      giveBack();
      buffer = small ??= allocate(smallBufferBytes);
    } else if (grows && !big && lastRead === buffer.length && bigBuffersLent < bigBuffersMax) {
      big = true;
      bigBuffersLent++;
      buffer = allocate(bigBufferBytes);
    }
    return buffer;
  };

  for (const listener of from.listeners("data")) if (watchesReadsOnly in listener) from.off("data", listener as unknown as (...args: unknown[]) => void);
  const socket = from as unknown as Record<symbol, unknown>;
  socket[fields.buffer] = buffer;
  socket[fields.callback] = onRead;
  socket[fields.generator] = next;
  handleOf(from)?.useUserBuffer?.(buffer);
  directionsSwitched++;
  directionsOpen++;
  // No read comes after from's end: its big buffer goes back then, even while the other way stays open.
  from.once("end", giveBack);
  from.once("close", () => {
    giveBack();
    directionsOpen--;
  });
  return true;
}
