/**
 * The seam to the tunnel: how traffic reaches an endpoint on another node. The
 * tunnel actor implements `RemoteDialer`; the agent hands it to the traffic actor
 * (the one in-process interface between actors, see DESIGN.md). Without one,
 * endpoints on other nodes are dialled directly by IP.
 */
import type { Duplex } from "node:stream";

export interface RemoteTarget {
  host: string;
  port: number;
  protocol: "TCP" | "UDP";
}

export interface RemoteDialer {
  /**
   * A byte stream to `target` as seen from `node`. For TCP the stream is the
   * connection (end() half-closes); for UDP it carries one flow's datagrams, each
   * framed by `encodeDatagram` (below). Rejects when the node cannot be reached.
   */
  openStream(node: string, target: RemoteTarget): Promise<Duplex>;
}

/**
 * UDP over a stream (`protocol: "UDP"`): each datagram is one frame, a 2-byte
 * big-endian length then the payload (a UDP payload is at most 65,507 bytes, so
 * the length always fits). The tunnel's far end writes each frame's payload as
 * one datagram to the target and frames the replies the same way.
 */
export function encodeDatagram(payload: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(2 + payload.length);
  frame.writeUInt16BE(payload.length, 0);
  payload.copy(frame, 2);
  return frame;
}

/** Splits a byte stream back into datagrams; holds at most one partial frame. */
export class DatagramDecoder {
  #pending: Buffer = Buffer.alloc(0);

  /** Feeds bytes; returns the complete datagrams they finish. */
  push(chunk: Buffer): Buffer[] {
    let buffer = this.#pending.length > 0 ? Buffer.concat([this.#pending, chunk]) : chunk;
    const datagrams: Buffer[] = [];
    while (buffer.length >= 2) {
      const length = buffer.readUInt16BE(0);
      if (buffer.length < 2 + length) break;
      datagrams.push(buffer.subarray(2, 2 + length));
      buffer = buffer.subarray(2 + length);
    }
    this.#pending = Buffer.from(buffer);
    return datagrams;
  }
}
