/**
 * Ends the TCP connections a task opens when a signal aborts, for a library call that takes no AbortSignal:
 * nats.js's connect() dials, and waits up to its timeout for a server that accepts and says nothing; a Ctrl-C
 * then left the dial holding the process open. The task's sockets are found by its async context
 * (node:diagnostics_channel's `net.client.socket`, which net.connect publishes), not by the library's internals.
 *
 * ```ts
 * const reply = await closeSocketsOnAbort(signal, async () => (await connect({ servers })).request(subject, data));
 * ```
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import type { Socket } from "node:net";

interface Scope {
  signal: AbortSignal;
  sockets: Set<Socket>;
}

const scopes = new AsyncLocalStorage<Scope>();
/** Tasks running now: the channel is listened to only while there is one (every other connect of the process, a proxied connection's dial, pays nothing). */
let running = 0;

function onClientSocket(message: unknown): void {
  const scope = scopes.getStore();
  if (!scope) return;
  const { socket } = message as { socket: Socket };
  // Published before net.connect starts the dial, which would undo a destroy made now: the next tick ends it.
  if (scope.signal.aborted) process.nextTick(() => socket.destroy());
  else {
    scope.sockets.add(socket);
    socket.once("close", () => scope.sockets.delete(socket));
  }
}

/** Runs `task`; when `signal` aborts, every TCP connection it opened (and any it opens after) is destroyed. */
export async function closeSocketsOnAbort<T>(signal: AbortSignal | undefined, task: () => Promise<T>): Promise<T> {
  if (!signal) return task();
  if (running++ === 0) subscribe("net.client.socket", onClientSocket);
  const scope: Scope = { signal, sockets: new Set() };
  const destroyAll = () => {
    for (const socket of scope.sockets) socket.destroy();
  };
  signal.addEventListener("abort", destroyAll, { once: true });
  try {
    return await scopes.run(scope, task);
  } finally {
    signal.removeEventListener("abort", destroyAll);
    if (--running === 0) unsubscribe("net.client.socket", onClientSocket);
  }
}
