/**
 * A far agent frozen (SIGSTOP) under direct TLS streams, and a slow target whose reader is paused:
 * from outside the two look alike (the far end reads nothing, and the far kernel still acknowledges
 * and answers TCP keepalive), but the first must end its streams in an error and the second must
 * not be cut (peer-liveness.ts: the far agent's process is pinged on the path's libp2p connection).
 *
 * Probed before: a download through edge-a from a target on edge-c, with edge-c's agent stopped,
 * stayed open with no error for as long as it was watched, its client waiting for ever.
 *
 * The serving end is watched too: a dialling agent that freezes no longer holds its target on the far node.
 *
 * Real agents with the mesh's keys and a hub on loopback (it stops and continues only agents it started).
 */
import { createHash } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { startTarget, watchEnding, type Ending, type FaultTarget } from "../../test/support/fault-targets.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess } from "../../test/support/processes.ts";
import { echoesThroughSocks, readAtLeast, socksConnect } from "../../test/support/socks-client.ts";
import { livenessIntervalMs, livenessMisses } from "./peer-liveness.ts";

/** How long a frozen agent's streams may live: the documented bound (peer-liveness.ts) and time for the reset to arrive. */
const boundMs = livenessIntervalMs * (livenessMisses + 1) + 10_000;

let source: FaultTarget;
let echo: FaultTarget;
let drain: FaultTarget;
let slow: Server;
const slowSockets = new Set<Socket>();
let edgeA: AgentProcess;
let edgeC: AgentProcess;
/** The far node of the last case, apart from edge-c: edge-c's freeze backs edge-a's TLS carrier towards it off for a minute (its streams then ride libp2p). */
let edgeD: AgentProcess;
let socksPort: number;
let frozen: AgentProcess | undefined;

beforeAll(async () => {
  [source, echo, drain] = await Promise.all([startTarget("source", { bytes: 64 * 1024 * 1024 * 1024 }), startTarget("echo"), startTarget("silent")]);
  // A slow target: reads nothing for longer than the liveness bound, then everything, and answers with the hash.
  slow = createServer({ allowHalfOpen: true }, (socket) => {
    slowSockets.add(socket);
    socket.on("error", () => undefined).pause();
    const hash = createHash("sha256");
    let bytes = 0;
    setTimeout(() => {
      socket.on("data", (chunk: Buffer) => (hash.update(chunk), (bytes += chunk.length)));
      socket.once("end", () => socket.end(`${hash.digest("hex")} ${bytes}`));
      socket.resume();
    }, boundMs + 5_000);
  });
  await new Promise<void>((resolve) => slow.listen(0, "127.0.0.1", resolve));
  const keys = join(tempDir(), "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-c", "edge-d"]) await issueNode({ dir: keys, node });
  const hub = await startHubProcess({ name: "hub-1", keys });
  socksPort = await freePort();
  const ways = ["--tunnel-ways", "direct", "--mdns", "off"];
  [edgeA, edgeC, edgeD] = await Promise.all([
    startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], keys, extraArgs: [...ways, "--socks", `127.0.0.1:${socksPort}`] }),
    startAgentProcess({ node: "edge-c", hubs: [hub.leafUrl], keys, extraArgs: [...ways, "--tunnel-tls", `127.0.0.1:${await freePort()}`] }),
    startAgentProcess({ node: "edge-d", hubs: [hub.leafUrl], keys, extraArgs: [...ways, "--tunnel-tls", `127.0.0.1:${await freePort()}`] }),
  ]);
  await echoesThroughSocks(socksPort, "edge-c", echo.port, 30_000, "a stream edge-a → edge-c");
}, 90_000);

afterAll(async () => {
  frozen?.child.kill("SIGCONT");
  for (const socket of slowSockets) socket.destroy();
  await new Promise((resolve) => slow?.close(resolve));
  await stopAllProcesses();
  await Promise.all([source, echo, drain].map((target) => target?.close()));
});

