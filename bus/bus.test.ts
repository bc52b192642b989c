import { spawn } from "node:child_process";
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
