/**
 * A revoked node loses its LAN peers too (issue 15, item 6), with real agent
 * processes on loopback: three agents with keys, direct paths (TLS streams on),
 * the revoked node's NATS credentials cut by `keys revoke --hub`. Its peers learn
 * the revocation list through the fabric and then: cut the streams it has open
 * (an RST at the client, within 10 s), refuse its certificate at the direct TLS
 * handshake and in libp2p identify, count each refusal by reason, and keep serving
 * every other node.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Socket } from "node:net";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectTlsStream } from "../services/tunnel/tls-streams.ts";
import { startTarget, watchEnding, type FaultTarget } from "../test/support/fault-targets.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess, runCliOk } from "../test/support/processes.ts";
import { readAtLeast, socksConnect } from "../test/support/socks-client.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";

let keys: string;
let hub: HubProcess;
let echo: FaultTarget;
const agents = new Map<string, { agent: AgentProcess; socks: number; tls: number }>();

async function startAgent(node: string): Promise<void> {
  const socks = await freePort();
  const tls = await freePort();
  const agent = await startAgentProcess({
    node,
    hubs: [hub.leafUrl.replace("nats://", "tls://")],
    keys: join(keys, "nodes", node),
    extraArgs: ["--tunnel-ways", "direct", "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", `127.0.0.1:${tls}`, "--mdns", "off", "--socks", `127.0.0.1:${socks}`],
  });
  agents.set(node, { agent, socks, tls });
}

/** The tunnel's refusals and cuts by reason, from the agent's status. */
async function refusedAt(node: string): Promise<Record<string, number>> {
  const view = await agents.get(node)!.agent.view();
  return (view.status.actors.find((actor) => actor.name === "tunnel")?.detail?.refused ?? {}) as Record<string, number>;
}

/** A stream from `from`'s SOCKS proxy to the echo server on `to`, proven to carry bytes. */
async function openEcho(from: string, to: string): Promise<Socket> {
  const socket = await eventually(() => socksConnect(agents.get(from)!.socks, to, echo.port).catch(() => undefined), 30_000, `a stream ${from} → ${to}`);
  const payload = randomBytes(4096);
  socket.write(payload);
  expect((await readAtLeast(socket, payload.length)).equals(payload)).toBe(true);
  return socket;
}

beforeAll(async () => {
  requireTools();
  echo = await startTarget("echo");
  keys = join(tempDir(), "keys");
  // As `leafmesh keys init` and `keys issue` make them (the same functions, without a CLI process each).
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b", "edge-c"]) await issueNode({ dir: keys, node });
  hub = await startHubProcess({ name: "hub-1", keys });
  for (const node of ["edge-a", "edge-b", "edge-c"]) await startAgent(node);
}, 180_000);

afterAll(async () => {
  await stopAllProcesses();
  await echo?.close();
});

describe("a revoked node on the direct path", () => {
  it("has its open streams cut with an RST within 10 s, and its certificate refused at the direct handshake; other nodes go on", async () => {
    const fromC = await openEcho("edge-c", "edge-b");
    const fromA = await openEcho("edge-a", "edge-b");
    const endingC = watchEnding(fromC);
    let aEnded = false;
    fromA.once("close", () => (aEnded = true));

    const revokedAt = Date.now();
    await runCliOk("keys", "revoke", "--dir", keys, "--node", "edge-c", "--hub", hub.clientUrl.replace("nats://", "tls://"));
    // Bounded, to fail with what happened rather than at the test's timeout.
    const ending = await Promise.race([endingC, new Promise<{ how: string }>((resolve) => setTimeout(() => resolve({ how: "still open after 12 s" }), 12_000).unref())]);
    const cutAfterMs = Date.now() - revokedAt;
    expect(ending.how, `edge-c's stream ended with ${ending.how} after ${cutAfterMs} ms`).toBe("ECONNRESET");
    expect(cutAfterMs).toBeLessThan(10_000);

    // A new stream from the revoked node finds no way to edge-b (the proxy refuses the CONNECT).
    await expect(socksConnect(agents.get("edge-c")!.socks, "edge-b", echo.port)).rejects.toThrow(/SOCKS refused|ended|ECONNRESET/);
    // Its certificate at edge-b's direct TLS port, as a dial over the LAN shows it: refused at the handshake.
    const bundle = join(keys, "nodes", "edge-c");
    const identity = { certPem: readFileSync(join(bundle, "node.crt"), "utf8"), keyPem: readFileSync(join(bundle, "node.key"), "utf8"), caPem: readFileSync(join(bundle, "ca.crt"), "utf8") };
    const dialled = await connectTlsStream({ identity, node: "edge-b", host: "127.0.0.1", port: agents.get("edge-b")!.tls, timeoutMs: 5_000 }).then(
      (socket) => new Promise<string>((resolve) => {
        // TLS 1.3: the client finishes its handshake before the server has looked at its certificate; the refusal is the reset that follows.
        socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
        socket.once("end", () => resolve("end"));
        socket.write("x");
        socket.resume();
      }),
      (error: Error) => `rejected: ${error.message}`,
    );
    expect(dialled).toMatch(/ECONNRESET|rejected/);
    const refused = await eventually(async () => {
      const counts = await refusedAt("edge-b");
      return counts["revoked certificate refused (direct TLS)"] && Object.keys(counts).some((reason) => reason.startsWith("cut: certificate revoked")) ? counts : undefined;
    }, 10_000, "edge-b to count the refusal and the cut");
    expect(refused["revoked certificate refused (direct TLS)"]).toBeGreaterThanOrEqual(1);
    // edge-b's agent lived through it all (a refusal inside the TLS handshake callback once took it down: SIGSEGV).
    expect(agents.get("edge-b")!.agent.child.exitCode).toBeNull();
    expect(agents.get("edge-b")!.agent.child.signalCode).toBeNull();
    expect(agents.get("edge-b")!.agent.output()).toMatch(/node 'edge-c''s certificate is revoked: refused at the direct TLS handshake/);

    // edge-a's stream to edge-b never noticed, and edge-a still opens new ones.
    expect(aEnded).toBe(false);
    const payload = randomBytes(4096);
    fromA.write(payload);
    expect((await readAtLeast(fromA, payload.length)).equals(payload)).toBe(true);
    fromA.destroy();
    (await openEcho("edge-a", "edge-b")).destroy();
    expect(await refusedAt("edge-a")).toSatisfy((counts: Record<string, number>) => Object.keys(counts).every((reason) => reason.includes("revoked")));
  });
});
