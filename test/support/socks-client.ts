/**
 * A client of a SOCKS5 proxy and of plain TCP listeners, for tests that read a
 * stream to its end and must tell how it ended (test/peer-faults.test.ts, the
 * tunnel revocation and kill tests).
 *
 * ```ts
 * const socket = await socksConnect(socksPort, "edge-b", 8080);  // CONNECT by node name
 * const echoed = await roundTrip(socket, payload);
 * ```
 */
import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import { socksGreeting, socksRequest } from "./fault-targets.ts";
import { eventually, toAddress, type ListenTarget } from "./ports.ts";

export function connected(target: ListenTarget): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ ...toAddress(target), allowHalfOpen: true });
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Reads until at least `bytes` arrived (or the socket ends or fails): what arrived. */
export function readAtLeast(socket: Socket, bytes: number, timeoutMs = 10_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const timer = setTimeout(() => finish(new Error(`read ${total} of ${bytes} bytes within ${timeoutMs} ms`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      total += chunk.length;
      if (total >= bytes) finish();
    };
    const onEnd = () => finish(total >= bytes ? undefined : new Error(`the stream ended after ${total} of ${bytes} bytes`));
    const onError = (error: Error) => finish(error);
    function finish(error?: Error) {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("error", onError);
      socket.pause();
      if (error) reject(error);
      else resolve(Buffer.concat(chunks));
    }
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("error", onError);
    socket.resume();
  });
}

/** A SOCKS5 CONNECT through `socksPort`: the socket once the proxy replied success, or the reply code it refused with. */
export async function socksConnect(socksPort: number, host: string, port: number): Promise<Socket> {
  const socket = await connected(socksPort);
  socket.on("error", () => undefined);
  socket.write(Buffer.concat([socksGreeting, socksRequest(host, port)]));
  // A refusal or a silent proxy: the socket is closed here, or it would hold one of this client's places at the proxy until the proxy's handshake timeout.
  const reply = await readAtLeast(socket, 12).catch((error: Error) => {
    socket.destroy();
    throw error;
  });
  if (reply[1] !== 0x00 || reply[3] !== 0x00) {
    socket.destroy();
    throw new Error(`SOCKS refused: method ${reply[1]}, reply ${reply[3]}`);
  }
  if (reply.length > 12) socket.unshift(reply.subarray(12));
  return socket;
}

/** Writes `payload`, half-closes, and reads until the far side ends: what came back. */
export async function roundTrip(socket: Socket, payload: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const ended = new Promise<void>((resolve, reject) => {
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.once("end", resolve);
    socket.once("error", reject);
  });
  socket.end(payload);
  socket.resume();
  await ended;
  return Buffer.concat(chunks);
}

/**
 * Waits until a stream through the SOCKS proxy on `socksPort` to `host`:`port` (an echo server) carries 2 KiB
 * back, trying again on any failure; returns how long that took.
 */
export async function echoesThroughSocks(socksPort: number, host: string, port: number, timeoutMs: number, what = `a stream to ${host}`): Promise<number> {
  const started = Date.now();
  const payload = randomBytes(2048);
  await eventually(
    async () => {
      const socket = await socksConnect(socksPort, host, port).catch(() => undefined);
      if (!socket) return undefined;
      try {
        socket.write(payload);
        return (await readAtLeast(socket, payload.length, 3_000)).equals(payload) || undefined;
      } catch {
        return undefined;
      } finally {
        socket.destroy();
      }
    },
    timeoutMs,
    what,
  );
  return Date.now() - started;
}
