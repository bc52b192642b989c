/**
 * The gateway's access log: one JSON line a request or connection, the very
 * line the actor's pino logger would write (level, time, its bindings, the
 * entry, msg), but gathered for up to 100 ms (or 64 KiB) and written to the
 * logger's destination in one write. A line a request written at once was one
 * write(2) per request, a tenth of the gateway's CPU per request in
 * bench/gateway; a write per event-loop turn still handed a write to libuv's
 * threads and woke the loop again with its completion on every turn (pino's
 * destination writes asynchronously), where ten writes a second do not. Lines
 * of the last 100 ms are lost if the process is killed (a stop flushes them);
 * Envoy's access log holds its lines for a second.
 */
import { pino, type Logger } from "pino";
import { HttpAccessEntry, jsonString } from "./access-entry.ts";

export interface AccessLog {
  write(entry: object, message: string): void;
  /** Writes what is gathered now. */
  flush(): void;
}

/** JSON.stringify of an entry without its braces ("" for an empty one). */
function stringifyFields(entry: object): string {
  const json = JSON.stringify(entry);
  return json.length > 2 ? json.slice(1, -1) : "";
}

/** @default 65_536 — a turn that gathers more is written at once: a burst holds little memory. */
const maxPendingBytes = 65_536;

interface PinoInternals {
  [key: symbol]: unknown;
}

export function batchedAccessLog(log: Logger, options: { /** @default 100 — lines wait at most this long for the write that carries them. */ flushAfterMs?: number } = {}): AccessLog {
  const flushAfterMs = options.flushAfterMs ?? 100;
  const internals = log as unknown as PinoInternals;
  const stream = internals[pino.symbols.streamSym] as { write(text: string): unknown } | undefined;
  const time = internals[pino.symbols.timeSym] as (() => string) | undefined;
  const bindings = internals[pino.symbols.chindingsSym] as string | undefined;
  // Not a pino logger of the usual make (or one with a custom serializer chain): line by line through it.
  if (typeof stream?.write !== "function" || typeof time !== "function" || typeof bindings !== "string") {
    return { write: (entry, message) => log.info(entry, message), flush: () => undefined };
  }
  const level = log.levels.values.info;
  // One time string per millisecond: under load a turn logs many requests within one.
  let lastMs = -1;
  let lastTime = "";
  let pending = "";
  // The message is the same for every line of a kind ("request", "connection"): its JSON made once.
  let lastMessage = "";
  let lastMessageJson = '""';
  const messageJson = (message: string) => {
    lastMessage = message;
    return (lastMessageJson = jsonString(message));
  };
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (pending === "") return;
    const text = pending;
    pending = "";
    stream.write(text);
  };
  return {
    write(entry, message) {
      if (!log.isLevelEnabled("info")) return;
      const fields = entry instanceof HttpAccessEntry ? entry.jsonFields() : stringifyFields(entry);
      const now = Date.now();
      if (now !== lastMs) {
        lastMs = now;
        lastTime = time();
      }
      pending += `{"level":${level}${lastTime}${bindings}${fields === "" ? "" : `,${fields}`},"msg":${message === lastMessage ? lastMessageJson : messageJson(message)}}\n`;
      if (pending.length >= maxPendingBytes) flush();
      else if (!scheduled) {
        scheduled = true;
        setTimeout(flush, flushAfterMs);
      }
    },
    flush,
  };
}
