/**
 * The fabric monitor names the upstream a leaf is really attached to when the upstreams are given by
 * host name on one port (tls://hub-1.example.net:7422, tls://hub-2.example.net:7422), as on a real
 * network: a real hub nats-server on 127.0.0.2, a real leaf nats-server given a name first
 * (`localhost`, where nothing listens) and the hub's address second.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { afterAll, describe, expect, it } from "vitest";
import { Bus } from "../bus/bus.ts";
import { silentLogger } from "../lib/log.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { startNatsServer, stopAllServers } from "../test/support/trust-servers.ts";
import { FabricMonitor, upstreamOfLeaf } from "./fabric-monitor.ts";

const dir = mkdtempSync(join(tmpdir(), "leafmesh-fabric-monitor-"));
afterAll(async () => {
  await stopAllServers();
  rmSync(dir, { recursive: true, force: true });
});

describe("the fabric monitor's upstream, with upstreams given by host name", () => {
  it("is the upstream whose address the leaf is connected to, not the first of the port", async () => {
    const leafPort = await freePort("127.0.0.2");
    await startNatsServer({ name: "hub", dir, config: ({ client, monitor }) => `server_name: hub\nport: ${client}\nhost: 127.0.0.1\nhttp: 127.0.0.1:${monitor}\nleafnodes { listen: "127.0.0.2:${leafPort}" }\n` });
    // localhost resolves to 127.0.0.1 (and ::1) where no leafnode port is open: the leaf attaches to 127.0.0.2.
    const upstreams = [`nats-leaf://localhost:${leafPort}`, `nats-leaf://127.0.0.2:${leafPort}`];
    const leaf = await startNatsServer({
      name: "edge-a",
      dir,
      config: ({ client, monitor }) =>
        `server_name: edge-a\nport: ${client}\nhost: 127.0.0.1\nhttp: 127.0.0.1:${monitor}\nleafnodes { reconnect: 1, remotes: [ { urls: ${JSON.stringify(upstreams)} } ] }\n`,
    });
    const connection = await connect({ servers: leaf.clientUrl });
    const monitor = new FabricMonitor({ bus: new Bus({ connection, node: "edge-a", log: silentLogger() }), log: silentLogger(), monitor: { host: "127.0.0.1", port: leaf.monitorPort }, upstreams });
    try {
      const link = await eventually(
        async () => {
          await monitor.poll();
          return monitor.links.find((candidate) => candidate.direction === "upstream");
        },
        20_000,
        "the leaf link",
      );
      expect(link.url).toBe(`nats-leaf://127.0.0.2:${leafPort}`);
      expect(monitor.upstreamUp).toBe(true);
    } finally {
      await connection.close();
    }
  });

  it("writes an IPv6 leaf's address in brackets, on both ends (it read '::1:36584')", async () => {
    const leafPort = await freePort();
    const hub = await startNatsServer({ name: "hub6", dir, config: ({ client, monitor }) => `server_name: hub6\nport: ${client}\nhost: 127.0.0.1\nhttp: 127.0.0.1:${monitor}\nleafnodes { listen: "[::1]:${leafPort}" }\n` });
    const upstreams = [`nats-leaf://[::1]:${leafPort}`];
    const leaf = await startNatsServer({
      name: "edge-6",
      dir,
      config: ({ client, monitor }) => `server_name: edge-6\nport: ${client}\nhost: 127.0.0.1\nhttp: 127.0.0.1:${monitor}\nleafnodes { reconnect: 1, remotes: [ { urls: ${JSON.stringify(upstreams)} } ] }\n`,
    });
    const connections = [await connect({ servers: leaf.clientUrl }), await connect({ servers: hub.clientUrl })];
    const edge = new FabricMonitor({ bus: new Bus({ connection: connections[0], node: "edge-6", log: silentLogger() }), log: silentLogger(), monitor: { host: "127.0.0.1", port: leaf.monitorPort }, upstreams });
    const hubSide = new FabricMonitor({ bus: new Bus({ connection: connections[1], node: "hub6", log: silentLogger() }), log: silentLogger(), monitor: { host: "127.0.0.1", port: hub.monitorPort }, upstreams: [] });
    try {
      const up = await eventually(async () => (await edge.poll(), edge.links.find((candidate) => candidate.direction === "upstream")), 20_000, "the leaf link at the leaf");
      expect(up.address).toBe(`[::1]:${leafPort}`);
      const down = await eventually(async () => (await hubSide.poll(), hubSide.links.find((candidate) => candidate.direction === "downstream")), 20_000, "the leaf link at the hub");
      expect(down.remote).toMatch(/^\[::1\]:\d+$/);
    } finally {
      for (const connection of connections) await connection.close();
    }
  });

  it("takes an address match first, else the first upstream of that port given by name (a leaf is never taken for a downstream)", () => {
    const hub1 = { url: "tls://hub-1.example.net:7422", host: "hub-1.example.net", port: 7422, addresses: new Set(["198.18.0.11"]) };
    const hub2 = { url: "tls://hub-2.example.net:7422", host: "hub-2.example.net", port: 7422, addresses: new Set(["198.18.0.12"]) };
    const byAddress = { url: "tls://198.18.0.13:7422", host: "198.18.0.13", port: 7422, addresses: new Set(["198.18.0.13"]) };
    expect(upstreamOfLeaf({ ip: "198.18.0.12", port: 7422 }, [hub1, hub2, byAddress])?.url).toBe(hub2.url);
    expect(upstreamOfLeaf({ ip: "198.18.0.13", port: 7422 }, [hub1, hub2, byAddress])?.url).toBe(byAddress.url);
    expect(upstreamOfLeaf({ ip: "198.18.0.99", port: 7422 }, [hub1, hub2, byAddress])?.url).toBe(hub1.url);
    expect(upstreamOfLeaf({ ip: "198.18.0.99", port: 7422 }, [byAddress])).toBeUndefined();
    expect(upstreamOfLeaf({ ip: "198.18.0.11", port: 40123 }, [hub1, hub2])).toBeUndefined();
  });
});
