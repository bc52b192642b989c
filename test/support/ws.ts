/**
 * The `ws` WebSocket library, typed for the tests that use it as a real server and client: it is
 * @kubernetes/client-node's dependency, so it is installed wherever leafmesh is, without types of its own here.
 *
 * ```ts
 * const server = new ws.WebSocketServer({ noServer: true });
 * const client = new ws.WebSocket("ws://127.0.0.1:8080/", { headers: { host: "live.example.com" } });
 * ```
 */
import { createRequire } from "node:module";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";

/** One side of a session (server or client). */
export interface WsSocket {
  on(event: "message", listener: (data: Buffer) => void): void;
  on(event: "close", listener: (code: number) => void): void;
  on(event: "error" | "open", listener: (arg?: unknown) => void): void;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** The TCP socket under it (to reset it, as a process that dies would). */
  _socket: Socket;
}

export interface WsModule {
  WebSocketServer: new (options: { noServer: true }) => { handleUpgrade(request: unknown, socket: Duplex, head: Buffer, done: (session: WsSocket) => void): void; close(): void };
  WebSocket: new (url: string, options: { ca?: string; servername?: string; headers?: Record<string, string> }) => WsSocket;
}

export const ws = createRequire(import.meta.url)("ws") as WsModule;
