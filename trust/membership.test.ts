/**
 * Changing who is in the mesh leaves everyone else as they were: a secured hub
 * and three real agents (`leafmesh hub` / `leafmesh agent` processes with their
 * bundles, relaying through the fabric); then, with the documented commands and
 * the hub running, a node is issued, one revoked and that one issued again.
 * After each step the other agents still answer rpc, carry a relayed stream
 * (one held open across every step, and a new one), mirror a catalog change,
 * and no permission violation is logged for them.
 *
 * Before the node users' permissions were shaped for it (trust/claims.ts
 * `nodeUserPermissions`), the first `keys issue --hub` made the hub drop every
 * running agent's subscriptions ("Permissions Violation for Subscription" on
 * rpc.<node>.>, relay.<node>.>, _INBOX_<node>.> and the mirror's $JS.M.*).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, connect as tcpConnect, type Server, type Socket } from "node:net";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { rpcRequest } from "../bus/bus.ts";
import type { NodeStatus } from "../roles/status.ts";
import { sampleService, writeManifest } from "../test/support/manifests.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { startAgentProcess, startHubProcess, stopAllProcesses, tempDir, type AgentProcess, type HubProcess, runCliOk } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { rpc } from "../bus/rpc.ts";
import { initKeys } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";

let keys: string;
let manifests: string;
let hub: HubProcess;
let hubClient: NatsConnection;
const agents = new Map<string, AgentProcess>();
let echo: Server;
let echoPort: number;
let socksPort: number;
/** A relayed stream edge-a → edge-b (SOCKS on edge-a, edge-b's echo server), open from the start to the end. */
let heldStream: Socket;
let changes = 0;

async function startAgent(node: string): Promise<AgentProcess> {
  const agent = await startAgentProcess({
    node,
    hubs: [hub.leafUrl.replace("nats://", "tls://")],
    keys: join(keys, "nodes", node),
    extraArgs: [
      "--tunnel-ways", "relay", "--tunnel-listen", "/ip4/127.0.0.1/tcp/0", "--tunnel-tls", "127.0.0.1:0", "--mdns", "off",
      ...(node === "edge-a" ? ["--socks", `127.0.0.1:${socksPort}`] : []),
    ],
  });
  agents.set(node, agent);
  return agent;
}

/** Opens a SOCKS5 connection through edge-a to `node`'s loopback port (a node by name: the tunnel, relayed here). */
async function socksStream(node: string, port: number): Promise<Socket> {
  const socket = tcpConnect({ host: "127.0.0.1", port: socksPort });
  // Held across steps: a reset later (a revoked peer's streams are cut) shows as 'close' in echoes(), never as an uncaught error.
  socket.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  const read = (size: number) =>
    new Promise<Buffer>((resolve, reject) => {
      const tryRead = () => {
        const chunk = socket.read(size) as Buffer | null;
        if (chunk) {
          socket.off("readable", tryRead);
          socket.off("error", reject);
          resolve(chunk);
        }
      };
      socket.on("readable", tryRead);
      socket.once("error", reject);
      tryRead();
    });
  socket.write(Buffer.from([5, 1, 0]));
  expect([...(await read(2))]).toEqual([5, 0]);
  const host = Buffer.from(node);
  socket.write(Buffer.concat([Buffer.from([5, 1, 0, 3, host.length]), host, Buffer.from([port >> 8, port & 0xff])]));
  const reply = await read(10);
  if (reply[1] !== 0) throw new Error(`SOCKS refused ${node}:${port} (reply ${reply[1]})`);
  return socket;
}

/** Sends a line on a relayed echo stream and waits for it to come back. */
async function echoes(socket: Socket, line: string): Promise<void> {
  const back = new Promise<void>((resolve, reject) => {
    let text = "";
    const onData = (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes(line)) {
        socket.off("data", onData);
        resolve();
      }
    };
    socket.on("data", onData);
    socket.once("close", () => reject(new Error(`the relayed stream closed before '${line}' came back`)));
  });
  socket.write(`${line}\n`);
  await Promise.race([back, new Promise((_resolve, reject) => setTimeout(() => reject(new Error(`'${line}' did not come back within 10 s`)), 10_000))]);
}

