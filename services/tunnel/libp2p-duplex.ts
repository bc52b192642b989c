/**
 * Adapters between Node streams and libp2p v3 message streams.
 *
 * - `DuplexMultiaddrConnection`: any Node Duplex (a hole-punched TCP socket, a
 *   relay channel) as a libp2p MultiaddrConnection, so the libp2p upgrader runs
 *   noise and yamux over it and the result is an ordinary connection. It
 *   follows @libp2p/tcp's socket-to-conn.js (which is not exported).
 * - `streamToDuplex`: a libp2p Stream as a Node Duplex for the traffic actor,
 *   honouring backpressure both ways (pause/resume, send()/onDrain).
 */
import { Duplex } from "node:stream";
import type { Socket } from "node:net";
import { LeafmeshError } from "../../lib/errors.ts";
import type { AbortOptions, Connection, Stream } from "@libp2p/interface";
import { AbstractMultiaddrConnection } from "@libp2p/utils";
import type { Multiaddr } from "@multiformats/multiaddr";
import type { Logger as Libp2pLogger } from "@libp2p/interface";

export class DuplexMultiaddrConnection extends AbstractMultiaddrConnection {
  readonly duplex: Duplex;

  constructor(init: { duplex: Duplex; remoteAddr: Multiaddr; direction: "inbound" | "outbound"; log: Libp2pLogger; inactivityTimeout?: number }) {
    super({ remoteAddr: init.remoteAddr, direction: init.direction, log: init.log, inactivityTimeout: init.inactivityTimeout });
    this.duplex = init.duplex;
    this.duplex.on("data", (buffer: Buffer) => this.onData(buffer));
    this.duplex.on("error", (error: Error) => this.abort(error));
    this.duplex.once("end", () => this.onTransportClosed());
    this.duplex.once("close", () => {
      if (this.duplex.errored) this.abort(this.duplex.errored as Error);
      else this.onTransportClosed();
    });
    this.duplex.on("drain", () => this.safeDispatchEvent("drain"));
  }

  sendData(data: Parameters<AbstractMultiaddrConnection["sendData"]>[0]): { sentBytes: number; canSendMore: boolean } {
    // One write per call: noise hands over [2-byte length, ciphertext] pairs, and
    // over the relay every write becomes a NATS message — tiny ones would halve it.
    const buffer = data.subarray();
    return { sentBytes: buffer.byteLength, canSendMore: this.duplex.write(buffer) };
  }

  async sendClose(_options?: AbortOptions): Promise<void> {
    if (this.duplex.destroyed) return;
    await new Promise<void>((resolve) => {
      this.duplex.once("close", () => resolve());
      this.duplex.end();
      // A relay channel closes once both ends sent FIN; a socket once the kernel is done.
      const socket = this.duplex as Partial<Socket>;
      if (typeof socket.destroySoon === "function") socket.destroySoon();
    });
  }

  sendReset(error: Error): void {
    const socket = this.duplex as Partial<Socket>;
    if (typeof socket.resetAndDestroy === "function" && !this.duplex.writableEnded) socket.resetAndDestroy();
    else this.duplex.destroy(error);
  }

  sendPause(): void {
    this.duplex.pause();
  }

  sendResume(): void {
    this.duplex.resume();
  }
}

/**
 * A libp2p stream as a Node Duplex: end() half-closes, destroy() resets.
 *
 * libp2p's muxer ends its streams *cleanly* when the connection under them is
 * aborted (abstract-stream-muxer.js, muxerOnMaConnClose drops the error): the
 * streams dispatch "end" and "close" as if the remote had finished. An end that
 * arrives while the connection is no longer open is therefore a cut, and
 * becomes an error here — a reader never mistakes a cut for an end of stream.
 *
 * A write the stream could not send at once is done when the stream's own queue
 * has gone out (its 'idle'), not at its next 'drain': libp2p signals 'drain' to
 * every stream whenever the connection under them drains, also to a stream whose
 * send window is spent, and a writer released by that queued chunk after chunk
 * while its reader did not read (40 MiB in the carrier suite, without bound).
 */
export function streamToDuplex(stream: Stream, connection: Pick<Connection, "status">): Duplex {
  let ended = false;
  const cut = () => new LeafmeshError("TUNNEL_FAILED", "the connection carrying this stream was lost before the stream ended (stream reset)");
  const duplex = new Duplex({
    allowHalfOpen: true,
    read() {
      if (stream.readStatus === "paused") stream.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      try {
        if (stream.send(chunk)) callback();
        else sent(stream).then(() => callback(), callback);
      } catch (error) {
        callback(error as Error);
      }
    },
    final(callback) {
      stream.close().then(() => callback(), callback);
    },
    destroy(error, callback) {
      if (stream.status === "open" || stream.status === "closing") {
        if (error || !ended) stream.abort(error ?? new Error("stream destroyed locally"));
      }
      callback(error);
    },
  });
  stream.addEventListener("message", (event) => {
    // A view, not a copy (Buffer.from(Uint8Array) would copy; a list's subarray() already did).
    const bytes = event.data instanceof Uint8Array ? event.data : event.data.subarray();
    const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (!duplex.push(buffer) && stream.readStatus === "readable") stream.pause();
  });
  stream.addEventListener("end", () => {
    if (connection.status !== "open") return void duplex.destroy(cut());
    ended = true;
    duplex.push(null);
  });
  stream.addEventListener("close", (event) => {
    if (event.error) duplex.destroy(event.error);
    else if (!ended && connection.status !== "open") duplex.destroy(cut());
  });
  return duplex;
}

/** Resolves once everything queued on the stream was handed to the muxer; rejects if the stream closes first. */
function sent(stream: Stream): Promise<void> {
  if (stream.writeBufferLength === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onIdle = () => {
      stream.removeEventListener("close", onClose);
      resolve();
    };
    const onClose = (event: Event & { error?: Error }) => {
      stream.removeEventListener("idle", onIdle);
      reject(event.error ?? new LeafmeshError("TUNNEL_FAILED", "the stream closed with bytes still queued"));
    };
    stream.addEventListener("idle", onIdle, { once: true });
    stream.addEventListener("close", onClose, { once: true });
  });
}
