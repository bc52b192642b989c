/**
 * Structured logs (pino): one root logger per process, one child per actor with
 * `node` and `actor` fields. Logs go to stderr so that stdout stays for what a
 * command prints (status tables, JSON).
 *
 * ```ts
 * const log = createLogger({ level: "info" }).child({ node: "edge-a", actor: "dns" });
 * log.info({ port: 53 }, "listening");
 * ```
 */
import { pino, type Logger } from "pino";

export type { Logger };

export interface LoggerOptions {
  /** @default "info" — LEAFMESH_LOG_LEVEL overrides it. */
  level?: string;
  /** Where lines go. @default stderr */
  destination?: NodeJS.WritableStream;
}

/**
 * @default 16 MiB — lines held for a stderr reader that does not read (a paused terminal, a stuck log shipper):
 * past it, new lines are dropped rather than kept without end. The writes go out through libuv's threads, so a
 * reader that stalls never stops the process; only what it holds is bounded.
 */
export const logBacklogBytes = 16 * 1024 * 1024;

let droppedLines = 0;

/** Log lines dropped so far in this process because stderr's reader held logBacklogBytes already (`leafmesh_log_lines_dropped_total`). */
export function droppedLogLines(): number {
  return droppedLines;
}

/** stderr, asynchronously, holding at most logBacklogBytes for its reader. */
function stderrDestination(): pino.DestinationStream {
  const destination = pino.destination({ dest: 2, minLength: 0, maxLength: logBacklogBytes });
  destination.on("drop", (data: string | Buffer) => {
    // One write may carry many lines (the gateway's access log writes a turn's lines at once).
    const text = typeof data === "string" ? data : data.toString("latin1");
    let lines = 0;
    for (let index = text.indexOf("\n"); index !== -1; index = text.indexOf("\n", index + 1)) lines++;
    droppedLines += Math.max(1, lines);
  });
  return destination;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const level = process.env.LEAFMESH_LOG_LEVEL ?? options.level ?? "info";
  return pino(
    { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    (options.destination as pino.DestinationStream | undefined) ?? stderrDestination(),
  );
}

/** A logger that drops everything, for tests that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
