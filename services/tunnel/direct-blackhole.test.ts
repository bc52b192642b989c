/**
 * A direct TLS path that goes silent mid-transfer (a blackhole: the far node lost
 * power, a NAT mapping dropped, a link that drops every packet, all without a FIN or
 * an RST) ends the streams on it in an error at both ends within seconds, as the
 * relay's idle timeout (relay-channel.ts) and libp2p's pings (host.ts) do on their
 * paths, and a new stream works once the link is back.
 *
 * With keys (the default), a stream on a direct path runs on a TCP connection of its
 * own (tls-streams.ts) that nothing watched: a receiver with nothing to send never
 * notices a dead peer, so the client's download hung (probed: a 50 s blackhole, no
 * error; for good it hangs for ever) and the upload's target on the far node was
 * held as long. TCP keepalive on these connections (tcp-liveness.ts) is what notices.
 *
 * A sender with bytes in flight is not helped by keepalive (the kernel retransmits for ~15
 * minutes, and Node sets no TCP_USER_TIMEOUT): when the whole path is blackholed (edge-c's
 * libp2p connections too, as when the far node loses its link), the far agent stops answering the
 * pings of peer-liveness.ts and the sender's streams are reset within its bound.
 *
 * Real agents with the mesh's keys and a hub on loopback; the blackhole is iptables
 * DROP, both ways, on edge-c's TLS tunnel port (and both agents' libp2p ports in the second case; run it under the lab's lock:
 * `flock /tmp/leafmesh-lab.lock npx vitest run services/tunnel/direct-blackhole.test.ts`).
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import type { Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initKeys } from "../../trust/key-store.ts";
import { issueNode } from "../../trust/node-credentials.ts";
import { startTarget, watchEnding, type Ending, type FaultTarget } from "../../test/support/fault-targets.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess } from "../../test/support/processes.ts";
import { echoesThroughSocks, readAtLeast, socksConnect } from "../../test/support/socks-client.ts";

let source: FaultTarget;
let drain: FaultTarget;
let echo: FaultTarget;
let edgeA: AgentProcess;
let socksPort: number;
let tlsPort: number;
/** Both agents' libp2p ports: a connection between them may have been dialled either way. */
let libp2pPorts: number[];

const blackhole = (op: "-I" | "-D", ports = [tlsPort]) => {
  for (const port of ports) for (const side of ["--dport", "--sport"]) execFileSync("iptables", [op, "INPUT", "-p", "tcp", side, String(port), "-j", "DROP"]);
};
let holed = false;

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error("this test needs root (iptables on loopback); CI runs as root");
  [source, drain, echo] = await Promise.all([startTarget("source", { bytes: 64 * 1024 * 1024 * 1024 }), startTarget("silent"), startTarget("echo")]);
  const keys = join(tempDir(), "keys");
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-c"]) await issueNode({ dir: keys, node });
  const hub = await startHubProcess({ name: "hub-1", keys });
  socksPort = await freePort();
  tlsPort = await freePort();
  libp2pPorts = [await freePort(), await freePort()];
  const ways = ["--tunnel-ways", "direct", "--mdns", "off"];
  [edgeA] = await Promise.all([
    startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], keys, extraArgs: [...ways, "--socks", `127.0.0.1:${socksPort}`, "--tunnel-listen", `/ip4/127.0.0.1/tcp/${libp2pPorts[0]}`] }),
    startAgentProcess({ node: "edge-c", hubs: [hub.leafUrl], keys, extraArgs: [...ways, "--tunnel-tls", `127.0.0.1:${tlsPort}`, "--tunnel-listen", `/ip4/127.0.0.1/tcp/${libp2pPorts[1]}`] }),
  ]);
  await echoesThroughSocks(socksPort, "edge-c", echo.port, 30_000, "a stream edge-a → edge-c");
}, 90_000);

afterAll(async () => {
  if (holed) blackhole("-D", [tlsPort, ...libp2pPorts]);
  await stopAllProcesses();
  await Promise.all([source, drain, echo].map((target) => target?.close()));
});

