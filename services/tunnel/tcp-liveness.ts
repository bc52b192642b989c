/**
 * TCP keepalive on the tunnel's own TCP connections: direct TLS streams (tls-streams.ts),
 * both ends, and punched connections (punch.ts). A path that goes silent (the far node
 * lost power, a NAT dropped its mapping, a link drops every packet) sends no FIN and no
 * RST: a receiver with nothing in flight would wait for ever, and a stream on it would
 * never end, where the relay's idle timeout (relay-channel.ts) and libp2p's pings
 * (host.ts) end theirs within seconds. With keepalive the kernel asks the peer after
 * `tunnelKeepAliveMs` of silence and, unanswered, fails the socket with ETIMEDOUT: the
 * stream on it is reset, at both ends (a stream cut is an error, STYLE 20).
 *
 * The kernel answers the probes itself: a busy or stopped (SIGSTOP) process is not
 * taken for a dead one. A sender with bytes in flight is ruled by retransmission
 * instead (minutes), but its peer, the receiver, times out and resets its side.
 *
 * ```ts
 * keepTunnelConnectionAlive(socket); // before or after connect
 * ```
 */
import type { Socket } from "node:net";

/**
 * @default 5_000 — silence before the first probe. libuv (Node 24) then probes every second,
 * ten times: a dead path is noticed ~15 s after its last byte, as libp2p's 10 s ping timeout
 * notices one; probes cost a few bytes per idle connection every few seconds.
 */
export const tunnelKeepAliveMs = 5_000;

export function keepTunnelConnectionAlive(socket: Socket): void {
  socket.setKeepAlive(true, tunnelKeepAliveMs);
}
