/**
 * A relayed stream whose far agent is killed mid-transfer ends in an error at
 * the client, never in a clean short end (issue 15, item 9), with real agent
 * processes whose only path is the relay through the hub (--tunnel-ways relay):
 * a source on edge-c's side sends 32 MiB; a client reads it through edge-a's
 * SOCKS proxy (by Service name) and through edge-a's cluster-IP proxy listener,
 * stops reading after 4 MiB (so the transfer is surely under way), edge-c's
 * agent is killed with SIGKILL, and the client reads on: its stream must end in
 * ECONNRESET with fewer bytes than were sent.
 *
 * The same when the hub's nats-server, which carries the relay, is killed
 * (the run: 400 MiB between two NATs, the hub's nats-server killed after
 * 1.5 s, a clean short end). The cut is the same at any size once it falls
 * mid-transfer, so 32 MiB and a pause keep this short. It runs on loopback: the NAT lab adds nothing to how a relayed
 * stream ends (the relay through the hub is the only path either way).
 */
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Socket } from "node:net";
import { startTarget, watchEnding, type FaultTarget } from "./support/fault-targets.ts";
import { sampleService, writeManifest, writePsk } from "./support/manifests.ts";
import { eventually, freePort } from "./support/ports.ts";
import { proxyListener, startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess } from "./support/processes.ts";
import { connected, readAtLeast, socksConnect } from "./support/socks-client.ts";

const sourceBytes = 32 * 1024 * 1024;
let hub: HubProcess;
let source: FaultTarget;
let edgeA: AgentProcess;
let edgeC: AgentProcess;
let socksPort: number;

async function pathFromA(): Promise<string | undefined> {
  const view = await edgeA.view();
  return (view.status.actors.find((actor) => actor.name === "tunnel")?.detail?.paths as Record<string, string> | undefined)?.["edge-c"];
}

beforeAll(async () => {
  source = await startTarget("source", { bytes: sourceBytes });
  const manifests = tempDir();
  writeManifest(manifests, "bulk.yaml", sampleService({ name: "bulk", clusterIP: "198.19.0.20", endpoints: [{ ip: "127.0.0.1", node: "edge-c" }], backendPort: source.port }));
  const psk = writePsk(tempDir());
  hub = await startHubProcess({ name: "hub-1", manifests });
  socksPort = await freePort();
  // A killed far agent sends nothing more: its channel is reset when edge-a's side has heard nothing for the relay's
  // idle timeout. 4 s here instead of 8 (pings every second instead of every 2): each far-agent test waited ~8.5 s for it.
  const tunnelArgs = ["--psk", psk, "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "off", "--tunnel-ways", "relay", "--tunnel-relay-idle-timeout", "4000"];
  edgeA = await startAgentProcess({ node: "edge-a", hubs: [hub.leafUrl], extraArgs: [...tunnelArgs, "--socks", `127.0.0.1:${socksPort}`] });
  edgeC = await startAgentProcess({ node: "edge-c", hubs: [hub.leafUrl], extraArgs: tunnelArgs });
}, 120_000);

afterAll(async () => {
  await stopAllProcesses();
  await source?.close();
});

const ways: [string, () => Promise<Socket>][] = [
  ["through edge-a's SOCKS proxy, by Service name", () => socksConnect(socksPort, "bulk.demo.svc.cluster.local", 80)],
  ["through edge-a's cluster-IP proxy listener", async () => connected(await proxyListener(edgeA, "demo/bulk:http/TCP"))],
];

/** Opens a transfer from edge-c and reads 4 MiB of it (retried while the relay path comes up). */
async function transferUnderWay(open: () => Promise<Socket>): Promise<{ client: Socket; before: number }> {
  let before = 0;
  const client = await eventually(
    async () => {
      const socket = await open().catch(() => undefined);
      if (!socket) return undefined;
      socket.on("error", () => undefined);
      const head = await readAtLeast(socket, 4 * 1024 * 1024, 15_000).catch(() => undefined);
      before = head?.length ?? 0;
      if (head) return socket;
      socket.destroy();
      return undefined;
    },
    60_000,
    "a transfer from edge-c under way",
  ).catch(async (error: Error) => {
    // Once in a loaded full run (both far-agent cases, after the hub's nats-server had been killed twice) no transfer
    // came under way in 60 s; alone and under load it passed. What both agents said, for the next time.
    const said = (agent: AgentProcess) => agent.output().split("\n").filter((line) => /"level":(40|50)/.test(line)).slice(-12).join("\n");
    const path = await pathFromA().catch((cause: Error) => `unknown (${cause.message})`);
    throw new Error(`${error.message}; edge-a's path to edge-c: ${path}\nedge-a warned:\n${said(edgeA)}\nedge-c warned:\n${said(edgeC)}`);
  });
  return { client, before };
}

/** The pid of the hub's own nats-server (its config lives in the hub's data dir). */
function hubNatsServerPid(): number {
  const pids = execFileSync("pgrep", ["-f", `nats-server.*${hub.dataDir}`], { encoding: "utf8" }).trim().split("\n").map(Number);
  expect(pids, "one nats-server of the hub").toHaveLength(1);
  return pids[0];
}

describe("a relayed transfer whose relay, the hub's nats-server, is killed mid-transfer", () => {
  for (const [name, open] of ways) {
    it(`ends in ECONNRESET, never a clean short end, ${name}`, async () => {
      const { client, before } = await transferUnderWay(open);
      expect(await pathFromA()).toBe("relayed");
      process.kill(hubNatsServerPid(), "SIGKILL");
      const ending = await watchEnding(client);
      expect(ending.how, `${before + ending.bytes} of ${sourceBytes} bytes, then ${ending.how}`).toBe("ECONNRESET");
      expect(before + ending.bytes).toBeLessThan(sourceBytes);
      // A whole hub again (same ports and data) for what follows, whatever its supervisor did meanwhile.
      await hub.stop();
      hub = await hub.restart();
    }, 120_000);
  }
});

describe("a relayed transfer whose far agent is killed mid-transfer", () => {
  for (const [name, open] of ways) {
    it(`ends in ECONNRESET, never a clean short end, ${name}`, async () => {
      if (edgeC.child.exitCode !== null || edgeC.child.signalCode !== null) edgeC = await edgeC.restart();
      const { client, before } = await transferUnderWay(open);
      expect(await pathFromA()).toBe("relayed");
      await edgeC.kill();
      const ending = await watchEnding(client);
      expect(ending.how, `${before + ending.bytes} of ${sourceBytes} bytes, then ${ending.how}`).toBe("ECONNRESET");
      expect(before + ending.bytes).toBeLessThan(sourceBytes);
    }, 120_000);
  }
});
