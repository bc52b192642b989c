/**
 * Downloads through a proxy, for the capacity test and bench: a backend process
 * that sends a fixed number of bytes to every connection that asks, a download
 * that tells a whole one from one refused at the door (an RST before any byte)
 * and one cut after bytes flowed, and the resident memory of a process.
 *
 * ```ts
 * const backend = await startDownloadBackend(port, 1024 * 1024);
 * const outcome = await download(proxyPort, 1024 * 1024);   // "whole" | "refused at the door" | ...
 * backend.kill();
 * ```
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { nodeBinary } from "./processes.ts";
import { toAddress, type ListenTarget } from "./ports.ts";

export type DownloadOutcome = "whole" | "refused at the door" | "cut after bytes" | "short, clean end" | "timed out";

/** One download: connect, ask, read to the end; a download not done within `timeoutMs` is "timed out" (a hung client). */
export function download(target: ListenTarget, bytes: number, timeoutMs = 180_000): Promise<DownloadOutcome> {
  return new Promise((resolve) => {
    let received = 0;
    let settled = false;
    const socket = connect(toAddress(target));
    const done = (outcome: DownloadOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => done("timed out"), timeoutMs);
    socket.on("connect", () => socket.write("GET\n"));
    socket.on("data", (chunk: Buffer) => (received += chunk.byteLength));
    socket.on("end", () => done(received === bytes ? "whole" : received === 0 ? "refused at the door" : "short, clean end"));
    socket.on("error", () => done(received === 0 ? "refused at the door" : "cut after bytes"));
  });
}

/**
 * The backend, a process of its own (the load generator must not share its event loop); resolves once it listens.
 * `thinkMs`: it answers that long after the request (a slow backend: every connection stays open at least that long).
 */
export async function startDownloadBackend(port: number, bytes: number, thinkMs = 0): Promise<ChildProcess> {
  const source = `
    const payload = Buffer.alloc(${bytes}, 7);
    require("node:net").createServer((socket) => {
      socket.on("error", () => {});
      socket.once("data", () => setTimeout(() => socket.end(payload), ${thinkMs}));
    }).listen(${port}, "127.0.0.1", () => console.log("ready"));`;
  const child = spawn(nodeBinary, ["-e", source], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise((resolve) => child.stdout!.once("data", resolve));
  return child;
}

/** Resident set of a process in MiB (/proc). */
export function rssMiB(pid: number | undefined): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}
