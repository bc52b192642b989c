import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import { silentLogger } from "../../lib/log.ts";
import { createTrafficActor, type TrafficActor } from "./actor.ts";
import { defaultEphemeralRange, ListenerPortPicker, readEphemeralRange } from "./listener-ports.ts";
import { putService } from "../../test/support/traffic-catalog.ts";

describe("listener ports", () => {
  it("walks the range from the start it is given and wraps around", () => {
    const picker = new ListenerPortPicker({ low: 40000, high: 40003 }, () => 0.5);
    expect([1, 2, 3, 4, 5].map(() => picker.next())).toEqual([40002, 40003, 40000, 40001, 40002]);
  });

  it("reads the namespace's ephemeral range, and falls back to Linux's default", () => {
    const dir = mkdtempSync(join(tmpdir(), "leafmesh-ports-"));
    writeFileSync(join(dir, "range"), "10000\t10999\n");
    expect(readEphemeralRange(join(dir, "range"))).toEqual({ low: 10000, high: 10999 });
    writeFileSync(join(dir, "bad"), "lots of ports\n");
    expect(readEphemeralRange(join(dir, "bad"))).toEqual(defaultEphemeralRange);
    expect(readEphemeralRange(join(dir, "missing"))).toEqual(defaultEphemeralRange);
  });

  describe("in the traffic actor", () => {
    let traffic: TrafficActor | undefined;
    const blockers: Server[] = [];
    afterEach(async () => {
      await traffic?.stop();
      for (const server of blockers.splice(0)) await new Promise((resolve) => server.close(resolve));
    });

    it("opens listeners on ports of its range and steps over ports something else holds", async () => {
      // A small range with most of its ports taken by someone else.
      const low = 20_000 + Math.floor(Math.random() * 10_000);
      for (let port = low; port < low + 6; port++) {
        const server = createServer();
        await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
        blockers.push(server);
      }
      const feed = new IndexFeed();
      putService(feed, { name: "a", clusterIP: "198.19.2.1" });
      putService(feed, { name: "b", clusterIP: "198.19.2.2", ports: [{ name: "dns", protocol: "UDP", port: 53, targetPort: 5353 }] });
      traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a", listenerPorts: { low, high: low + 9 } });
      await traffic.start();
      const portOf = (key: string) => traffic!.listeners().find((binding) => binding.key === key)!.listenerPort;
      // TCP: past the six TCP ports held by someone else; UDP: anywhere in the range (the blockers hold TCP only)
      expect(portOf("lab/a:main/TCP")).toBeGreaterThanOrEqual(low + 6);
      expect(portOf("lab/a:main/TCP")).toBeLessThanOrEqual(low + 9);
      expect(portOf("lab/b:dns/UDP")).toBeGreaterThanOrEqual(low);
      expect(portOf("lab/b:dns/UDP")).toBeLessThanOrEqual(low + 9);
    });

    it("binds the same shared port when the agent starts again, and another node another", async () => {
      const feed = new IndexFeed();
      putService(feed, { name: "a", clusterIP: "198.19.2.1" });
      const sharedPort = async (node: string) => {
        traffic = createTrafficActor({ feed, log: silentLogger(), node });
        await traffic.start();
        const port = traffic.listeners().find((binding) => binding.key === "lab/a:main/TCP")!.listenerPort;
        await traffic.stop();
        traffic = undefined;
        return port;
      };
      const first = await sharedPort("edge-a");
      expect(await sharedPort("edge-a")).toBe(first);
      expect(await sharedPort("edge-b")).not.toBe(first);
    });
  });
});
