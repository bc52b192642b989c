/**
 * The nats-server binary and its configuration file, before a server is spawned (nats/supervisor.ts): whether the
 * binary runs, whether it takes the configuration (`-t`), and the file written readable by its owner only.
 *
 * ```ts
 * checkNatsServerBinary();                        // or throws NATS_SERVER_MISSING, saying how to install it
 * writeConfig("/var/lib/leafmesh/nats-server.conf", text);
 * ```
 */
import { execFile, spawnSync } from "node:child_process";
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

/** `nats-server -t -c PATH`: `missing` when the binary cannot be run at all, else its exit status and output. */
export function testConfiguration(binary: string, path: string): Promise<{ missing?: string; status: number | null; output: string }> {
  return new Promise((resolve) => {
    execFile(binary, ["-t", "-c", path], { encoding: "utf8", timeout: 30_000 }, (error, stdout, stderr) => {
      const code = (error as NodeJS.ErrnoException | null)?.code;
      // A spawn failure carries an errno string (ENOENT, EACCES); an exit status is a number.
      if (typeof code === "string") resolve({ missing: error!.message, status: null, output: "" });
      else if (error?.killed) resolve({ status: null, output: `'${binary} -t' did not finish within 30 s` });
      else resolve({ status: error ? (typeof code === "number" ? code : null) : 0, output: `${stderr}${stdout}`.trim() });
    });
  });
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
