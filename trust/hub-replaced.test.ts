/**
 * A hub of a three-hub cluster lost for good and replaced by a new one while the others run. The lost hub stays
 * a member of the cluster's JetStream group, and the streams keep their third replica on it: measured on 2.9.10,
 * with the new hub simply started beside the two that ran, losing one more hub then stopped the catalog ("jetstream
 * is not enabled" at a put) although two of the three running hubs were up. Started with `--replaces hub-3`,
 * the new hub removes the lost one, the streams move their replica onto it, and the cluster keeps losing one
 * hub at a time as a cluster of three should. A name given to --replaces that answers (a running hub) is left alone.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { eventually } from "../test/support/ports.ts";
import { hubPorts, runCli, startHubCluster, startHubProcess, stopAllProcesses, tempDir, type HubProcess } from "../test/support/processes.ts";
import { requireTools } from "../test/support/trust-servers.ts";
import { loadHubSecurity } from "./security.ts";

let keys: string;
let hubs: HubProcess[];

beforeAll(async () => {
  requireTools();
  keys = join(tempDir("leafmesh-hub-replaced-"), "keys");
  const init = await runCli(["keys", "init", "--dir", keys]);
  expect(init.code, init.stderr).toBe(0);
  hubs = await startHubCluster({ names: ["hub-1", "hub-2", "hub-3"], keys });
}, 180_000);
afterAll(async () => {
  await stopAllProcesses();
});

/** The hub's catalog publisher (mesh account, the hub's certificate). */
async function publisher(hub: HubProcess): Promise<NatsConnection> {
  const security = loadHubSecurity(keys, { resolverDir: join(keys, "unused") });
  return connect({ ...security.publisherConnectOptions, servers: [hub.clientUrl.replace("nats://", "tls://")], reconnect: false });
}

/** The hubs that hold the catalog stream, "(offline)" after those that do not answer. */
async function catalogPeers(hub: HubProcess): Promise<string[]> {
  const connection = await publisher(hub);
  try {
    const info = await (await jetstreamManager(connection, { domain: "hub" })).streams.info("KV_mesh-catalog");
    return [info.cluster?.leader ?? "?", ...(info.cluster?.replicas ?? []).map((replica) => `${replica.name}${replica.offline ? "(offline)" : ""}`)].sort();
  } finally {
    await connection.close();
  }
}

describe("a hub lost for good, and a new one started with --replaces", () => {
  it("takes its place in the streams, and the cluster then survives losing one more hub", async () => {
    expect(await catalogPeers(hubs[0])).toEqual(["hub-1", "hub-2", "hub-3"]);
    await hubs[2].kill();
    const ports = await hubPorts();
    const routes = [hubs[0].routeUrl, hubs[1].routeUrl, `nats-route://127.0.0.1:${ports.cluster}`];
    // hub-2 runs: named by mistake, it must stay
    const hub4 = await startHubProcess({ name: "hub-4", ports, clusterPort: ports.cluster, routes, keys, extraArgs: ["--replaces", "hub-3,hub-2"] });
    await eventually(() => hub4.output().includes("hub 'hub-3' removed from the cluster's JetStream group"), 30_000, "hub-4 removing hub-3");
    // Said just after (or before) hub-3's line, by the same process: read as its output arrives.
    await eventually(() => hub4.output().includes("--replaces hub-2: a server named 'hub-2' answers in this cluster, so it was not removed"), 15_000, "hub-4 leaving the running hub-2 alone");
    expect(hub4.output()).not.toContain("hub 'hub-2' removed");
    await eventually(async () => (await catalogPeers(hubs[0])).join() === "hub-1,hub-2,hub-4", 60_000, "the catalog's replicas on hub-1, hub-2 and hub-4");

    await hubs[1].stop();
    await eventually(
      async () => {
        const connection = await publisher(hubs[0]);
        try {
          await (await new Kvm(connection).open("mesh-catalog")).put("probe.after-hub-2", "written with hub-1 and hub-4 up");
          return true;
        } catch {
          return false;
        } finally {
          await connection.close();
        }
      },
      30_000,
      "a catalog put with hub-1 and hub-4 up",
    );
  }, 240_000);
});
