/**
 * The shared contract suite of catalog sources (STYLE 15): the same tests run
 * over every `CatalogSource` (manifest files, the Kubernetes API), each driven
 * through the source's own input by a small harness.
 *
 * ```ts
 * describeCatalogSourceContract("KubernetesSource", async (clock) => {
 *   const api = await FakeKubeApi.start();
 *   const source = () => new KubernetesSource({ kubeconfig: api.writeKubeconfig(tempDir()), log, clock });
 *   return {
 *     source: source(),
 *     twin: source,
 *     put: async (raw) => void api.apply(raw),
 *     remove: async (kind, namespace, name) => void api.delete(kind, namespace, name),
 *     reread: async () => { api.compact(); api.dropWatches(); await relisted(); },
 *     close: () => api.close(),
 *   };
 * });
 * ```
 *
 * The harness returns a source that is not started yet, on the clock the suite
 * hands in (real time, with every timer accounted for); the suite puts the
 * initial objects first, then starts it, and stops it before `close()`.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { CatalogObject } from "../../bus/catalog.ts";
import { systemClock, type Clock } from "../../lib/clock.ts";
import { sampleService } from "./manifests.ts";
import { eventually } from "./ports.ts";
import type { CatalogChange, CatalogRejection, CatalogSource } from "../../services/controller/source.ts";

export interface CatalogSourceHarness {
  /** Not started yet. */
  source: CatalogSource;
  /** Another source over the same input, not started: the witness that shows when a change has reached any source. */
  twin(): CatalogSource;
  /** Creates or replaces one raw Kubernetes object (as a manifest holds it) through the source's input. */
  put(raw: object): Promise<void>;
  /** Removes one object through the source's input. */
  remove(kind: string, namespace: string, name: string): Promise<void>;
  /** Makes the running source read its whole input again, unchanged (a rescan, a relist), and resolves once it has. */
  reread(): Promise<void>;
  /** Frees the harness's input (server, directory); the suite has stopped the source already. */
  close(): Promise<void>;
}

/** How long a source may take to show a change: manifests rescan, watches resume. */
const changeTimeoutMs = 10_000;

/** Real time, with the timers still pending: a stopped source must leave none behind (a rescan, a backoff, a watch deadline). */
class TimerCountingClock implements Clock {
  readonly pending = new Set<unknown>();
  now(): number {
    return systemClock.now();
  }
  monotonic(): number {
    return systemClock.monotonic();
  }
  setTimeout(callback: () => void, ms: number): unknown {
    const handle = systemClock.setTimeout(() => {
      this.pending.delete(handle);
      callback();
    }, ms);
    this.pending.add(handle);
    return handle;
  }
  clearTimeout(handle: unknown): void {
    this.pending.delete(handle);
    systemClock.clearTimeout(handle);
  }
  setInterval(callback: () => void, ms: number): unknown {
    const handle = systemClock.setInterval(callback, ms);
    this.pending.add(handle);
    return handle;
  }
  clearInterval(handle: unknown): void {
    this.pending.delete(handle);
    systemClock.clearInterval(handle);
  }
}

function service(name: string, clusterIP: string, port = 80): object {
  return sampleService({ name, clusterIP, port })[0];
}

function slice(name: string): object {
  return sampleService({ name, clusterIP: "198.19.0.1" })[1];
}

function firstPort(object: CatalogObject | undefined): number | undefined {
  return object?.kind === "Service" ? object.ports[0]?.port : undefined;
}

