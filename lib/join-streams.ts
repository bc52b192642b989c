/**
 * Joins two byte streams both ways (a client socket and its upstream: a socket to
 * the target, a tunnel stream) so that a cut is never taken for an end, and
 * nothing either peer does can throw (STYLE 20, 21).
 *
 * - Bytes flow both ways with backpressure: a write() that returns false pauses
 *   the source until 'drain', so the only buffers are the streams' own plus at
 *   most one chunk.
 * - A real end from one side ('end': a FIN, a tunnel stream closed by its far
 *   end) half-closes the other (end()); when both directions have ended, both
 *   close as they would on their own.
 * - Anything else that stops one side before both directions ended (an error, an
 *   RST, a destroy, a close without an end) resets the other side: a TCP socket
 *   with an RST (resetAndDestroy), any other stream by destroy(error), which a
 *   tunnel stream turns into a reset of its far end. A reader that reads until
 *   EOF then never takes a short stream for a whole one.
 * - Either side may already be gone when the join is made (a client that hung up
 *   while its upstream was being dialled): the other one is reset at once.
 *   (`stream.pipeline` throws ERR_STREAM_UNABLE_TO_PIPE there, and ends the
 *   destination cleanly when its source was destroyed.)
 *
 * ```ts
 * const join = joinStreams(client, upstream, { onClose: (outcome) => outcome.complete || count(`reset by ${outcome.cutBy}`) });
 * join.reset(new Error("idle timeout")); // both sides get an RST (or destroy(error))
 * ```
 */
import { Socket } from "node:net";
import { TLSSocket } from "node:tls";
import type { Duplex } from "node:stream";
import { bulkReadOf, readIntoOwnBuffer, socketsCanSwitch } from "./read-buffers.ts";

export interface JoinOutcome {
  /** Both directions ended with a real end. */
  complete: boolean;
  /** Which side stopped first when not complete ("a" or "b", as passed to joinStreams). */
  cutBy?: "a" | "b";
  /** What stopped it: the side's error, or an error saying it closed without an end. */
  error?: Error;
}

export interface JoinedStreams {
  /** Resets both sides (an idle timeout, a shutdown): the join ends as not complete. */
  reset(error: Error): void;
}

export interface JoinOptions {
  /** Called once, when both sides have closed. */
  onClose?: (outcome: JoinOutcome) => void;
}

/**
 * Ends a stream as cut, never as finished: a TCP socket with an RST, a TLS socket
 * with an RST of the TCP connection under it, anything else (a tunnel stream) by
 * destroy(error). The error is the caller's, handed over to say why: it never
 * comes back as an unhandled 'error' (a stream nobody listens to would end the
 * process).
 */
export function resetStream(stream: Duplex, error: Error): void {
  if (stream.destroyed) return;
  if (stream.listenerCount("error") === 0) stream.on("error", () => undefined);
  if (stream instanceof TLSSocket) return resetTls(stream, error);
  const socket = stream as Partial<Socket>;
  if (typeof socket.resetAndDestroy === "function") {
    try {
      resetSocket(socket as Socket, error);
      return;
    } catch {
      // ERR_INVALID_HANDLE_TYPE: a socket over something other than TCP (a TLS socket); destroyed below.
    }
  }
  stream.destroy(error);
}

/**
 * A TCP socket's RST (resetAndDestroy), or a plain close when its end() may be shutting down: libuv refuses an RST
 * then (uv_tcp_close_reset: EINVAL), and Node drops the handle without closing it: its descriptor leaks, and the
 * process spins at 100 % CPU when it exits (Environment::CleanupHandles waits for the handle forever). That
 * socket's own direction ended cleanly already; closing it is all that is left. Throws ERR_INVALID_HANDLE_TYPE for
 * a socket over something other than TCP, as resetAndDestroy does.
 */
export function resetSocket(socket: Socket, error?: Error): void {
  if (socket.writableEnded && !socket.writableFinished) socket.destroy(error);
  else socket.resetAndDestroy();
}

