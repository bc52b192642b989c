/**
 * Connected TCP pairs over loopback, and a proxy's two pairs joined by
 * joinStreams: client ⇄ [proxyClient | proxyUpstream] ⇄ target. For the tests of
 * lib/join-streams.ts and lib/read-buffers.ts.
 *
 * ```ts
 * const pairs = await loopbackPairs();
 * const { client, target, closed, join } = await pairs.proxied();
 * pairs.close();
 * ```
 */
import { connect, createServer, type Socket } from "node:net";
import { joinStreams, type JoinedStreams, type JoinOutcome } from "../../lib/join-streams.ts";

export interface LoopbackPairs {
  /** A connected pair: the dialling end and the accepted end (both allowHalfOpen). */
  pair(): Promise<[Socket, Socket]>;
  /** client ⇄ [proxyClient | proxyUpstream] ⇄ target; `closed` settles with the join's outcome. */
  proxied(): Promise<{ client: Socket; target: Socket; proxyClient: Socket; proxyUpstream: Socket; closed: Promise<JoinOutcome>; join: JoinedStreams }>;
  /** Stops listening (pairs already made stay as they are). */
  close(): void;
}

export async function loopbackPairs(): Promise<LoopbackPairs> {
  const waiting: ((socket: Socket) => void)[] = [];
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    const next = waiting.shift();
    if (next) next(socket);
    else socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;

  const pair = async (): Promise<[Socket, Socket]> => {
    const far = new Promise<Socket>((resolve) => waiting.push(resolve));
    const near = connect({ host: "127.0.0.1", port, allowHalfOpen: true });
    await new Promise((resolve) => near.once("connect", resolve));
    return [near, await far];
  };
  return {
    pair,
    async proxied() {
      const [client, proxyClient] = await pair();
      const [proxyUpstream, target] = await pair();
      for (const socket of [client, target]) socket.on("error", () => undefined);
      let join!: JoinedStreams;
      const closed = new Promise<JoinOutcome>((resolve) => (join = joinStreams(proxyClient, proxyUpstream, { onClose: resolve })));
      return { client, target, proxyClient, proxyUpstream, closed, join };
    },
    close: () => void server.close(),
  };
}
