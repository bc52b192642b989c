/**
 * Peers that misbehave on purpose, for the fault suite (test/peer-faults.test.ts):
 *
 * - TCP targets that echo, stream a payload, reset after N bytes, or say nothing,
 *   each recording how every connection to it ended (a FIN, or an RST);
 * - a listener that stops accepting for as long as asked: its accept queue is
 *   full, so the kernel drops new SYNs (what a blackholed address does to a dialler),
 *   and a dial made meanwhile completes late, on a SYN retransmit, once it accepts;
 * - a DNS upstream that truncates every UDP answer (so the agent's forwarder asks
 *   again over TCP) and then misbehaves on TCP as the question's name says;
 * - SOCKS5 client bytes.
 *
 * ```ts
 * const echo = await startTarget("echo");
 * const late = await startStallingListener();
 * await late.stall(1_500);          // SYNs dropped for 1.5 s, then accepted
 * echo.endings;                     // [{ bytes: 1024, how: "end" }, { bytes: 0, how: "ECONNRESET" }]
 * ```
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import dnsPacket from "dns-packet";
import { nodeBinary } from "./processes.ts";

/** How one connection ended, as its reader saw it: a FIN ("end") or an error code (ECONNRESET: an RST). */
export interface Ending {
  bytes: number;
  how: string;
}

/** Resolves with how `socket`'s far end finished it, counting the bytes read. */
export function watchEnding(socket: Socket): Promise<Ending> {
  let bytes = 0;
  socket.on("data", (chunk: Buffer) => (bytes += chunk.length));
  socket.resume(); // a reset is seen only by a socket that reads
  return new Promise((resolve) => {
    socket.once("end", () => resolve({ bytes, how: "end" }));
    socket.once("error", (error: NodeJS.ErrnoException) => resolve({ bytes, how: error.code ?? error.message }));
    // Destroyed on our side (no end, no error from the far side): said as such.
    socket.once("close", () => resolve({ bytes, how: "closed" }));
  });
}

export type TargetKind =
  /** Echoes, and ends after the client ended. */
  | "echo"
  /** Sends `bytes` (default 32 MiB), honouring backpressure, then ends. */
  | "source"
  /** Once the client sent something: sends `bytes` (default 256 KiB), then resets the connection (RST). */
  | "reset"
  /** Reads and drops, never writes; ends after the client ended. */
  | "silent";

export interface FaultTarget {
  readonly port: number;
  /** How each connection ended, in the order they ended. */
  readonly endings: Ending[];
  /** Connections open now. */
  readonly open: number;
  /** Resolves with how the next connection to end ended. */
  nextEnding(): Promise<Ending>;
  close(): Promise<void>;
}