/**
 * Node has no reset for a TLS socket (resetAndDestroy refuses its handle), and destroying one, even with an
 * error, closes TCP with a FIN that the far end reads as a clean end (measured on Node 24: 'end', no error).
 * The TCP connection under it can reset: the far end then sees ECONNRESET.
 * - Through the net.Socket under it when it has one (a TLS server's connection, tls.connect({ socket })), so
 *   that it closes and the TLS socket with it: a raw reset of the handle under that net.Socket left both
 *   without 'close' for good (joinStreams never called onClose).
 * - Else through Node's internal TCP handle, when it is there (a TLS socket that made its own TCP connection:
 *   none of leafmesh's; measured, that one then never emits 'close'); else destroy(error) alone (TLS over a
 *   JavaScript stream: its stream is destroyed with the error, which a tunnel stream passes on as a reset).
 * - A turn later, never on OpenSSL's stack: a TLS socket destroyed and its TCP reset from within a handshake
 *   callback left OpenSSL reading a freed session (SIGSEGV; services/tunnel/tls-crash.test.ts). Paused
 *   meanwhile: nothing more is read from it.
 */
function resetTls(stream: TLSSocket, error: Error): void {
  stream.pause();
  // Called again before then, the second turn finds it destroyed.
  setImmediate(() => {
    if (stream.destroyed) return;
    const handle = (stream as unknown as { _handle?: { _parentWrap?: unknown; _parent?: { reset?: (callback: () => void) => unknown } } })._handle;
    const wrap = handle?._parentWrap;
    if (wrap instanceof Socket) {
      if (wrap.listenerCount("error") === 0) wrap.on("error", () => undefined);
      try {
        if (!wrap.destroyed) resetSocket(wrap);
      } catch {
        // ERR_INVALID_HANDLE_TYPE: TLS over a JavaScript stream (its wrap holds no TCP handle): destroyed below.
      }
    } else if (typeof handle?._parent?.reset === "function") {
      handle._parent.reset(() => undefined);
    }
    stream.destroy(error);
  });
}

/**
 * How often, while a direction waits on a full side, the join asks the kernel whether the side it stopped reading
 * is still there. A socket whose reads are stopped and that has nothing to write is not watched by the event loop
 * at all, so an RST from its peer went unnoticed: a client that gave up on a stalled endpoint (reset, then tried
 * again) kept its connection, its admission place and the endpoint's connection until the idle timeout, an hour.
 * A write of no bytes answers ECONNRESET or EPIPE from a reset socket, and does nothing on a live one (no segment
 * is sent); a TLS socket is asked through its TCP socket. One timer for every join of the process, running while
 * any join is open.
 */
export const stallProbeMs = 5_000;
const noBytes = Buffer.alloc(0);
const probes = new Set<() => void>();
let probeTimer: NodeJS.Timeout | undefined;

function watchStalls(probe: () => void): () => void {
  probes.add(probe);
  probeTimer ??= setInterval(() => {
    for (const each of probes) each();
  }, stallProbeMs).unref();
  return () => {
    probes.delete(probe);
    if (probes.size > 0 || probeTimer === undefined) return;
    clearInterval(probeTimer);
    probeTimer = undefined;
  };
}

/**
 * Asks the kernel about a socket whose reads may be stopped: a reset one then emits its 'error'. A TLS socket is
 * asked through the TCP socket under it (a served session, tls.connect({ socket }), a punched connection), whose
 * error Node hands to the TLS socket: a write to the TLS socket itself would be a record, and under end frames
 * (end-frames.ts) a frame of no bytes is the end. TLS over a JavaScript stream (a relay channel) is not asked: its
 * channel hears of a cut on its own. Nor is a socket that has finished writing (a write after its end is an
 * error of ours, not the peer's), nor one nobody listens to for errors.
 */
