/**
 * Transfers whose bytes are hashed at both ends, run inside lab namespaces (a test process
 * has no route into the lab). Run as a script:
 *
 *   node test/support/hashed-transfer.ts targets
 *     7001: reads a byte count (one line), sends that many random bytes, ends; prints
 *           `{"sent":N,"sha256":"..."}` per connection on stdout
 *     7002: reads everything, answers `<sha256> <bytes>` and ends
 *   node test/support/hashed-transfer.ts client SOCKS_PORT NODE download|upload BYTES TIMEOUT_MS
 *     through the SOCKS5 proxy on 127.0.0.1:SOCKS_PORT to NODE's 7001 or 7002; prints one
 *     JSON line: how it ended ("end", "error" with the code, "refused", "timeout"), the
 *     bytes and hashes on this side
 *
 * From a test: `hashedTransfer(namespace, { socksPort, node, mode, bytes })` runs the client.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import { connect, createServer, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { inNamespace, runCommand } from "../../lab/netns.ts";

export const sourcePort = 7001;
export const sinkPort = 7002;

export interface TransferResult {
  result: "end" | "error" | "refused" | "timeout";
  code?: string;
  bytes?: number;
  sha256?: string;
  /** upload: the sink's answer, `<sha256> <bytes>`. */
  reply?: string;
  ms: number;
}

const script = fileURLToPath(import.meta.url);

/** Runs the client in a namespace; resolves with what it printed. */
export async function hashedTransfer(namespace: string, options: { nodeBinary: string; socksPort: number; node: string; mode: "download" | "upload"; bytes: number; timeoutMs: number }): Promise<TransferResult> {
  const argv = [options.nodeBinary, script, "client", String(options.socksPort), options.node, options.mode, String(options.bytes), String(options.timeoutMs)];
  const run = await runCommand(inNamespace(namespace, argv), { timeoutMs: options.timeoutMs + 15_000 });
  const line = run.stdout.trim().split("\n").at(-1) ?? "";
  if (!line.startsWith("{")) throw new Error(`hashed transfer client printed no result (exit ${run.code}): ${run.stderr.slice(-1000)}`);
  return JSON.parse(line) as TransferResult;
}

export interface HashedTargets {
  process: ChildProcess;
  /** Resolves once the targets listen. */
  ready: Promise<void>;
  /** What the source (7001) sent, one entry a connection, in order. */
  sent: { sent: number; sha256: string }[];
}

/** Starts the targets (7001, 7002) in a namespace; kill `process` when done. */
export function startHashedTargets(namespace: string, nodeBinary: string): HashedTargets {
  const process = spawn("ip", ["netns", "exec", namespace, nodeBinary, script, "targets"], { stdio: ["ignore", "pipe", "inherit"] });
  const sent: HashedTargets["sent"] = [];
  const ready = new Promise<void>((resolve) => {
    createInterface({ input: process.stdout! }).on("line", (line) => {
      if (line === "ready") resolve();
      else if (line.startsWith("{")) sent.push(JSON.parse(line) as { sent: number; sha256: string });
    });
  });
  return { process, ready, sent };
}

function serveTargets(): void {
  createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => undefined);
    socket.once("data", (line) => {
      let left = Number(String(line).trim());
      const sent = left;
      const hash = createHash("sha256");
      const pump = () => {
        while (left > 0 && !socket.destroyed) {
          const chunk = randomBytes(Math.min(65_536, left));
          left -= chunk.length;
          hash.update(chunk);
          if (!socket.write(chunk)) return void socket.once("drain", pump);
        }
        if (socket.destroyed) return;
        socket.end();
        process.stdout.write(`${JSON.stringify({ sent, sha256: hash.digest("hex") })}\n`);
      };
      pump();
    });
  }).listen(sourcePort, "0.0.0.0");
  createServer({ allowHalfOpen: true }, (socket) => {
    const hash = createHash("sha256");
    let bytes = 0;
    socket.on("error", () => undefined);
    socket.on("data", (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    socket.once("end", () => socket.end(`${hash.digest("hex")} ${bytes}\n`));
  }).listen(sinkPort, "0.0.0.0", () => process.stdout.write("ready\n"));
}

function runClient([socksPort, node, mode, bytesText, timeoutText]: string[]): void {
  const bytes = Number(bytesText);
  const started = performance.now();
  const done = (result: Omit<TransferResult, "ms">) => {
    process.stdout.write(`${JSON.stringify({ ...result, ms: Math.round(performance.now() - started) })}\n`);
    process.exit(0);
  };
  setTimeout(() => done({ result: "timeout" }), Number(timeoutText)).unref();
  const socket: Socket = connect(Number(socksPort), "127.0.0.1");
  socket.on("error", (error: NodeJS.ErrnoException) => done({ result: "error", code: error.code ?? error.message }));
  const port = mode === "download" ? sourcePort : sinkPort;
  socket.once("connect", () => {
    socket.write(Buffer.of(5, 1, 0));
    socket.once("data", () => {
      const name = Buffer.from(node);
      socket.write(Buffer.concat([Buffer.of(5, 1, 0, 3, name.length), name, Buffer.of(port >> 8, port & 255)]));
      socket.once("data", (reply: Buffer) => {
        if (reply[1] !== 0) return done({ result: "refused", code: `SOCKS reply ${reply[1]}` });
        const hash = createHash("sha256");
        let count = 0;
        if (mode === "download") {
          socket.on("data", (chunk: Buffer) => {
            hash.update(chunk);
            count += chunk.length;
          });
          socket.once("end", () => done({ result: "end", bytes: count, sha256: hash.digest("hex") }));
          socket.write(`${bytes}\n`);
          return;
        }
        const answer: Buffer[] = [];
        socket.on("data", (chunk: Buffer) => answer.push(chunk));
        socket.once("end", () => done({ result: "end", bytes, sha256: hash.digest("hex"), reply: Buffer.concat(answer).toString().trim() }));
        let left = bytes;
        const pump = () => {
          while (left > 0) {
            const chunk = randomBytes(Math.min(65_536, left));
            left -= chunk.length;
            hash.update(chunk);
            if (!socket.write(chunk)) return void socket.once("drain", pump);
          }
          socket.end();
        };
        pump();
      });
    });
  });
}

if (process.argv[1] === script) {
  if (process.argv[2] === "targets") serveTargets();
  else if (process.argv[2] === "client") runClient(process.argv.slice(3));
  else throw new Error("usage: hashed-transfer.ts targets | client SOCKS_PORT NODE download|upload BYTES TIMEOUT_MS");
}
