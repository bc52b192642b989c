/**
 * Test support for the tunnel: a real NATS fabric on loopback — one or more hubs
 * (clustered when more than one) and one leaf server per agent — started with
 * the lead's config renderers and supervisor. Not part of the actor.
 *
 * ```ts
 * const fabric = await startFabric({ hubs: 1, leaves: ["edge-a", "edge-b"] });
 * const nc = await fabric.connect("edge-a");   // a client of edge-a's leaf
 * await fabric.stop();
 * ```
 */
import { createHash } from "node:crypto";
import { createServer, type Server } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import type { Duplex } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats } from "../../bus/connect.ts";
import { NatsServerSupervisor } from "../../nats/supervisor.ts";
import { renderHubConfig, renderLeafConfig } from "../../nats/render.ts";
import { silentLogger } from "../../lib/log.ts";
import { freePort } from "./ports.ts";

export interface TestFabric {
  hubs: { name: string; clientUrl: string; leafUrl: string; server: NatsServerSupervisor }[];
  leaves: Map<string, { clientUrl: string; server: NatsServerSupervisor }>;
  connect(name: string): Promise<NatsConnection>;
  stop(): Promise<void>;
}

export async function startFabric(options: { hubs: number; leaves: string[] }): Promise<TestFabric> {
  const dir = mkdtempSync(join(tmpdir(), "lm-tunnel-fabric-"));
  const log = silentLogger();
  const connections: NatsConnection[] = [];
  const hubPorts = await Promise.all(
    Array.from({ length: options.hubs }, async () => ({ client: await freePort(), leaf: await freePort(), monitor: await freePort(), cluster: await freePort() })),
  );
  const hubs: TestFabric["hubs"] = [];
  const leaves: TestFabric["leaves"] = new Map();
  const fabric: TestFabric = {
    hubs,
    leaves,
    async connect(name) {
      const leaf = leaves.get(name);
      const url = leaf?.clientUrl ?? hubs.find((hub) => hub.name === name)?.clientUrl;
      if (!url) throw new Error(`no server named ${name} in the test fabric`);
      const connection = await connectNats({ servers: [url], name: `test ${name}` });
      connections.push(connection);
      return connection;
    },
    async stop() {
      for (const connection of connections) await connection.close().catch(() => undefined);
      for (const leaf of leaves.values()) await leaf.server.stop();
      for (const hub of hubs) await hub.server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await Promise.all(
      hubPorts.map(async (ports, index) => {
        const name = `hub-${index + 1}`;
        const dataDir = join(dir, name);
        const configText = renderHubConfig({
          serverName: name,
          storeDir: join(dataDir, "js"),
          client: { host: "127.0.0.1", port: ports.client },
          monitor: { host: "127.0.0.1", port: ports.monitor },
          leaf: { host: "127.0.0.1", port: ports.leaf },
          pingInterval: "1s",
          ...(options.hubs > 1
            ? { cluster: { name: "hubs", listen: { host: "127.0.0.1", port: ports.cluster }, routes: hubPorts.map((other) => `nats-route://127.0.0.1:${other.cluster}`) } }
            : {}),
        });
        const server = new NatsServerSupervisor({ name, configText, dataDir, monitor: { host: "127.0.0.1", port: ports.monitor }, log, readyTimeoutMs: 30_000 });
        hubs.push({ name, clientUrl: `nats://127.0.0.1:${ports.client}`, leafUrl: `nats-leaf://127.0.0.1:${ports.leaf}`, server });
        await server.start();
      }),
    );
    hubs.sort((a, b) => a.name.localeCompare(b.name));
    await Promise.all(
      options.leaves.map(async (name, index) => {
        const client = await freePort();
        const monitor = await freePort();
        const dataDir = join(dir, name);
        // Spread leaves over the hubs so a relayed pair crosses the cluster, as in the field.
        const upstreams = hubs.map((_, offset) => hubs[(index + offset) % hubs.length].leafUrl);
        const configText = renderLeafConfig({
          serverName: name,
          domain: name,
          storeDir: join(dataDir, "js"),
          client: { host: "127.0.0.1", port: client },
          monitor: { host: "127.0.0.1", port: monitor },
          upstreams,
          pingInterval: "1s",
        });
        const server = new NatsServerSupervisor({ name, configText, dataDir, monitor: { host: "127.0.0.1", port: monitor }, log, readyTimeoutMs: 30_000 });
        leaves.set(name, { clientUrl: `nats://127.0.0.1:${client}`, server });
        await server.start();
      }),
    );
  } catch (error) {
    await fabric.stop();
    throw error;
  }
  return fabric;
}

export const testPsk = `/key/swarm/psk/1.0.0/\n/base16/\n${"5a".repeat(32)}\n`;

/** Writes `payload`, ends, and resolves with everything read back. */
export async function roundTrip(stream: Duplex, payload: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.once("end", () => resolve(Buffer.concat(chunks)));
    stream.once("error", reject);
  });
  stream.end(payload);
  return done;
}

/**
 * A TCP echo on loopback, the target of test streams. Each connection is piped to itself: a FIN from the
 * client ends the echo's side once what came before it went back; a reset (a stream the tunnel cut) or any
 * other error is swallowed and destroys that connection only, which ends its pipe.
 */
export async function startTcpEcho(): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer((socket) => socket.on("error", () => undefined).pipe(socket));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as { port: number }).port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

export function sha(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

