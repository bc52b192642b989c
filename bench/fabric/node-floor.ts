/**
 * The fabric bench's floor for "a fresh node holds the catalog": a fresh Node process that does what a
 * fresh agent must do before any leafmesh code runs, and nothing else. It starts its own leaf nats-server
 * (as the agent does: NatsServerSupervisor, the leaf config the agent renders), connects with nats.js,
 * makes the catalog mirror from the hub's domain, watches it and parses every value with JSON.parse (no
 * checking, no index, no DNS, traffic or events). It prints `held <its RSS in MiB>` once it has every object
 * (scenario.ts times it from the launch, as it times the agent), then, as an agent gives back what a load
 * left behind (lib/release-memory.ts), one full collection and `rest <its RSS in MiB>` a second later, and waits
 * to be stopped. scenario.ts starts it with the agent's memory settings (bin/leafmesh.js: a 4 MiB young
 * generation, one malloc arena, leafmesh's compile cache), so its RSS at rest is what Node, nats.js and the
 * parsed objects take.
 *
 *   node bench/fabric/node-floor.ts HUB_LEAF_URL COUNT DATA_DIR CLIENT_PORT MONITOR_PORT
 *
 * Plain NATS's row starts only a nats-server in a Node process already running; this one pays Node's start,
 * nats.js's import and a cold JIT as the agent does, so the gap between it and the agent is leafmesh's own.
 */
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { buckets } from "../../bus/subjects.ts";
import { silentLogger } from "../../lib/log.ts";
import { fullCollection } from "../../lib/release-memory.ts";
import { NatsServerSupervisor } from "../../nats/supervisor.ts";
import { renderLeafConfig, toLeafUrl } from "../../nats/render.ts";

const [hubLeafUrl, countText, dataDir, clientPort, monitorPort] = process.argv.slice(2);
const count = Number(countText);
if (!hubLeafUrl || !(count > 0) || !dataDir || !clientPort || !monitorPort) {
  process.stderr.write("usage: node bench/fabric/node-floor.ts HUB_LEAF_URL COUNT DATA_DIR CLIENT_PORT MONITOR_PORT\n");
  process.exit(2);
}
const client = { host: "127.0.0.1", port: Number(clientPort) };
const monitor = { host: "127.0.0.1", port: Number(monitorPort) };
const server = new NatsServerSupervisor({
  name: "floor-node", dataDir, monitor, log: silentLogger(),
  configText: renderLeafConfig({ serverName: "floor-node", domain: "floor-node", storeDir: join(dataDir, "jetstream"), client, monitor, upstreams: [toLeafUrl(hubLeafUrl)] }),
});
await server.start();
const connection = await connect({ servers: `nats://127.0.0.1:${client.port}` });
const mirror = await new Kvm(connection).create(buckets.catalog, { mirror: { name: buckets.catalog, domain: "hub" } });
const held = new Map<string, unknown>();
const decoder = new TextDecoder();
for await (const entry of await mirror.watch()) {
  held.set(entry.key, JSON.parse(decoder.decode(entry.value)));
  if (held.size === count) break;
}
const rssMiB = () => Math.round(process.memoryUsage.rss() / 1048576);
process.stdout.write(`held ${rssMiB()}\n`);
setTimeout(() => {
  fullCollection()();
  // Names `held`: what was parsed stays referenced (and resident) until the process is stopped.
  setTimeout(() => process.stdout.write(`rest ${rssMiB()} ${held.size}\n`), 1_000);
}, 1_000);
const stop = async () => {
  await connection.close();
  await server.stop();
  process.exit(0);
};
process.once("SIGTERM", () => void stop());
process.once("SIGINT", () => void stop());