describe("the far agent of direct TLS streams", () => {
  it("keeps a stream whose target reads nothing for longer than the liveness bound: its agent answers", { timeout: boundMs + 60_000 }, async () => {
    const tunnel = (await edgeA.view()).status.actors.find((actor) => actor.name === "tunnel")?.detail as { paths?: Record<string, string> } | undefined;
    expect(tunnel?.paths?.["edge-c"]).toBe("direct");
    const upload = await socksConnect(socksPort, "edge-c", (slow.address() as { port: number }).port);
    const replies: Buffer[] = [];
    upload.on("data", (chunk: Buffer) => replies.push(chunk));
    const ending = watchEnding(upload);
    const hash = createHash("sha256");
    const chunk = Buffer.alloc(64 * 1024, 3);
    let written = 0;
    // Until backpressure holds the writer: every buffer on the way is full, the far reader paused.
    for (let more = true; more && written < 256 * 1024 * 1024; ) {
      more = upload.write(chunk);
      hash.update(chunk);
      written += chunk.length;
    }
    upload.end();
    const ended = await Promise.race([ending, new Promise<Ending>((resolve) => setTimeout(() => resolve({ bytes: -1, how: "no reply" }), boundMs + 30_000))]);
    expect(ended.how, "the slow target's stream").toBe("end");
    // Every byte arrived once the target read again: the stream was never cut.
    expect(Buffer.concat(replies).toString()).toBe(`${hash.digest("hex")} ${written}`);
    expect(edgeA.output()).not.toContain("stopped answering on the direct path");
    expect(edgeC.output()).not.toContain("stopped answering on the direct path");
  });

  it("ends the streams of a frozen agent in an error within the bound, and a new stream works once it runs again", { timeout: boundMs + 60_000 }, async () => {
    const download = await socksConnect(socksPort, "edge-c", source.port);
    download.on("error", () => undefined);
    await readAtLeast(download, 1024 * 1024, 15_000);
    const ending = watchEnding(download);
    edgeC.child.kill("SIGSTOP");
    frozen = edgeC;
    try {
      const result = await Promise.race([ending, new Promise<Ending>((resolve) => setTimeout(() => resolve({ bytes: 0, how: `still open ${boundMs} ms after the far agent froze` }), boundMs))]);
      expect(result.how, "the download's client").toBe("ECONNRESET");
      // Logged before the reset, but read here through a pipe that may bring it after.
      await eventually(() => expect(edgeA.output()).toContain("stopped answering on the direct path"), 10_000);
    } finally {
      edgeC.child.kill("SIGCONT");
      frozen = undefined;
    }
    await echoesThroughSocks(socksPort, "edge-c", echo.port, 30_000, "a new stream edge-a → edge-c after the agent runs again");
  });

  it("ends the serving end's target connection when the dialling agent freezes", { timeout: boundMs + 60_000 }, async () => {
    await echoesThroughSocks(socksPort, "edge-d", echo.port, 30_000, "a stream edge-a → edge-d");
    const upload = await socksConnect(socksPort, "edge-d", drain.port);
    upload.on("error", () => undefined);
    const targetEnding = drain.nextEnding();
    upload.write(Buffer.alloc(64 * 1024, 5));
    await new Promise((resolve) => setTimeout(resolve, 500));
    edgeA.child.kill("SIGSTOP");
    frozen = edgeA;
    try {
      const result = await Promise.race([targetEnding, new Promise<Ending>((resolve) => setTimeout(() => resolve({ bytes: 0, how: `still open ${boundMs} ms after the dialling agent froze` }), boundMs))]);
      expect(result.how, "the target's connection from edge-d").toBe("ECONNRESET");
      // Logged before the reset, but read here through a pipe that may bring it after.
      await eventually(() => expect(edgeD.output()).toContain("stopped answering on the direct path"), 10_000);
    } finally {
      edgeA.child.kill("SIGCONT");
      frozen = undefined;
      upload.destroy();
    }
    await echoesThroughSocks(socksPort, "edge-d", echo.port, 30_000, "a new stream edge-a → edge-d after edge-a runs again");
  });
});
