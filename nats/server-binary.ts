/**
 * The nats-server binary and its configuration file, before a server is spawned (nats/supervisor.ts): whether the
 * binary runs, whether it takes the configuration (`-t`), and the file written readable by its owner only.
 *
 * ```ts
 * checkNatsServerBinary();                        // or throws NATS_SERVER_MISSING, saying how to install it
 * writeConfig("/var/lib/leafmesh/nats-server.conf", text);
 * ```
 */
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, writeFileSync } from "node:fs";
import { LeafmeshError } from "../lib/errors.ts";
import { fileProblem } from "../lib/file-errors.ts";

/** Checks that the nats-server binary exists; the message says how to get it. */
export function checkNatsServerBinary(binary = process.env.LEAFMESH_NATS_SERVER ?? "nats-server"): string {
  const result = spawnSync(binary, ["--version"], { encoding: "utf8" });
  if (result.error || result.status !== 0) throw missingBinary(binary, result.error?.message ?? result.stderr);
  return result.stdout.trim();
}

export function missingBinary(binary: string, why: string): LeafmeshError {
  return new LeafmeshError("NATS_SERVER_MISSING", `cannot run '${binary}': ${why}. Install it (Debian: apt-get install -y nats-server, or run scripts/install.sh) or set LEAFMESH_NATS_SERVER to its path`);
}

/** @default 30_000 — `--version` and `-t` take milliseconds; 30 s only catches a hung binary (a broken wrapper script). */
const binaryRunTimeoutMs = 30_000;

/** What one run of the binary said: `missing` when it could not be run at all; `stopped` when `signal` ended it. */
export interface BinaryRun {
  missing?: string;
  status: number | null;
  output: string;
  timedOut?: boolean;
  stopped?: boolean;
}

/**
 * Runs `binary ARGS` to its end, off the event loop, in a process group of its own: a hung one (a wrapper script
 * stuck in a sleep) is killed with everything it started, after 30 s or at once when `signal` aborts (a Ctrl-C while
 * the role starts). execFile killed only the script, on its timeout alone: a Ctrl-C waited up to 30 s for it.
 */
export function runServerBinary(binary: string, args: string[], signal?: AbortSignal): Promise<BinaryRun> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve({ status: null, output: "", stopped: true });
    const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"], detached: true });
    let output = "";
    let ended: "timedOut" | "stopped" | undefined;
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const end = (why: "timedOut" | "stopped") => {
      ended ??= why;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error; // ESRCH: the group has ended by itself
      }
      // What the group started may hold the pipes open: they are not waited for.
      child.stdout.destroy();
      child.stderr.destroy();
    };
    const onAbort = () => end("stopped");
    const timer = setTimeout(() => end("timedOut"), binaryRunTimeoutMs);
    signal?.addEventListener("abort", onAbort, { once: true });
    const settle = (run: BinaryRun) => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      resolve(run);
    };
    // A spawn failure (ENOENT, EACCES): the binary cannot be run at all.
    child.once("error", (error) => settle({ missing: error.message, status: null, output: "" }));
    child.once("close", (code) => settle({ status: ended ? null : code, output: output.trim(), ...(ended ? { [ended]: true } : {}) }));
  });
}

/** `nats-server -t -c PATH`: `missing` when the binary cannot be run at all, else its exit status and output. */
export async function testConfiguration(binary: string, path: string, signal?: AbortSignal): Promise<BinaryRun> {
  const run = await runServerBinary(binary, ["-t", "-c", path], signal);
  return run.timedOut ? { ...run, output: `'${binary} -t' did not finish within ${binaryRunTimeoutMs / 1000} s` } : run;
}

/**
 * The server's configuration, readable by its owner only whatever the file was before: it holds the route and gateway
 * password (trust/route-credentials.ts), and `mode` applies only to a file being made (a data directory of an older
 * leafmesh kept its 0644 file, with the password in it from the first start on).
 */
export function writeConfig(path: string, text: string): void {
  try {
    writeFileSync(path, text, { mode: 0o600 });
    chmodSync(path, 0o600);
  } catch (error) {
    // A full disk at start (an SD card full of logs) said so, not as "unexpected error: ENOSPC" and a stack trace.
    throw new LeafmeshError("NATS_SERVER_FAILED", `cannot write the nats-server configuration ${path}: ${fileProblem(error)}`, { cause: error });
  }
}
