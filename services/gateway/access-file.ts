/**
 * Where the gateway's access log goes (`leafmesh agent --gateway-access-log`): the agent's own log (stderr, the
 * default), nowhere, or a file of its own. A busy gateway writes thousands of lines a second; in the agent's log
 * they crowd out its warnings, and journald's rate limit (10,000 messages in 30 s by default) then drops the
 * agent's lines with them. Envoy, haproxy and nginx each let an access log go to a file or be turned off.
 *
 * A file is opened for appending (a logrotate `copytruncate` leaves it working) and followed by name: when the
 * name stops pointing at the open file (logrotate's default: rename, then a new file), the next lines go to a new
 * file at the name, within `followMs`. A file that cannot be written at start is a configuration error; a write
 * that fails later (a full disk) is said in the agent's log, once a minute at most, and the gateway goes on.
 *
 * ```ts
 * parseAccessLogTarget("off");                   // { kind: "off" }
 * parseAccessLogTarget("/var/log/gw.log");       // { kind: "file", path: "/var/log/gw.log" }
 * const sink = openAccessLog(target, log);       // sink.log: a pino logger whose lines are the access log's
 * ```
 */
import { closeSync, fstatSync, openSync, statSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { pino, type Logger } from "pino";
import { LeafmeshError } from "../../lib/errors.ts";
import { createLogger } from "../../lib/log.ts";

export type AccessLogTarget = { kind: "stderr" } | { kind: "off" } | { kind: "file"; path: string };

/** @default 5_000 — how often a file's name is checked against the open file (rotation). */
const followMs = 5_000;
/** @default 60_000 — a failing file is said in the agent's log at most this often. */
const failureReportMs = 60_000;

export function parseAccessLogTarget(text: string): AccessLogTarget {
  const value = text.trim();
  if (value === "" || value === "stderr") return { kind: "stderr" };
  if (value === "off") return { kind: "off" };
  return { kind: "file", path: isAbsolute(value) ? value : resolve(value) };
}

/** Throws CONFIG_INVALID, with the reason, when `path` cannot be opened for appending (it is made when missing). */
export function checkAccessLogFile(path: string): void {
  try {
    closeSync(openSync(path, "a"));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "";
    const why = code === "ENOENT" ? "its directory does not exist" : code === "EACCES" || code === "EPERM" ? "permission denied" : code === "EISDIR" ? "it is a directory" : (error as Error).message;
    throw new LeafmeshError("CONFIG_INVALID", `--gateway-access-log: cannot append to ${path}: ${why}`);
  }
}

export interface AccessLogSink {
  /** The logger the access log's lines go through; undefined: no access log. */
  log: Logger | undefined;
  /** Writes what is held and closes a file of its own. */
  close(): void;
}

/**
 * The access log's logger for a target: the actor's own (stderr), none (off), or one of the same bindings on a file.
 * Throws CONFIG_INVALID when the file cannot be opened for appending.
 */
export function openAccessLog(target: AccessLogTarget, log: Logger, options: { followMs?: number } = {}): AccessLogSink {
  if (target.kind === "stderr") return { log: log.child({ log: "access" }), close: () => undefined };
  if (target.kind === "off") return { log: undefined, close: () => undefined };
  const { path } = target;
  checkAccessLogFile(path);
  // SonicBoom's fd (-1 until its file is open) is not in its type.
  const destination = pino.destination({ dest: path, append: true, sync: false, mkdir: false, minLength: 0 }) as ReturnType<typeof pino.destination> & { fd: number };
  let lastReport = -Infinity;
  let lastMoved = -Infinity;
  destination.on("error", (error: Error) => {
    if (performance.now() - lastReport < failureReportMs) return;
    lastReport = performance.now();
    log.warn({ path, err: error.message }, "the gateway's access log file cannot be written; its lines are lost until it can");
  });
  // The same line as in the agent's log (lib/log.ts's logger, which takes a SonicBoom as pino does though its type
  // says a Writable): the logger's bindings without its pid (the new logger's base gives it).
  const { pid: _pid, ...bindings } = log.bindings();
  const fileLog = createLogger({ destination: destination as unknown as NodeJS.WritableStream, level: "info" }).child({ ...bindings, log: "access" });
  const follow = setInterval(() => {
    if (destination.fd < 0) return;
    let moved: boolean;
    try {
      moved = statSync(path).ino !== fstatSync(destination.fd).ino;
    } catch {
      moved = true; // renamed away and not made again yet: a new file at the name
    }
    if (!moved) return;
    // Said once a minute at most: a name that cannot be made again (its directory gone) is tried at each check.
    if (performance.now() - lastMoved >= failureReportMs) log.info({ path }, "the gateway's access log file was moved (rotated): writing to a new one at its name");
    lastMoved = performance.now();
    destination.reopen();
  }, options.followMs ?? followMs);
  follow.unref();
  return {
    log: fileLog,
    close() {
      clearInterval(follow);
      try {
        destination.flushSync();
      } catch {
        // Nothing more to do with a file that cannot be written: its failure was said.
      }
      destination.end();
    },
  };
}
