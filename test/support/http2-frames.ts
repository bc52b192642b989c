/** Raw HTTP/2 frames, for tests that speak the protocol by hand (a misbehaving peer, a client that stalls). */
import { createServer, type Server, type Socket } from "node:net";

/** An HTTP/2 frame (RFC 9113 §4.1): its 9-byte header, then the payload. */
export function frame(type: number, flags: number, stream: number, payload = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

/** An RST_STREAM frame (RFC 9113 §6.4) with its error code (0: NO_ERROR). */
export function resetFrame(stream: number, code: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(code);
  return frame(3, 0, stream, payload);
}

/**
 * An h2c server whose answers a test writes frame by frame, as a broken or hostile backend writes them: its SETTINGS
 * (none changed) at once, the client's acknowledged, and each request's HEADERS frame handed to `onRequest` with its
 * stream's id (the header block is not decoded).
 */
export function rawHttp2Server(onRequest: (socket: Socket, stream: number) => void, sockets: Set<Socket>): Server {
  return createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => undefined);
    socket.write(frame(4, 0, 0));
    let pending = Buffer.alloc(0);
    let prefaceRead = false;
    socket.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (!prefaceRead) {
        if (pending.length < 24) return;
        pending = pending.subarray(24);
        prefaceRead = true;
      }
      while (pending.length >= 9 && pending.length >= 9 + pending.readUIntBE(0, 3)) {
        const [type, flags, stream] = [pending[3], pending[4], pending.readUInt32BE(5) & 0x7fffffff];
        pending = pending.subarray(9 + pending.readUIntBE(0, 3));
        if (type === 4 && !(flags & 1)) socket.write(frame(4, 1, 0)); // their SETTINGS, acknowledged
        if (type === 1) onRequest(socket, stream);
      }
    });
  });
}
