/**
 * The batched access log writes the lines pino would, byte for byte, and the
 * lines of many turns of the event loop in one write to the logger's destination.
 */
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../lib/log.ts";
import { HttpAccessEntry } from "./access-entry.ts";
import { batchedAccessLog } from "./access-log.ts";

function capture(): { destination: Writable; writes: string[] } {
  const writes: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      writes.push(chunk.toString());
      callback();
    },
  });
  return { destination, writes };
}

const withoutTime = (line: string) => line.replace(/"time":"[^"]+"/, '"time":"T"');

describe("the gateway's access log", () => {
  it("writes what pino writes, the lines of many turns in one write", async () => {
    const direct = capture();
    const batched = capture();
    const entries = Array.from({ length: 50 }, (_, index) => ({ kind: "http", port: 8080, path: `/a"b\\${index}`, status: 200, route: "HTTPRoute shop/x" }));
    const pinoLog = createLogger({ destination: direct.destination }).child({ node: "edge-a", actor: "gateway" }).child({ log: "access" });
    for (const entry of entries) pinoLog.info(entry, "request");
    const access = batchedAccessLog(createLogger({ destination: batched.destination }).child({ node: "edge-a", actor: "gateway" }).child({ log: "access" }), { flushAfterMs: 50 });
    // Ten turns of the event loop, five lines each: nothing written until the 50 ms are up, then one write.
    for (let turn = 0; turn < 10; turn++) {
      for (const entry of entries.slice(turn * 5, turn * 5 + 5)) access.write(entry, "request");
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(batched.writes).toHaveLength(0);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(batched.writes).toHaveLength(1);
    const lines = batched.writes[0].split("\n").filter(Boolean);
    expect(lines.map(withoutTime)).toEqual(direct.writes.join("").split("\n").filter(Boolean).map(withoutTime).map((line) => line.replace(/"pid":\d+/, `"pid":${process.pid}`)));
  });

  it("writes an HTTP request's entry by hand as JSON.stringify and pino write it, whatever its strings hold", () => {
    const odd = ['a"b', "back\\slash", "tab\tnew\nline\u0000", "ünï €", "pair \ud83d\ude00", "lone \ud800 x", "\udc00", "", "del\u007f"];
    const entries = odd.map((text, index) => {
      const entry = new HttpAccessEntry(8080 + index, `10.0.0.${index}`, "HTTP/1.1", "GET", text, `/${text}`);
      entry.status = index % 2 ? 200 : 502;
      entry.attempts = index;
      entry.durationMs = index / 10;
      if (index > 0) entry.route = `HTTPRoute ${text}`;
      if (index > 2) entry.backend = "shop/web:80";
      if (index > 4) entry.endpoint = "10.1.0.7:8080";
      if (index % 3 === 0) entry.reason = `why ${text}`;
      return entry;
    });
    for (const entry of entries) expect(`{${entry.jsonFields()}}`).toBe(JSON.stringify(entry));
    const direct = capture();
    const batched = capture();
    const pinoLog = createLogger({ destination: direct.destination }).child({ node: "edge-a" });
    const access = batchedAccessLog(createLogger({ destination: batched.destination }).child({ node: "edge-a" }));
    // pino writes a lone surrogate as it is (U+FFFD once encoded), JSON.stringify as an escape, as this log always did.
    for (const entry of entries.filter((candidate) => !/[\ud800-\udfff]/.test(candidate.host) || /\ud83d\ude00/.test(candidate.host))) {
      pinoLog.info({ ...entry }, "request");
      access.write(entry, "request");
    }
    access.flush();
    expect(batched.writes.join("").split("\n").filter(Boolean).map(withoutTime)).toEqual(direct.writes.join("").split("\n").filter(Boolean).map(withoutTime));
  });

  it("writes nothing below the logger's level, and flushes at once when asked", () => {
    const quiet = capture();
    batchedAccessLog(createLogger({ level: "warn", destination: quiet.destination })).write({ kind: "tcp" }, "connection");
    const loud = capture();
    const access = batchedAccessLog(createLogger({ destination: loud.destination }));
    access.write({ kind: "tcp" }, "connection");
    access.flush();
    expect(quiet.writes).toEqual([]);
    expect(loud.writes).toHaveLength(1);
    expect(JSON.parse(loud.writes[0])).toMatchObject({ level: 30, kind: "tcp", msg: "connection" });
  });
});
