/**
 * The gateway's access log on a file of its own (--gateway-access-log FILE): the agent's line, appended, followed
 * through a rotation by rename and by truncation; off writes nothing; a file that cannot be written is refused with
 * the reason at start.
 */
import { mkdirSync, readFileSync, renameSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { capturedLog, repeatedNames } from "../../test/support/log-lines.ts";
import { eventually } from "../../test/support/ports.ts";
import { tempDir } from "../../test/support/processes.ts";
import { checkAccessLogFile, openAccessLog, parseAccessLogTarget } from "./access-file.ts";
import { batchedAccessLog } from "./access-log.ts";

const entry = (path: string) => ({ kind: "http", port: 8080, client: "198.18.0.9", method: "GET", host: "shop.example.com", path, status: 200 });
const linesOf = (file: string) => readFileSync(file, "utf8").split("\n").filter(Boolean);

describe("the access log's target", () => {
  it("reads stderr (the default), off and a file, made absolute", () => {
    expect(parseAccessLogTarget("stderr")).toEqual({ kind: "stderr" });
    expect(parseAccessLogTarget("")).toEqual({ kind: "stderr" });
    expect(parseAccessLogTarget("off")).toEqual({ kind: "off" });
    expect(parseAccessLogTarget("/var/log/gw.log")).toEqual({ kind: "file", path: "/var/log/gw.log" });
    expect(parseAccessLogTarget("gw.log")).toEqual({ kind: "file", path: join(process.cwd(), "gw.log") });
  });

  it("refuses a file that cannot be appended to, with the reason", () => {
    const dir = tempDir();
    expect(() => checkAccessLogFile(join(dir, "missing", "gw.log"))).toThrow(/--gateway-access-log: cannot append to .*missing\/gw.log: its directory does not exist/);
    mkdirSync(join(dir, "a-directory"));
    expect(() => checkAccessLogFile(join(dir, "a-directory"))).toThrow(/a-directory: it is a directory/);
    expect(() => checkAccessLogFile(join(dir, "fine.log"))).not.toThrow();
  });

  it("off: no logger, so no line anywhere", () => {
    const { log, lines } = capturedLog();
    expect(openAccessLog({ kind: "off" }, log.child({ node: "edge-a", actor: "gateway" })).log).toBeUndefined();
    expect(lines).toEqual([]);
  });

  it("stderr: the actor's own logger, as log access", async () => {
    const { log, lines } = capturedLog();
    const sink = openAccessLog({ kind: "stderr" }, log.child({ node: "edge-a", actor: "gateway" }));
    sink.log!.info(entry("/a"), "request");
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines).toEqual([expect.objectContaining({ node: "edge-a", actor: "gateway", log: "access", path: "/a", msg: "request" })]);
  });

  it("a file: the agent's line, appended after what the file held, and nothing in the agent's log", async () => {
    const file = join(tempDir(), "access.log");
    writeFileSync(file, "an older line\n");
    const { log, lines } = capturedLog();
    const sink = openAccessLog({ kind: "file", path: file }, log.child({ node: "edge-a", actor: "gateway" }));
    const access = batchedAccessLog(sink.log!, { flushAfterMs: 10 });
    for (let index = 0; index < 100; index++) access.write(entry(`/item/${index}`), "request");
    access.flush();
    sink.close();
    await eventually(() => linesOf(file).length === 101, 5_000, "the lines in the file");
    const written = linesOf(file);
    expect(written[0]).toBe("an older line");
    for (const line of written.slice(1)) expect(repeatedNames(line)).toEqual([]);
    expect(JSON.parse(written[1])).toEqual(expect.objectContaining({ level: 30, pid: process.pid, node: "edge-a", actor: "gateway", log: "access", path: "/item/0", msg: "request" }));
    expect(JSON.parse(written[100]).path).toBe("/item/99");
    expect(lines).toEqual([]);
  });

  it("follows a rotation by rename to a new file at the name, and one by truncation without a hole", async () => {
    const dir = tempDir();
    const file = join(dir, "access.log");
    const { log, lines } = capturedLog();
    const sink = openAccessLog({ kind: "file", path: file }, log.child({ node: "edge-a", actor: "gateway" }), { followMs: 50 });
    try {
      sink.log!.info(entry("/before"), "request");
      await eventually(() => linesOf(file).length === 1, 5_000, "the first line");
      // logrotate's default: the file renamed, a new one made later (or by the gateway itself).
      renameSync(file, join(dir, "access.log.1"));
      await eventually(() => lines.some((line) => line.msg === "the gateway's access log file was moved (rotated): writing to a new one at its name"), 5_000, "the rotation seen");
      sink.log!.info(entry("/after-rename"), "request");
      await eventually(() => readFileSync(file, "utf8").includes("/after-rename"), 5_000, "a line in the new file");
      expect(linesOf(join(dir, "access.log.1")).map((line) => JSON.parse(line).path)).toEqual(["/before"]);
      // copytruncate: the file emptied in place; appending writes at its new end, not at the old offset.
      truncateSync(file, 0);
      sink.log!.info(entry("/after-truncate"), "request");
      await eventually(() => readFileSync(file, "utf8").includes("/after-truncate"), 5_000, "a line after the truncation");
      expect(readFileSync(file, "utf8")).not.toContain("\0");
      expect(linesOf(file).map((line) => JSON.parse(line).path)).toEqual(["/after-truncate"]);
    } finally {
      sink.close();
    }
  });
});
