/**
 * A socket that must be done within a time from now, however often it sends: a
 * socket's own setTimeout is an inactivity timer, restarted by every byte, so a
 * peer that trickles a byte now and then keeps it for ever. The deadline ends
 * with the socket; call the returned function to lift it earlier (the
 * handshake is done).
 *
 * ```ts
 * const lift = deadline(socket, 10_000, () => socket.destroy());
 * // ... handshake done:
 * lift();
 * ```
 */
import type { Socket } from "node:net";

export function deadline(socket: Socket, ms: number, onExpired: () => void): () => void {
  const timer = setTimeout(onExpired, ms);
  const lift = () => clearTimeout(timer);
  socket.once("close", lift);
  return lift;
}