export async function startTarget(kind: TargetKind, options: { bytes?: number } = {}): Promise<FaultTarget> {
  const endings: Ending[] = [];
  const waiters: ((ending: Ending) => void)[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    void watchEnding(socket).then((ending) => {
      endings.push(ending);
      waiters.shift()?.(ending);
    });
    if (kind === "echo") {
      socket.on("data", (chunk: Buffer) => socket.write(chunk));
      socket.once("end", () => socket.end());
    } else if (kind === "silent") {
      socket.resume();
      socket.once("end", () => socket.end());
    } else if (kind === "reset") {
      // Not at accept: a proxy in between would see a refused connect, not a reset mid-transfer.
      socket.once("data", () => socket.write(randomBytes(options.bytes ?? 256 * 1024), () => socket.resetAndDestroy()));
    } else {
      socket.resume();
      let left = options.bytes ?? 32 * 1024 * 1024;
      const chunk = randomBytes(64 * 1024);
      const pump = () => {
        while (left > 0 && !socket.destroyed) {
          const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
          left -= piece.length;
          if (!socket.write(piece)) return void socket.once("drain", pump);
        }
        if (!socket.destroyed) socket.end();
      };
      pump();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    endings,
    get open() {
      return sockets.size;
    },
    nextEnding: () => new Promise((resolve) => waiters.push(resolve)),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * The child behind startStallingListener: an echo server with an accept queue of
 * one, whose event loop blocks (Atomics.wait) for the milliseconds it reads on stdin.
 */
const stallingChild = `
import { createServer } from "node:net";
const server = createServer({ allowHalfOpen: true }, (socket) => {
  socket.on("error", () => undefined);
  socket.on("data", (chunk) => socket.write(chunk));
  socket.once("end", () => socket.end());
});
server.listen({ port: 0, host: "127.0.0.1", backlog: 1 }, () => process.stdout.write(server.address().port + "\\n"));
process.stdin.on("data", (data) => {
  process.stdout.write("stalling\\n");
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(String(data).trim()));
});
`;

export interface StallingListener {
  readonly port: number;
  /**
   * Stops accepting for `ms` (then accepts everything that waited): resolves once
   * the accept queue is full, i.e. once a new SYN to `port` is dropped.
   */
  stall(ms: number): Promise<void>;
  close(): Promise<void>;
}

export async function startStallingListener(): Promise<StallingListener> {
  const child: ChildProcess = spawn(nodeBinary, ["--input-type=module", "-e", stallingChild], { stdio: ["pipe", "pipe", "inherit"] });
  const lines: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  let partial = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    partial += chunk.toString();
    for (let index = partial.indexOf("\n"); index >= 0; index = partial.indexOf("\n")) {
      const line = partial.slice(0, index);
      partial = partial.slice(index + 1);
      const waiter = waiting.shift();
      if (waiter) waiter(line);
      else lines.push(line);
    }
  });
  const nextLine = () => (lines.length > 0 ? Promise.resolve(lines.shift()!) : new Promise<string>((resolve) => waiting.push(resolve)));
  const port = Number(await nextLine());
  const fillers = new Set<Socket>();
  return {
    port,
    async stall(ms) {
      child.stdin!.write(`${ms}\n`);
      await nextLine();
      // A queue of one holds two handshaken connections (Linux: backlog + 1); past that, SYNs are dropped.
      for (let index = 0; index < 2; index++) {
        const filler = connect({ host: "127.0.0.1", port });
        filler.on("error", () => undefined);
        fillers.add(filler);
        filler.once("close", () => fillers.delete(filler));
        await new Promise((resolve) => filler.once("connect", resolve));
      }
    },
    async close() {
      for (const filler of fillers) filler.destroy();
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
}

export interface UdpEcho {
  readonly port: number;
  close(): Promise<void>;
}

export async function startUdpEcho(): Promise<UdpEcho> {
  const socket: UdpSocket = createSocket("udp4");
  socket.on("message", (message, remote) => socket.send(message, remote.port, remote.address));
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return { port: socket.address().port, close: () => new Promise<void>((resolve) => socket.close(() => resolve())) };
}

/** What the truncating upstream does over TCP, by the first label of the question. */
export const upstreamTcpFaults = ["half-length", "length-only", "hang-up", "reset", "garbage", "stall"] as const;

export interface TruncatingUpstream {
  readonly port: number;
  /** TCP connections the agent's forwarder opened, and how each ended. */
  readonly tcpEndings: Ending[];
  close(): Promise<void>;
}

/**
 * A DNS upstream on one port: over UDP it answers every question with TC set and no
 * records, so the forwarder asks again over TCP; over TCP it misbehaves as the
 * question's first label says (`reset.fault.test`: an RST after the query).
 */
export async function startTruncatingUpstream(): Promise<TruncatingUpstream> {
  const tcpEndings: Ending[] = [];
  const sockets = new Set<Socket>();
  const answerTruncated = (udp: UdpSocket) =>
    udp.on("message", (message, remote) => {
      try {
        const query = dnsPacket.decode(message);
        udp.send(dnsPacket.encode({ id: query.id, type: "response", flags: dnsPacket.TRUNCATED_RESPONSE, questions: query.questions }), remote.port, remote.address);
      } catch {
        // not a query: dropped
      }
    });
  const tcp = createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    void watchEnding(socket).then((ending) => tcpEndings.push(ending));
    let buffered = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length < 2 || buffered.length < 2 + buffered.readUInt16BE(0)) return;
      const name = dnsPacket.decode(buffered.subarray(2)).questions?.[0]?.name ?? "";
      const fault = name.split(".")[0];
      if (fault === "half-length") socket.write(Buffer.of(0x01));
      else if (fault === "length-only") socket.write(Buffer.of(0x01, 0x00));
      else if (fault === "hang-up") socket.end();
      else if (fault === "reset") socket.resetAndDestroy();
      else if (fault === "garbage") socket.write(randomBytes(256 * 1024));
      // "stall": nothing
    });
  });
  // One port number for both, and either protocol may find it taken by another test's socket. It had UDP take a
  // free port and TCP listen on the same number: once in a full run that number was in use over TCP, the error
  // went uncaught and the file's set-up hung for 90 s. TCP now takes a free port, UDP binds the same number, and
  // a refused bind starts over with a new TCP port (a few times), or fails with the reason.
  for (let attempt = 1; ; attempt++) {
    await new Promise<void>((resolve, reject) => {
      tcp.once("error", reject);
      tcp.listen(0, "127.0.0.1", () => {
        tcp.off("error", reject);
        resolve();
      });
    });
    const port = (tcp.address() as AddressInfo).port;
    const udp = createSocket("udp4");
    const bound = await new Promise<Error | undefined>((resolve) => {
      udp.once("error", resolve);
      udp.bind(port, "127.0.0.1", () => {
        udp.off("error", resolve);
        resolve(undefined);
      });
    });
    if (bound) {
      udp.close();
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      if (attempt >= 20) throw new Error(`no port free for both TCP and UDP after 20 tries: ${bound.message}`);
      continue;
    }
    answerTruncated(udp);
    return {
      port,
      tcpEndings,
      close: async () => {
        for (const socket of sockets) socket.destroy();
        await Promise.all([new Promise<void>((resolve) => tcp.close(() => resolve())), new Promise<void>((resolve) => udp.close(() => resolve()))]);
      },
    };
  }
}

/** SOCKS5: "no authentication" offered. */
export const socksGreeting = Buffer.of(0x05, 0x01, 0x00);

/** SOCKS5 CONNECT to a host name (or dotted IPv4 given as a name) and port. */
export function socksRequest(host: string, port: number): Buffer {
  const name = Buffer.from(host);
  return Buffer.concat([Buffer.of(0x05, 0x01, 0x00, 0x03, name.length), name, Buffer.of(port >> 8, port & 0xff)]);
}
