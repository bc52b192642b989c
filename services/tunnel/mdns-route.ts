/**
 * Whether this host can send mDNS at all. A node with no default route and no multicast route (an edge LAN
 * that reaches the cloud through one routed prefix) cannot send to 224.0.0.251: libp2p's mDNS then finds no
 * LAN neighbour, and said nothing about it (its send errors go to its debug logger). Joining the group asks the
 * kernel for a route without sending a packet.
 *
 * ```ts
 * const problem = await mdnsRouteProblem(); // undefined, or "no route to 224.0.0.251 (ENODEV)"
 * ```
 */
import { createSocket } from "node:dgram";

export const mdnsAddress = "224.0.0.251";

export function mdnsRouteProblem(): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = createSocket({ type: "udp4", reuseAddr: true });
    const done = (problem: string | undefined) => {
      socket.close();
      resolve(problem);
    };
    socket.once("error", (error: NodeJS.ErrnoException) => done(`no route to ${mdnsAddress} (${error.code ?? error.message})`));
    // Joining the group picks its interface by route, as mDNS does: ENODEV without one. Nothing is sent.
    socket.bind(0, () => {
      try {
        socket.addMembership(mdnsAddress);
        done(undefined);
      } catch (error) {
        done(`no route to ${mdnsAddress} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
      }
    });
  });
}
