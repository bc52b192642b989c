/**
 * A client that asks and then reads nothing of its answer (a slow read) holds its connection, and the backend
 * connection whose answer waits behind it, for as long as it likes: backpressure stops every write and no
 * deadline of Node's runs then (its server's timeout is off by default). Such a socket is reset once nothing
 * was written for a while and bytes are still owed to it; counted.
 */
import type { Socket } from "node:net";
import { LeafmeshError } from "../../lib/errors.ts";
import { resetStream } from "../../lib/join-streams.ts";

/** @default 300_000 — Envoy's stream_idle_timeout: an answer no byte of which was taken this long is cut. */
export const answerStallMs = 300_000;

/** On a socket's timeout (`ms` without a write, or a read Node sees): reset when bytes are still owed to it; one with nothing owed is another deadline's business. */
export function cutIfStalled(socket: Socket, ms: number, count: (reason: string) => void): void {
  if (socket.destroyed || socket.writableLength === 0) return;
  count("http answer not read by the client");
  resetStream(socket, new LeafmeshError("PROXY_FAILED", `the client read none of its answer for ${ms} ms`));
}

/** For a socket no HTTP server of Node's watches (one that does destroys a socket on any timeout nobody handles: use the server's setTimeout). */
export function cutStalledReader(socket: Socket, ms: number, count: (reason: string) => void): void {
  socket.setTimeout(ms, () => cutIfStalled(socket, ms, count));
}