export function describeCatalogSourceContract(name: string, makeHarness: (clock: Clock) => Promise<CatalogSourceHarness>): void {
  describe(`CatalogSource contract: ${name}`, () => {
    const open: CatalogSourceHarness[] = [];
    const twins: CatalogSource[] = [];
    afterEach(async () => {
      for (const twin of twins.splice(0)) await twin.stop();
      for (const harness of open.splice(0)) {
        await harness.source.stop();
        await harness.close();
      }
    });

    async function started(initial: object[]) {
      const clock = new TimerCountingClock();
      const harness = await makeHarness(clock);
      open.push(harness);
      const changes: CatalogChange[] = [];
      const rejections: CatalogRejection[] = [];
      /** Batches a listener got while the source said it was not synced: it could not have acted on them. */
      const unsyncedBatches: CatalogChange[][] = [];
      harness.source.onChange((batch) => {
        changes.push(...batch);
        if (!harness.source.synced) unsyncedBatches.push(batch);
      });
      harness.source.onReject((rejection) => rejections.push(rejection));
      for (const raw of initial) await harness.put(raw);
      expect(harness.source.synced).toBe(false);
      await harness.source.start();
      await eventually(() => harness.source.synced, changeTimeoutMs, `${name} to sync`);
      return { harness, source: harness.source, changes, rejections, unsyncedBatches, clock };
    }

    it("holds the initial objects once synced, and said so through onChange", async () => {
      const { source, changes } = await started([service("web", "198.19.0.1"), slice("web"), service("db", "198.19.0.2")]);
      expect([...source.snapshot().keys()].sort()).toEqual(["eps.demo.web-abc", "svc.demo.db", "svc.demo.web"]);
      const web = source.snapshot().get("svc.demo.web");
      expect(web?.kind === "Service" && web.clusterIPs).toEqual(["198.19.0.1"]);
      // Every object held arrived as a put: a listener alone can rebuild the catalog.
      const rebuilt = new Map<string, CatalogObject>();
      for (const change of changes) change.op === "put" ? rebuilt.set(change.key, change.object) : rebuilt.delete(change.key);
      expect(rebuilt).toEqual(new Map(source.snapshot()));
    });

    it("tells listeners nothing before it is synced, so a listener can act on every batch it gets", async () => {
      // The publisher writes on each batch only what a synced source holds: a batch that came before sync would be lost on it.
      const { harness, source, changes, unsyncedBatches } = await started([service("web", "198.19.0.1"), slice("web")]);
      expect(unsyncedBatches).toEqual([]);
      expect(changes.map((change) => change.key).sort()).toEqual([...source.snapshot().keys()].sort());
      await harness.put(service("db", "198.19.0.2"));
      await eventually(() => source.snapshot().has("svc.demo.db"), changeTimeoutMs, "the new object");
      expect(unsyncedBatches).toEqual([]);
    });

    it("emits a put for an edit and for a new object", async () => {
      const { harness, source, changes } = await started([service("web", "198.19.0.1"), slice("web")]);
      changes.length = 0;
      await harness.put(service("web", "198.19.0.1", 8080));
      const edit = await eventually(() => changes.find((change) => change.key === "svc.demo.web" && change.op === "put"), changeTimeoutMs, "the edit's put");
      expect(edit.op === "put" && firstPort(edit.object)).toBe(8080);
      expect(firstPort(source.snapshot().get("svc.demo.web"))).toBe(8080);

      await harness.put(service("api", "198.19.0.3"));
      await eventually(() => changes.some((change) => change.key === "svc.demo.api" && change.op === "put"), changeTimeoutMs, "the new object's put");
      expect(source.snapshot().has("svc.demo.api")).toBe(true);
      // Nothing else moved.
      expect(changes.filter((change) => change.key !== "svc.demo.web" && change.key !== "svc.demo.api")).toEqual([]);
    });

    it("emits a delete for a removed object and keeps the rest", async () => {
      const { harness, source, changes } = await started([service("web", "198.19.0.1"), slice("web"), service("db", "198.19.0.2")]);
      changes.length = 0;
      await harness.remove("Service", "demo", "db");
      await eventually(() => changes.some((change) => change.key === "svc.demo.db" && change.op === "delete"), changeTimeoutMs, "the delete");
      expect([...source.snapshot().keys()].sort()).toEqual(["eps.demo.web-abc", "svc.demo.web"]);
      expect(changes).toEqual([{ op: "delete", key: "svc.demo.db" }]);
    });

    it("rejects an invalid object with its field path and keeps the rest", async () => {
      const { harness, source, rejections } = await started([service("web", "198.19.0.1"), slice("web")]);
      await harness.put(service("bad", "198.19.0.9", 99_999));
      const rejection = await eventually(() => rejections.find((entry) => entry.object === "Service demo/bad"), changeTimeoutMs, "the rejection");
      expect(rejection.field).toBe("spec.ports[0].port");
      expect(rejection.message).toMatch(/must be 1 to 65535/);
      expect(rejection.source).toBe(source.name);
      expect([...source.snapshot().keys()].sort()).toEqual(["eps.demo.web-abc", "svc.demo.web"]);
    });

    it("keeps the previous version of an object whose edit is invalid, and takes the fixed one", async () => {
      const { harness, source, changes, rejections } = await started([service("web", "198.19.0.1"), slice("web")]);
      changes.length = 0;
      await harness.put({ ...service("web", "198.19.0.1"), spec: { clusterIP: "198.19.0.500", ports: [{ name: "http", port: 80 }] } });
      const rejection = await eventually(() => rejections.find((entry) => entry.object === "Service demo/web"), changeTimeoutMs, "the rejection");
      expect(rejection.field).toBe("spec.clusterIP");
      expect(firstPort(source.snapshot().get("svc.demo.web"))).toBe(80);
      expect(changes).toEqual([]);

      await harness.put(service("web", "198.19.0.1", 81));
      await eventually(() => firstPort(source.snapshot().get("svc.demo.web")) === 81, changeTimeoutMs, "the fixed version");
      expect(changes.map((change) => `${change.op} ${change.key}`)).toEqual(["put svc.demo.web"]);
    });

    it("reports a refused object once, and emits nothing when it reads its unchanged input again", async () => {
      const { harness, source, changes, rejections } = await started([service("web", "198.19.0.1"), slice("web"), service("bad", "198.19.0.9", 0)]);
      expect(rejections.map((entry) => entry.object)).toEqual(["Service demo/bad"]);
      changes.length = 0;
      await harness.reread();
      await harness.reread();
      expect(rejections.map((entry) => entry.object)).toEqual(["Service demo/bad"]);
      expect(changes).toEqual([]);
      expect([...source.snapshot().keys()].sort()).toEqual(["eps.demo.web-abc", "svc.demo.web"]);
    });

    it("stops while it starts: start() resolves, nothing is emitted, no timer is left", async () => {
      const clock = new TimerCountingClock();
      const harness = await makeHarness(clock);
      open.push(harness);
      const changes: CatalogChange[] = [];
      harness.source.onChange((batch) => changes.push(...batch));
      await harness.put(service("web", "198.19.0.1"));
      const starting = harness.source.start();
      await harness.source.stop();
      await starting;
      expect(changes).toEqual([]);
      expect(clock.pending.size, "timers left pending after stop()").toBe(0);
    });

    it("emits nothing after stop()", async () => {
      const { harness, source, changes, rejections, clock } = await started([service("web", "198.19.0.1"), slice("web")]);
      await source.stop();
      expect(clock.pending.size, "timers left pending after stop()").toBe(0);
      const before = new Map(source.snapshot());
      changes.length = 0;
      const rejectionsBefore = rejections.length;
      // A running twin over the same input is the witness: once it shows every change, a source still reading would have too.
      const twin = harness.twin();
      twins.push(twin);
      const twinRejections: CatalogRejection[] = [];
      twin.onReject((rejection) => twinRejections.push(rejection));
      await twin.start();
      await eventually(() => twin.synced, changeTimeoutMs, "the twin to sync");
      await harness.put(service("late", "198.19.0.7"));
      await harness.put(service("bad", "198.19.0.8", 0));
      await harness.remove("Service", "demo", "web");
      await eventually(
        () => twin.snapshot().has("svc.demo.late") && !twin.snapshot().has("svc.demo.web") && twinRejections.some((entry) => entry.object === "Service demo/bad"),
        changeTimeoutMs,
        "the twin to see every change",
      );
      expect(changes).toEqual([]);
      expect(rejections.length).toBe(rejectionsBefore);
      expect(new Map(source.snapshot())).toEqual(before);
    });
  });
}
