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

export function createLogger(options: LoggerOptions = {}): Logger {
  const level = process.env.LEAFMESH_LOG_LEVEL ?? options.level ?? "info";
  return pino(
    { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    (options.destination as pino.DestinationStream | undefined) ?? pino.destination({ dest: 2, minLength: 0, maxLength: logBacklogBytes }),
  );
}

/** A logger that drops everything, for tests that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
