/**
 * The agent's controller with a real hub and a real catalog mirror: a burst of
 * catalog writes reaches the actors of the agent's process in a few batches
 * (one per turn of the event loop), not one notification per object, and every
 * object still goes out as its own catalog event on the bus.
 */
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { afterAll, describe, expect, it } from "vitest";
import { catalogKey, encodeCatalogObject } from "../../bus/catalog.ts";
import { buckets } from "../../bus/subjects.ts";
import { service } from "../../test/support/dns-catalog.ts";
import { eventually } from "../../test/support/ports.ts";
import { startInProcessMesh } from "../../test/support/in-process-mesh.ts";

const running: { stop(): Promise<void> }[] = [];
afterAll(async () => {
  for (const item of running.reverse()) await item.stop();
});

describe("agent controller: a burst of catalog changes", () => {
  it("reaches the process's actors in batches, and the bus as one event per object", async () => {
    const { agent, hubClientUrl, stop } = await startInProcessMesh();
    running.push({ stop });

    const batches: number[] = [];
    const unsubscribe = agent.controller.feed.onChange((keys) => batches.push(keys.length));
    const events = new Set<string>();
    const stopEvents = agent.bus.subscribe({ actor: "controller", event: "catalog" }, ({ payload }) => events.add((payload as { key: string }).key));

    const writer = await connect({ servers: hubClientUrl });
    running.push({ stop: () => writer.close() });
    const kv = await new Kvm(writer).create(buckets.catalog, { history: 1 });
    const objects = Array.from({ length: 600 }, (_, index) => service(`ns-${index % 6}`, `svc-${index}`, { clusterIPs: [`10.96.${Math.floor(index / 250)}.${(index % 250) + 1}`] }));
    await Promise.all(objects.map((object) => kv.put(catalogKey(object), encodeCatalogObject(object))));

    await eventually(() => agent.controller.index.size === objects.length && events.size === objects.length, 20_000, "the agent to hold and announce all 600 objects");
    unsubscribe();
    stopEvents();
    expect(batches.reduce((sum, size) => sum + size, 0)).toBe(objects.length);
    // One batch per turn of the event loop: a mirror delivers many entries per turn.
    expect(batches.length).toBeLessThan(objects.length / 5);
    expect([...events].sort()).toEqual(objects.map((object) => catalogKey(object)).sort());
  }, 60_000);
});