function askKernel(stream: Duplex): void {
  if (stream.destroyed || !stream.writable) return;
  const socket = stream instanceof TLSSocket ? (stream as TLSSocket & { _parent?: unknown })._parent : stream;
  if (!(socket instanceof Socket) || socket instanceof TLSSocket) return;
  if (socket.destroyed || socket.connecting || !socket.writable || socket.writableLength > 0 || socket.listenerCount("error") === 0) return;
  socket.write(noBytes);
}

/** Both directions of the stream are done: its far end ended, and our end of it finished. */
const finished = (stream: Duplex) => stream.readableEnded && stream.writableFinished;

export function joinStreams(a: Duplex, b: Duplex, options: JoinOptions = {}): JoinedStreams {
  let outcome: JoinOutcome | undefined;
  let closed = 0;
  const sideOf = (stream: Duplex) => (stream === a ? "a" : "b");
  const otherOf = (stream: Duplex) => (stream === a ? b : a);

  const cut = (stream: Duplex, error: Error) => {
    if (outcome) return;
    outcome = { complete: false, cutBy: sideOf(stream), error };
    resetStream(otherOf(stream), error);
    resetStream(stream, error);
  };
  // A direction waiting on a full side (`to` holds bytes it has not written) stopped reading `from`.
  const forget = watchStalls(() => {
    if (outcome) return;
    if (b.writableLength > 0) askKernel(a);
    if (a.writableLength > 0) askKernel(b);
  });
  const onClosed = () => {
    if (++closed < 2) return;
    forget();
    outcome ??= { complete: true };
    options.onClose?.(outcome);
  };

  for (const stream of [a, b]) {
    // Half-close passed through: a side's end must not end its own writable side (net's default).
    stream.allowHalfOpen = true;
    stream.on("error", (error: Error) => {
      if (!finished(stream)) cut(stream, error);
    });
    const onClose = () => {
      if (!finished(stream)) cut(stream, (stream.errored as Error | null) ?? closedWithoutEnd(sideOf(stream)));
      onClosed();
    };
    if (stream.closed) queueMicrotask(onClose);
    else stream.once("close", onClose);
  }
  // A side already gone is a cut before anything was carried; its 'close' may have passed already.
  for (const stream of [a, b]) {
    if (stream.destroyed && !finished(stream)) cut(stream, (stream.errored as Error | null) ?? closedWithoutEnd(sideOf(stream)));
  }
  if (!outcome) {
    copy(a, b);
    copy(b, a);
  }
  return {
    reset(error: Error) {
      if (!outcome) outcome = { complete: false, cutBy: undefined, error };
      resetStream(a, error);
      resetStream(b, error);
    },
  };
}

function closedWithoutEnd(side: "a" | "b"): Error & { code: string } {
  return Object.assign(new Error(`side ${side} of a joined stream closed before its end (a cut, not an end)`), { code: "ERR_STREAM_PREMATURE_CLOSE" });
}

/**
 * from → to with backpressure; from's end half-closes to. From a kernel or TLS socket into a kernel or TLS
 * socket, a direction whose read filled Node's whole read size (bulk: more was waiting) goes on reading into
 * a buffer of its own (lib/read-buffers.ts): no allocation and no Readable turn per read.
 */
function copy(from: Duplex, to: Duplex): void {
  // A pair that can never switch (a tunnel stream over libp2p, a channel) is not asked again at every read.
  const bulk = socketsCanSwitch(from, to) ? bulkReadOf(from) : Infinity;
  const onData = (chunk: Buffer) => {
    if (to.destroyed) return;
    const more = to.write(chunk);
    if (chunk.length >= bulk && readIntoOwnBuffer(from, to)) from.off("data", onData);
    // Switched or not, a full `to` stops the reads until 'drain'.
    if (!more) from.pause();
  };
  from.on("data", onData);
  to.on("drain", () => from.resume());
  if (from.readableEnded) to.end();
  else from.once("end", () => to.destroyed || to.end());
  if (!to.writableNeedDrain) from.resume();
}
