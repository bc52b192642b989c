import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { capturedLog } from "../test/support/log-lines.ts";
import { eventually, freePort } from "../test/support/ports.ts";
import { Bus } from "./bus.ts";

describe("Bus.publish on a connection that is going away", () => {
  it("drops an event (counted) while the connection drains and after it closed, and never throws", async () => {
    const port = await freePort();
    const nats = spawn("nats-server", ["-p", String(port), "-a", "127.0.0.1"], { stdio: "ignore" });
    try {
      const connection = await eventually(() => connect({ servers: `nats://127.0.0.1:${port}`, reconnect: false }), 10_000, "nats-server");
      // A subscription keeps the drain going for a moment: publishing then threw DrainingConnectionError
      // from a timer (the fabric monitor's poll), an unhandled rejection at every shutdown.
      connection.subscribe("slow.>", { callback: () => {} });
      const { log, lines } = capturedLog("debug");
      const bus = new Bus({ connection, node: "edge-a", log });
      const drained = connection.drain();
      expect(connection.isDraining()).toBe(true);
      expect(() => bus.publish("fabric", "link", { at: new Date().toISOString(), up: true, kind: "leaf", remote: "r" })).not.toThrow();
      await drained;
      expect(() => bus.publish("fabric", "link", { at: new Date().toISOString(), up: false, kind: "leaf", remote: "r" })).not.toThrow();
      expect(bus.drops.get("connection draining")).toBe(1);
      expect(bus.drops.get("connection closed")).toBe(1);
      // A stop under way, not a fault: said at debug (20), never as a warning at every stop.
      await new Promise((resolve) => setImmediate(resolve));
      const said = lines.filter((line) => line.msg === "bus message dropped (logged once per subject and reason)");
      expect(said.map((line) => [line.reason, line.level])).toEqual([
        ["connection draining", 20],
        ["connection closed", 20],
      ]);
    } finally {
      nats.kill();
    }
  });
});

describe("Bus.publish of an event over the server's max_payload", () => {
  it("drops it (counted, said once) instead of throwing out of the publisher, and the next event goes out", async () => {
    const port = await freePort();
    // max_payload is set in a config file only (nats-server 2.9.10 has no flag for it).
    const dir = mkdtempSync(join(tmpdir(), "leafmesh-bus-"));
    writeFileSync(join(dir, "nats.conf"), `port: ${port}\nhost: 127.0.0.1\nmax_payload: 4096\n`);
    const nats = spawn("nats-server", ["-c", join(dir, "nats.conf")], { stdio: "ignore" });
    try {
      const connection = await eventually(() => connect({ servers: `nats://127.0.0.1:${port}` }), 10_000, "nats-server");
      const { log, lines } = capturedLog("debug");
      const bus = new Bus({ connection, node: "edge-a", log });
      const seen: string[] = [];
      bus.subscribeRaw("mesh.edge-a.controller.>", (subject) => seen.push(subject));
      // A catalog event around a KV value near the server's limit: the value fits, the event does not.
      const big = JSON.stringify({ at: new Date().toISOString(), key: "services.shop.web", revision: 1, object: { padding: "x".repeat(5_000) } });
      expect(() => bus.publishJson("controller", "catalog", big)).not.toThrow();
      expect(() => bus.publishJson("controller", "catalog", big)).not.toThrow();
      expect(bus.drops.get("over the server's max_payload")).toBe(2);
      bus.publish("controller", "sync", { at: new Date().toISOString(), objects: 1, revision: 1, online: true });
      await eventually(() => seen.includes("mesh.edge-a.controller.sync") || undefined, 5_000, "the next event");
      const said = lines.filter((line) => line.msg === "bus message dropped (logged once per subject and reason)");
      expect(said.map((line) => [line.reason, line.level])).toEqual([["over the server's max_payload", 40]]);
      await connection.close();
    } finally {
      nats.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
