/**
 * A socket whose first bytes were read already (to route it) handed on as a stream that yields them first:
 * for TLS and HTTP/2, which read a net.Socket's kernel handle past its JS buffer.
 */
import type { Socket } from "node:net";
import { Duplex } from "node:stream";
import { LeafmeshError } from "../../lib/errors.ts";
import { resetStream } from "../../lib/join-streams.ts";

/**
 * The socket as a stream that first yields the bytes read from it already. TLS and HTTP/2 read a net.Socket's
 * kernel handle directly, past its JS buffer, so `unshift` would be lost on them (the ClientHello or the h2
 * preface read to route the connection): they are given this stream instead (Node wraps a plain Duplex in
 * a JS stream socket). Backpressure holds both ways; a reset either side reaches the other.
 */
export function replayed(socket: Socket, first: Buffer): Duplex {
  const stream = new Duplex({
    allowHalfOpen: true,
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      if (socket.write(chunk)) callback();
      else socket.once("drain", () => callback());
    },
    final(callback) {
      socket.end();
      callback();
    },
    destroy(error, callback) {
      if (error) resetStream(socket, error);
      else socket.destroy();
      callback(error);
    },
  });
  if (first.length > 0) stream.push(first);
  socket.on("data", (chunk: Buffer) => {
    if (!stream.push(chunk)) socket.pause();
  });
  socket.on("end", () => stream.push(null));
  socket.on("error", (error) => stream.destroy(error));
  socket.on("close", () => {
    if (!stream.destroyed) stream.destroy(socket.readableEnded ? undefined : new LeafmeshError("PROXY_FAILED", "the client's connection closed"));
  });
  // Reads come through `stream` from now on.
  socket.pause();
  return stream;
}
