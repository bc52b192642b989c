/** Test support: nats-server JetStream clusters on loopback, as a hub cluster's servers are (not used by the product). */
import { join } from "node:path";
import { freePort } from "./ports.ts";
import { tempDir } from "./processes.ts";
import { startNatsServer, type TestServer } from "./trust-servers.ts";

/** Servers clustered by routes, each with JetStream, started together (JetStream waits for a quorum). The caller stops them. */
export async function startJetStreamCluster(names: string[], clusterName = "jetstream"): Promise<TestServer[]> {
  const dir = tempDir(`leafmesh-${clusterName}-cluster-`);
  const routePorts = await Promise.all(names.map(() => freePort()));
  const routes = routePorts.map((port) => `nats-route://127.0.0.1:${port}`).join(", ");
  return Promise.all(
    names.map((name, index) =>
      startNatsServer({
        name,
        dir,
        config: ({ client, monitor }) =>
          `server_name: ${name}\nlisten: 127.0.0.1:${client}\nhttp: 127.0.0.1:${monitor}\njetstream { store_dir: "${join(dir, name)}" }\ncluster { name: ${clusterName}, listen: 127.0.0.1:${routePorts[index]}, routes: [${routes}] }\n`,
      }),
    ),
  );
}
