/**
 * Runs a command-line tool to completion and collects its output: the lab's
 * `ip`/`iptables` calls, the proxier's `nft`/`iptables-restore`, the DNS
 * actor's dummy interface. A missing tool is TOOL_MISSING, a hung one is killed.
 *
 * ```ts
 * const { code, stdout } = await runCommand(["ip", "-j", "addr"]);
 * await runChecked(["ip", "link", "add", "lm0", "type", "dummy"]); // rejects with stderr on a non-zero exit
 * ```
 */
import { spawn } from "node:child_process";
import { LeafmeshError } from "./errors.ts";

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs a command to completion; resolves with its output whatever the exit code. */
export function runCommand(argv: string[], options: { input?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    // @default 30_000 — an `ip` or `nft` call takes milliseconds; 30 s only catches a hung tool.
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 30_000);
    child.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (error.code === "ENOENT") reject(new LeafmeshError("TOOL_MISSING", `${argv[0]} is not installed (command: ${argv.join(" ")})`, { cause: error }));
      else reject(error);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code: code ?? -1 });
    });
    child.stdin!.on("error", () => undefined); // a tool that exits before reading its input: the exit code tells
    child.stdin!.end(options.input ?? "");
  });
}

/** Runs a command and rejects (with its stderr in the message) on a non-zero exit. */
export async function runChecked(argv: string[], options: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  const result = await runCommand(argv, options);
  if (result.code !== 0) {
    throw new LeafmeshError("INTERNAL", `\`${argv.join(" ")}\` exited with ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
  }
  return result.stdout;
}