/** What must hold for `nodes` after a change: rpc, relay (held and new streams), the catalog mirror, no violations logged. */
async function othersUntouched(step: string, nodes: string[]): Promise<void> {
  for (const node of nodes) {
    const status = await rpcRequest(hubClient, node, rpc.status, undefined, 3_000);
    expect(status.node, `rpc.${node}.status after ${step}`).toBe(node);
  }
  await echoes(heldStream, `held stream after ${step}`);
  const fresh = await socksStream("edge-b", echoPort);
  try {
    await echoes(fresh, `new stream after ${step}`);
  } finally {
    fresh.destroy();
  }
  // A catalog change made now reaches each agent's mirror.
  const service = `after-${step.replace(/[^a-z0-9]+/g, "-")}`;
  writeManifest(manifests, `${service}.yaml`, sampleService({ name: service, clusterIP: `198.19.9.${++changes}` }));
  for (const node of nodes) {
    await eventually(async () => (await agents.get(node)!.view()).services.some((row) => row.name === service), 20_000, `${service} in ${node}'s catalog mirror`);
  }
  for (const node of nodes) {
    expect(agents.get(node)!.output(), `${node}'s log after ${step}`).not.toMatch(/Permissions Violation|not authorized/);
  }
  expect(hub.output(), `the hub's log after ${step}`).not.toMatch(/Permissions Violation|Removed sub/);
}

beforeAll(async () => {
  requireTools();
  const base = tempDir("leafmesh-membership-");
  keys = join(base, "keys");
  manifests = join(base, "manifests");
  writeManifest(manifests, "web.yaml", sampleService({ name: "web", clusterIP: "198.19.0.10" }));
  // The starting mesh's keys as `leafmesh keys init` and `keys issue` make them (the same functions, without a CLI process
  // each); the changes under test below go through the documented commands.
  await initKeys({ dir: keys });
  for (const node of ["edge-a", "edge-b", "edge-c"]) await issueNode({ dir: keys, node });
  // debug: the hub's nats-server says "Removed sub ... not authorized" at INF, which leafmesh logs at debug
  hub = await startHubProcess({ name: "hub-1", manifests, keys, extraArgs: ["--log-level", "debug"] });
  hubClient = await hub.connection();
  echoPort = await freePort();
  // A stream cut by the mesh (a revoked node's) now reaches the echo as an RST: heard, not thrown.
  echo = createServer((socket) => {
    socket.on("error", () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => echo.listen(echoPort, "127.0.0.1", resolve));
  socksPort = await freePort();
  await Promise.all(["edge-a", "edge-b", "edge-c"].map((node) => startAgent(node)));
  heldStream = await eventually(() => socksStream("edge-b", echoPort), 30_000, "a relayed stream edge-a → edge-b");
  await echoes(heldStream, "held stream at the start");
  const paths = (await agents.get("edge-a")!.view()).status.actors.find((actor) => actor.name === "tunnel")?.detail?.paths as Record<string, string>;
  expect(paths["edge-b"]).toBe("relayed");
}, 180_000);

afterAll(async () => {
  heldStream?.destroy();
  echo?.close();
  await stopAllProcesses();
});

describe("issuing, revoking and re-issuing nodes on a running mesh", () => {
  it("everything works before any change", async () => {
    await othersUntouched("start", ["edge-a", "edge-b", "edge-c"]);
  });

  it("a node issued with --hub leaves the running agents untouched", async () => {
    const output = await runCliOk("keys", "issue", "--dir", keys, "--node", "edge-new", "--hub", hub.clientUrl);
    expect(output).toMatch(/pushed account A\w+ to hub hub-1/);
    await othersUntouched("issue edge-new", ["edge-a", "edge-b", "edge-c"]);
    // and the new node joins
    await startAgent("edge-new");
    const status = await rpcRequest(hubClient, "edge-new", rpc.status, undefined, 3_000);
    expect(status.node).toBe("edge-new");
    await othersUntouched("edge-new joined", ["edge-a", "edge-b", "edge-c", "edge-new"]);
  });

  it("a node revoked with --hub is cut off; the others are untouched", async () => {
    await runCliOk("keys", "revoke", "--dir", keys, "--node", "edge-c", "--hub", hub.clientUrl);
    await eventually(async () => {
      const failure = await rpcRequest(hubClient, "edge-c", rpc.status, undefined, 1_000).then(() => undefined, (error: Error) => error);
      return failure !== undefined;
    }, 10_000, "edge-c to stop answering at the hub");
    await othersUntouched("revoke edge-c", ["edge-a", "edge-b", "edge-new"]);
  });

  it("the revoked node issued again (a new key) rejoins; the others are untouched", async () => {
    await runCliOk("keys", "issue", "--dir", keys, "--node", "edge-c", "--hub", hub.clientUrl);
    await agents.get("edge-c")!.stop();
    await startAgent("edge-c");
    await othersUntouched("re-issue edge-c", ["edge-a", "edge-b", "edge-new", "edge-c"]);
  });
});
