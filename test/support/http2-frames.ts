/** Raw HTTP/2 frames, for tests that speak the protocol by hand (a misbehaving peer, a client that stalls). */

/** An HTTP/2 frame (RFC 9113 §4.1): its 9-byte header, then the payload. */
export function frame(type: number, flags: number, stream: number, payload = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}
