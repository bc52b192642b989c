/**
 * A TCP proxy in front of one port that can be made a long or lossy link while
 * it runs (this machine's kernel has no netem): every chunk is delayed by
 * `delayMs` in each direction, in order and pipelined (a long link, not a
 * one-chunk window); with `lossRate`, that share of chunks is delayed another
 * `retransmitMs` (what a lost segment costs a TCP stream: a retransmit timeout),
 * and that share of new connections is held without an answer until it closes
 * (a lost handshake: a dialler or a probe sees a timeout). Bounded: a direction
 * with more than 1 MiB queued stops reading until it drains.
 *
 * ```ts
 * const proxy = await startDegradingProxy(hubLeafPort);   // nats://127.0.0.1:${proxy.port}
 * proxy.set({ delayMs: 150, lossRate: 0.3 });             // degrade it mid-test
 * proxy.forwardedBytes;                                   // bytes passed on, both directions
 * ```
 */
import { connect, createServer, type Socket } from "node:net";

export interface LinkQuality {
  /** One-way delay added to every chunk. */
  delayMs: number;
  /** Share (0..1) of chunks delayed another retransmitMs, and of new connections never answered. */
  lossRate: number;
  /** @default 200 — Linux's minimum retransmit timeout. */
  retransmitMs?: number;
}

export interface DegradingProxy {
  readonly port: number;
  /** Bytes passed on so far, both directions. */
  readonly forwardedBytes: number;
  /** Connections accepted so far, and of them held unanswered. */
  readonly connections: { accepted: number; held: number };
  set(quality: LinkQuality): void;
  close(): Promise<void>;
}

const maxQueuedBytes = 1024 * 1024;

export async function startDegradingProxy(targetPort: number, targetHost = "127.0.0.1", random: () => number = Math.random): Promise<DegradingProxy> {
  let quality: Required<LinkQuality> = { delayMs: 0, lossRate: 0, retransmitMs: 200 };
  let forwardedBytes = 0;
  const connections = { accepted: 0, held: 0 };
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
  };

  /** Passes `from`'s bytes to `to`, each chunk when its time comes, in order (one queue, one timer). */
  const relay = (from: Socket, to: Socket) => {
    const queue: { due: number; chunk: Buffer }[] = [];
    let queued = 0;
    let timer: NodeJS.Timeout | undefined;
    let ended = false;
    const pump = () => {
      timer = undefined;
      const now = Date.now();
      while (queue.length > 0 && queue[0].due <= now) {
        const { chunk } = queue.shift()!;
        queued -= chunk.length;
        if (to.destroyed) continue;
        forwardedBytes += chunk.length;
        to.write(chunk);
      }
      if (queued <= maxQueuedBytes && from.isPaused() && !from.destroyed) from.resume();
      if (queue.length > 0) timer = setTimeout(pump, Math.max(0, queue[0].due - Date.now()));
      else if (ended && !to.destroyed) to.end();
    };
    from.on("data", (chunk: Buffer) => {
      const extra = quality.lossRate > 0 && random() < quality.lossRate ? quality.retransmitMs : 0;
      const last = queue.at(-1)?.due ?? 0;
      queue.push({ due: Math.max(last, Date.now() + quality.delayMs + extra), chunk });
      queued += chunk.length;
      if (queued > maxQueuedBytes) from.pause();
      if (!timer) timer = setTimeout(pump, Math.max(0, queue[0].due - Date.now()));
    });
    // An end after the bytes before it; a reset at once (a cut link loses what was in flight).
    from.once("end", () => {
      ended = true;
      if (!timer) pump();
    });
    from.once("error", () => {
      clearTimeout(timer);
      to.resetAndDestroy();
    });
  };

  const server = createServer({ allowHalfOpen: true }, (client) => {
    track(client);
    connections.accepted++;
    if (quality.lossRate > 0 && random() < quality.lossRate) {
      // A lost handshake: nothing is forwarded; the dialler gives up by its own timeout.
      connections.held++;
      client.setTimeout(30_000, () => client.destroy());
      return;
    }
    const upstream = connect({ host: targetHost, port: targetPort, allowHalfOpen: true });
    track(upstream);
    relay(client, upstream);
    relay(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    get forwardedBytes() {
      return forwardedBytes;
    },
    connections,
    set(next) {
      quality = { retransmitMs: 200, ...next };
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
