/**
 * The traffic and proxier actors in one process, as the agent runs them, for the
 * lab (run inside a network namespace with `ip netns exec`). The catalog comes as
 * JSON lines on stdin (`{"op":"put","object":{...}}`, `{"op":"delete","key":"..."}`)
 * into an IndexFeed, standing in for the controller; with --nats the actors talk
 * over a real bus (the proxier reads traffic's `listeners` events). Prints JSON
 * lines: {"event":"ready"}, {"event":"synced","rules":N}, {"event":"stats",...}.
 * stdin `{"op":"stats"}` asks for stats; SIGTERM or `{"op":"stop"}` stops cleanly
 * (rules removed) and exits 0.
 *
 *   node agent-entry.ts --node edge-a --intercept nftables [--nats nats://127.0.0.1:4222] [--ejection-ms 10000]
 */
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import { Bus } from "../../bus/bus.ts";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import type { CatalogObject } from "../../bus/catalog.ts";
import { createLogger } from "../../lib/log.ts";
import { accountStreamBuffersInHeapLimits } from "../../lib/stream-heap.ts";
import { busListenerSource, createProxierActor } from "../../services/proxier/index.ts";
import type { InterceptMode } from "../../services/proxier/backend.ts";
import { createTrafficActor } from "../../services/traffic/index.ts";

const { values } = parseArgs({ options: { node: { type: "string" }, intercept: { type: "string" }, nats: { type: "string" }, "listen-host": { type: "string" }, "ejection-ms": { type: "string" } } });
const node = values.node ?? "edge-a";
const log = createLogger({ level: "warn" }).child({ node });
const feed = new IndexFeed();
const say = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`);

const connection = values.nats ? await connect({ servers: values.nats }) : undefined;
const bus = connection ? new Bus({ connection, node, log }) : undefined;
const listenHost = values["listen-host"] ?? "127.0.0.1";
const traffic = createTrafficActor({ bus, feed, log: log.child({ actor: "traffic" }), node, listenHost, connectTimeoutMs: 1000, republishMs: 2000, outlier: { baseEjectionMs: Number(values["ejection-ms"] ?? 10_000) } });
const listeners = bus ? busListenerSource(bus) : traffic;
const proxier = createProxierActor({ bus, feed, log: log.child({ actor: "proxier" }), intercept: (values.intercept ?? "iptables") as InterceptMode, listeners, listenHost });

let lastRules = -1;
proxier.actor.subscribe(() => {
  const stats = proxier.stats();
  if (stats.syncs > 0 && proxier.actor.getSnapshot().value === "synced" && stats.rules !== lastRules) {
    lastRules = stats.rules;
    say({ event: "synced", rules: stats.rules });
  }
});

try {
  await proxier.start();
  await traffic.start();
  // As roles/agent.ts does for every agent (lib/stream-heap.ts).
  accountStreamBuffersInHeapLimits();
} catch (error) {
  say({ event: "failed", error: (error as Error).message });
  process.exit(2);
}
say({ event: "ready" });

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await traffic.stop();
  await proxier.stop();
  await connection?.close();
  say({ event: "stopped" });
  process.exit(0);
}
process.on("SIGTERM", () => void stop());

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line) as { op: string; key?: string; object?: CatalogObject };
  if (command.op === "stop") return void stop();
  if (command.op === "stats") return say({ event: "stats", traffic: traffic.stats(), proxier: proxier.stats(), rejected: traffic.rejected(), listeners: traffic.listeners() });
  if (command.op === "put" && command.object && command.key) {
    if (feed.reader.apply({ op: "put", key: command.key, object: command.object })) feed.notify([command.key]);
  } else if (command.op === "delete" && command.key) {
    if (feed.reader.apply({ op: "delete", key: command.key })) feed.notify([command.key]);
  }
});
