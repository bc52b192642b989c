/**
 * A hub and one agent in this test's own process (roles/hub.ts, roles/agent.ts), on free loopback ports,
 * without security: for tests that reach into an agent's runtime (its controller, its bus).
 *
 * ```ts
 * const mesh = await startInProcessMesh();
 * const kv = await new Kvm(await connect({ servers: mesh.hubClientUrl })).create(buckets.catalog);
 * mesh.agent.controller.index.size;
 * await mesh.stop();
 * ```
 */
import { silentLogger, type Logger } from "../../lib/log.ts";
import { startAgent, type AgentConfig, type AgentRuntime } from "../../roles/agent.ts";
import { startHub, type HubRuntime } from "../../roles/hub.ts";
import { freePort } from "./ports.ts";
import { tempDir } from "./processes.ts";

export interface InProcessMesh {
  hub: HubRuntime;
  agent: AgentRuntime;
  /** The hub's NATS client URL (nats://127.0.0.1:port). */
  hubClientUrl: string;
  /** Stops the agent, then the hub. */
  stop(): Promise<void>;
}

export async function startInProcessMesh(options: { node?: string; agentDataDir?: string; agentLog?: Logger; storeWatch?: AgentConfig["storeWatch"] } = {}): Promise<InProcessMesh> {
  const hubClient = await freePort();
  const hubLeaf = await freePort();
  const hub = await startHub({ name: "hub-1", dataDir: tempDir(), client: { host: "127.0.0.1", port: hubClient }, leaf: { host: "127.0.0.1", port: hubLeaf }, monitor: { host: "127.0.0.1", port: await freePort() }, log: silentLogger() });
  try {
    const agent = await startAgent({
      node: options.node ?? "edge-a",
      upstreams: [`nats://127.0.0.1:${hubLeaf}`],
      dataDir: options.agentDataDir ?? tempDir(),
      client: { host: "127.0.0.1", port: await freePort() },
      monitor: { host: "127.0.0.1", port: await freePort() },
      storeWatch: options.storeWatch,
      log: options.agentLog ?? silentLogger(),
    });
    return {
      hub,
      agent,
      hubClientUrl: `nats://127.0.0.1:${hubClient}`,
      async stop() {
        await agent.stop();
        await hub.stop();
      },
    };
  } catch (error) {
    await hub.stop();
    throw error;
  }
}
