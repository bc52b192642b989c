/**
 * A hub's route port against a stolen node's certificate (trust/route-credentials.ts). The node's
 * certificate is signed by the mesh CA, as the hubs' is; TLS with client certificates was all a
 * route had to show, and a client speaking the route protocol with `node.crt` joined the cluster
 * and received the mesh account's messages. Now routes also need the hubs' route password: the
 * stolen certificate is refused and hears nothing, while the hubs still cluster (JetStream over
 * both answers).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { initKeys, readKeyState } from "./key-store.ts";
import { issueNode } from "./node-credentials.ts";
import { connectRogueRoute } from "../test/support/rogue-route.ts";
import { requireTools, startSecuredHub, stopAllServers, type SecuredHub } from "../test/support/trust-servers.ts";
import { stopAllProcesses, tempDir } from "../test/support/processes.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { renderHubConfig } from "../nats/render.ts";

let keys: string;
let hubs: SecuredHub[];
let clusterPorts: number[];
let mesh: NatsConnection;

async function routes(hub: SecuredHub): Promise<number> {
  const body = (await (await fetch(`http://127.0.0.1:${hub.monitorPort}/routez`)).json()) as { num_routes: number };
  return body.num_routes;
}

beforeAll(async () => {
  requireTools();
  const base = tempDir("leafmesh-routes-");
  keys = join(base, "keys");
  await initKeys({ dir: keys });
  await issueNode({ dir: keys, node: "edge-a" });
  clusterPorts = [await freePort(), await freePort()];
  // Together: each waits for JetStream, which needs the other.
  hubs = await Promise.all(
    [0, 1].map((index) => startSecuredHub({ keysDir: keys, dir: join(base, `hub-${index + 1}`), name: `hub-${index + 1}`, cluster: { port: clusterPorts[index], routes: [clusterPorts[1 - index]] } })),
  );
  mesh = await connect({ servers: hubs[0].clientUrl, ...hubs[0].security.publisherConnectOptions });
}, 90_000);

afterAll(async () => {
  await mesh?.close().catch(() => undefined);
  await stopAllServers();
  await stopAllProcesses();
});

describe("route ports", () => {
  it("the hubs route with their password, and JetStream works across them", async () => {
    for (const hub of hubs) expect(await routes(hub)).toBeGreaterThan(0);
    const kv = await new Kvm(mesh).create("routes-check", { replicas: 2 });
    await kv.put("k", "v");
    expect((await kv.get("k"))?.string()).toBe("v");
  });

  it("a stolen node's certificate is refused at the route port and hears none of the mesh account", async () => {
    const bundle = join(keys, "nodes", "edge-a");
    const rogue = await connectRogueRoute({ port: clusterPorts[0], cert: join(bundle, "node.crt"), key: join(bundle, "node.key"), ca: join(bundle, "ca.crt"), cluster: "hubs" });
    try {
      rogue.subscribe(readKeyState(keys).meshAccount, "mesh.>");
      // published again until the rogue connection has ended: had it joined, it would have received one
      await eventually(async () => {
        mesh.publish("mesh.edge-b.tunnel.path", "secret of the mesh account");
        await mesh.flush();
        return Promise.race([rogue.closed.then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 200))]);
      }, 10_000, "the hub to close the rogue route");
      expect(rogue.text()).not.toMatch(/RMSG|secret of the mesh account/);
      expect(rogue.text()).toMatch(/Authorization Violation/);
      expect(hubs[0].log()).toMatch(/Router connection closed: Authentication Failure|authentication error/i);
    } finally {
      rogue.close();
    }
    // the hubs are still routed
    for (const hub of hubs) expect(await routes(hub)).toBeGreaterThan(0);
  });

  it("a hub's config asks routes and gateways for the password and presents it in their URLs", () => {
    const credentials = hubs[0].security.routeCredentials;
    const text = renderHubConfig({
      serverName: "hub-1",
      storeDir: "/tmp/x",
      client: { host: "127.0.0.1", port: 4222 },
      monitor: { host: "127.0.0.1", port: 8222 },
      leaf: { host: "127.0.0.1", port: 7422 },
      cluster: { name: "hubs", listen: { host: "0.0.0.0", port: 6222 }, routes: ["nats-route://hub-2.example.net:6222"], credentials },
      gateway: { name: "eu", listen: { host: "0.0.0.0", port: 7222 }, gateways: [{ name: "us", urls: ["nats://hub-us.example.net:7222"] }], credentials },
      security: "# security",
    });
    expect(text).toContain(`nats-route://leafmesh-route:${credentials.password}@hub-2.example.net:6222`);
    expect(text).toContain(`nats://leafmesh-route:${credentials.password}@hub-us.example.net:7222`);
    expect(text.match(/authorization \{/g)).toHaveLength(2);
  });
});
