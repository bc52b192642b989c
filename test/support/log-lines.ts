/** A real pino logger whose lines a test reads back, parsed (pino writes them asynchronously: await a turn before reading the last). */
import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../lib/log.ts";

export function capturedLog(level = "info"): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: createLogger({ destination, level }), lines };
}
