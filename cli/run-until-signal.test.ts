/** runUntilSignal: a started role runs until a stop signal, and is stopped however its run ends. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../lib/log.ts";
import { watchBundle } from "../trust/bundle-watch.ts";
import { runUntilSignal } from "./run-until-signal.ts";

const dir = mkdtempSync(join(tmpdir(), "leafmesh-run-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("runUntilSignal", () => {
  it("a keys watch that cannot begin (its CA file gone since the start read it): the role is stopped before the error is thrown", async () => {
    const files = { creds: join(dir, "node.creds"), cert: join(dir, "node.crt"), key: join(dir, "node.key"), ca: join(dir, "ca.crt"), psk: join(dir, "swarm.key") };
    const log = silentLogger();
    let stopped = 0;
    const io = { stdout: new PassThrough(), stderr: new PassThrough(), env: {}, signal: new AbortController().signal };
    const run = runUntilSignal(io, async () => void stopped++, { log, watch: (onReplaced) => watchBundle({ files, node: "edge-a", log, onReplaced }) });
    // Before: the ENOENT was thrown with the role still running (the process then ended without its stop).
    await expect(run).rejects.toThrow(/ENOENT/);
    expect(stopped).toBe(1);
  });

  it("a stop that came as the start ended (before the run began): the role is stopped, and it is said as a start interrupted, not a clean end", async () => {
    let stopped = 0;
    const io = { stdout: new PassThrough(), stderr: new PassThrough(), env: {}, signal: AbortSignal.abort() };
    // Before: resolved with 0, as after a run that was stopped.
    await expect(runUntilSignal(io, async () => void stopped++)).rejects.toMatchObject({ code: "INTERRUPTED", message: "stopped while it was starting, after its nats-server was ready: nothing is left running" });
    expect(stopped).toBe(1);
  });
});
