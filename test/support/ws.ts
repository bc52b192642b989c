/**
 * The `ws` WebSocket library, typed for the tests that use it as a real server and client: it is
 * @kubernetes/client-node's dependency, so it is installed wherever leafmesh is, without types of its own here.
 *
 * ```ts
 * const server = new ws.WebSocketServer({ noServer: true });
 * const client = new ws.WebSocket("ws://127.0.0.1:8080/", { headers: { host: "live.example.com" } });
 * ```
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
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

/** What the echo backend saw of one session; `tcp`: how its connection ended first (a FIN, or a reset's error code). */
export interface EchoSession {
  socket: WsSocket;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** The session's close code, once closed (1006: no close frame came). */
  closed?: number;
  tcp?: string;
}

/**
 * A real WebSocket backend on an HTTP server (not listening yet): its upgrades become `ws` sessions that send
 * "hello", echo each message as "echo <text>", and die (TCP reset, no close frame) on "die"; an upgrade of
 * `/ws/refused` is answered 403 with the body "no, not\n"; plain requests get "plain\n".
 */
export function echoWebSocketBackend(sessions: EchoSession[]): Server {
  const server = new ws.WebSocketServer({ noServer: true });
  const backend = createServer((_request, response) => response.end("plain\n"));
  backend.on("upgrade", (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => undefined);
    if (request.url === "/ws/refused") return void socket.end("HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 8\r\n\r\nno, not\n");
    server.handleUpgrade(request, socket, head, (session) => {
      const seen: EchoSession = { socket: session, path: request.url ?? "", headers: request.headers };
      sessions.push(seen);
      session.on("error", () => undefined);
      session.on("close", (code) => (seen.closed = code));
      session._socket.once("end", () => (seen.tcp ??= "FIN"));
      session._socket.once("error", (error: NodeJS.ErrnoException) => (seen.tcp ??= error.code));
      session.on("message", (data) => {
        const text = data.toString();
        if (text === "die") return void session._socket.resetAndDestroy();
        session.send(`echo ${text}`);
      });
      session.send("hello");
    });
  });
  return backend;
}
