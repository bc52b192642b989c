/** A real pino logger whose lines a test reads back, parsed (pino writes them asynchronously: await a turn before reading the last). */
import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../lib/log.ts";

export function capturedLog(level = "info", onLine?: (line: Record<string, unknown>) => void): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const text of String(chunk).split("\n").filter(Boolean)) {
        const line = JSON.parse(text) as Record<string, unknown>;
        lines.push(line);
        // As the line is written: a test acts at that moment of what it logs (a Ctrl-C as an actor starts).
        onLine?.(line);
      }
      done();
    },
  });
  return { log: createLogger({ destination, level }), lines };
}

/**
 * The names a JSON text repeats within one object, as "path.name" (the top level's as "name"): JSON.parse keeps the
 * last and says nothing, jq too, where Elasticsearch refuses the whole line (its parser detects duplicates). Throws on
 * text that is not JSON.
 */
export function repeatedNames(text: string): string[] {
  JSON.parse(text);
  const repeated: string[] = [];
  // Each open object: its path and the names seen; an open array: its path.
  const open: { path: string; names?: Set<string> }[] = [];
  let lastName = "";
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      const value = JSON.parse(text.slice(i, end + 1)) as string;
      let next = end + 1;
      while (" \t\r\n".includes(text[next])) next++;
      const names = open.at(-1)?.names;
      if (text[next] === ":" && names) {
        if (names.has(value)) repeated.push(open.at(-1)!.path ? `${open.at(-1)!.path}.${value}` : value);
        names.add(value);
        lastName = value;
      }
      i = end;
    } else if (char === "{" || char === "[") {
      const parent = open.at(-1);
      const path = parent === undefined ? "" : parent.names ? (parent.path ? `${parent.path}.${lastName}` : lastName) : `${parent.path}[]`;
      open.push(char === "{" ? { path, names: new Set() } : { path });
    } else if (char === "}" || char === "]") open.pop();
  }
  return repeated;
}

/** When a leafmesh process said it was starting again in place with new keys (its log's time), if it did. */
export function restartedInPlaceAt(process: { output(): string }): number | undefined {
  const line = process.output().split("\n").find((text) => text.includes("keys replaced on disk: stopping"));
  return line ? Date.parse((JSON.parse(line) as { time: string }).time) : undefined;
}

/**
 * Servers that started again in place with new keys, in the order they did: when each said it was stopping for them
 * (restartedInPlaceAt), and when it was ready again after that (its first `readyMessage` line since), if it was.
 */
export function restartsInOrder<T extends { name: string; output(): string }>(processes: T[], readyMessage: string): { name: string; restartedAt: number; readyAgainAt: number | undefined }[] {
  return processes
    .map((process) => {
      const restartedAt = restartedInPlaceAt(process);
      if (restartedAt === undefined) throw new Error(`${process.name} did not start again in place`);
      const readyAgainAt = process
        .output()
        .split("\n")
        .filter((text) => text.includes(`"msg":"${readyMessage}"`))
        .map((text) => Date.parse((JSON.parse(text) as { time: string }).time))
        .find((time) => time > restartedAt);
      return { name: process.name, restartedAt, readyAgainAt };
    })
    .sort((a, b) => a.restartedAt - b.restartedAt);
}
