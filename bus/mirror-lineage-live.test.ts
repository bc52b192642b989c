/**
 * The mirror lineage check on a live catalog: a hub whose catalog is being written while a node checks
 * its mirror is not taken for a hub that lost its store. The check read the upstream's last revision
 * first and the mirror's after it: writes in between made the mirror hold "more than the upstream",
 * and the node deleted its mirror and read the whole catalog again (half the runs of the controller's
 * burst test saw every object twice).
 */
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { afterAll, describe, expect, it } from "vitest";
import { catalogKey, encodeCatalogObject } from "./catalog.ts";
import { buckets } from "./subjects.ts";
import { watchMirrorLineage } from "./mirror-lineage.ts";
import { capturedLog } from "../test/support/log-lines.ts";
import { service } from "../test/support/dns-catalog.ts";
import { eventually } from "../test/support/ports.ts";
import { startInProcessMesh } from "../test/support/in-process-mesh.ts";

const running: { stop(): Promise<void> }[] = [];
afterAll(async () => {
  for (const item of running.reverse()) await item.stop();
});

describe("the mirror lineage check while the upstream is written", () => {
  it("never takes a mirror that keeps up with a busy upstream for one of a remade upstream", async () => {
    const { agent, hubClientUrl, stop } = await startInProcessMesh();
    running.push({ stop });
    const writer = await connect({ servers: hubClientUrl });
    running.push({ stop: () => writer.close() });
    const kv = await new Kvm(writer).create(buckets.catalog, { history: 1 });

    const { log, lines } = capturedLog("info");
    let remade = 0;
    const lineage = watchMirrorLineage({ connection: agent.bus.connection, upstreamDomain: "hub", stream: `KV_${buckets.catalog}`, log, what: "catalog", remake: async () => void remade++, onRemade: () => undefined });
    let writing = true;
    const checks = (async () => {
      while (writing) {
        lineage.check();
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();
    for (let index = 0; index < 3000; index++) {
      const object = service(`ns-${index % 6}`, `svc-${index}`, { clusterIPs: [`10.96.${Math.floor(index / 250)}.${(index % 250) + 1}`] });
      await kv.put(catalogKey(object), encodeCatalogObject(object));
    }
    writing = false;
    await checks;
    lineage.stop();
    expect(lines.filter((line) => line.level === 40).map((line) => String(line.reason ?? line.msg))).toEqual([]);
    expect(remade).toBe(0);
    await eventually(() => agent.controller.index.size === 3000, 20_000, "the agent to hold all 3,000 objects");
  }, 90_000);
});