describe("a direct TLS path blackholed mid-transfer", () => {
  it("resets the client of a download and the target of an upload, and a new stream works once the link is back", { timeout: 60_000 }, async () => {
    const download: Socket = await socksConnect(socksPort, "edge-c", source.port);
    download.on("error", () => undefined);
    await readAtLeast(download, 1024 * 1024, 15_000);
    const upload: Socket = await socksConnect(socksPort, "edge-c", drain.port);
    upload.on("error", () => undefined);
    const uploadEnding = drain.nextEnding();
    const chunk = Buffer.alloc(64 * 1024, 7);
    for (let written = 0; written < 1024 * 1024; written += chunk.length) if (!upload.write(chunk)) await new Promise((resolve) => upload.once("drain", resolve));
    // Both on direct TLS connections to edge-c's TLS port: those are what the blackhole takes.
    const tunnel = (await edgeA.view()).status.actors.find((actor) => actor.name === "tunnel")?.detail as { paths?: Record<string, string> } | undefined;
    expect(tunnel?.paths?.["edge-c"]).toBe("direct");
    const established = execFileSync("ss", ["-tnH", "state", "established", `( dport = :${tlsPort} )`], { encoding: "utf8" }).trim().split("\n").filter(Boolean);
    expect(established.length, "edge-a's TLS connections to edge-c").toBeGreaterThanOrEqual(2);

    const downloadEnding = watchEnding(download);
    const writing = setInterval(() => upload.writable && upload.writableLength < 1024 * 1024 && upload.write(chunk), 5);
    blackhole("-I");
    holed = true;
    try {
      // The kernel's retransmission timeout alone would take ~15 minutes, and a receiver without data in flight never times out.
      const within = (ending: Promise<Ending>, what: string) =>
        Promise.race([ending, new Promise<Ending>((resolve) => setTimeout(() => resolve({ bytes: 0, how: `still open 40 s into the blackhole (${what})` }), 40_000))]);
      const [down, up] = await Promise.all([within(downloadEnding, "the download"), within(uploadEnding, "the upload's target")]);
      expect(down.how, "the download's client").toBe("ECONNRESET");
      expect(up.how, "the upload's target on edge-c").toBe("ECONNRESET");
    } finally {
      clearInterval(writing);
      upload.destroy();
      blackhole("-D");
      holed = false;
    }
    await echoesThroughSocks(socksPort, "edge-c", echo.port, 15_000, "a new stream edge-a → edge-c after the blackhole");
  });

  it("resets the sender of an upload when the whole path is blackholed (its far agent no longer answers pings)", { timeout: 90_000 }, async () => {
    const upload: Socket = await socksConnect(socksPort, "edge-c", drain.port);
    const uploadEnding = watchEnding(upload);
    const chunk = Buffer.alloc(64 * 1024, 9);
    for (let written = 0; written < 1024 * 1024; written += chunk.length) if (!upload.write(chunk)) await new Promise((resolve) => upload.once("drain", resolve));
    const writing = setInterval(() => upload.writable && upload.writableLength < 1024 * 1024 && upload.write(chunk), 5);
    const everything = [tlsPort, ...libp2pPorts];
    blackhole("-I", everything);
    holed = true;
    try {
      // The documented bound (peer-liveness.ts: 20 s) and time for the reset; the kernel alone would take ~15 minutes.
      const ended = await Promise.race([uploadEnding, new Promise<Ending>((resolve) => setTimeout(() => resolve({ bytes: 0, how: "still open 40 s into the blackhole" }), 40_000))]);
      expect(ended.how, "the upload's client, whose agent was sending").toBe("ECONNRESET");
      // The agent logs before it resets, but its log reaches this process through a pipe, after the reset may have.
      await eventually(() => expect(edgeA.output()).toContain("stopped answering on the direct path"), 10_000);
    } finally {
      clearInterval(writing);
      upload.destroy();
      blackhole("-D", everything);
      holed = false;
    }
    await echoesThroughSocks(socksPort, "edge-c", echo.port, 30_000, "a new stream edge-a → edge-c after the blackhole");
  });
});
