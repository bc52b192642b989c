/**
 * The proxier actor with its real neighbours: a real nats-server as bus, the real
 * traffic actor publishing its listener ports there, and real nft/iptables in a
 * network namespace (the actor runs the tools inside it).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Bus } from "../../bus/bus.ts";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import type { MeshEventPayload } from "../../bus/events.ts";
import { checkLabPrerequisites, createLab, type Lab } from "../../lab/netns.ts";
import { silentLogger } from "../../lib/log.ts";
import { eventually, freePort } from "../../test/support/ports.ts";
import { createTrafficActor, type TrafficActor } from "../traffic/index.ts";
import { deleteService, putService } from "../../test/support/traffic-catalog.ts";
import { createProxierActor, type ProxierActor } from "./actor.ts";
import { busListenerSource } from "./listener-source.ts";
import { registerProxierMetrics } from "./metrics.ts";
import { Registry } from "prom-client";

const tcp80 = [{ name: "main", protocol: "TCP" as const, port: 80, targetPort: 8080 }];

describe("proxier actor", () => {
  let lab: Lab;
  let namespace: string;
  let nats: ChildProcess;
  let connection: NatsConnection;
  let bus: Bus;

  beforeAll(async () => {
    await checkLabPrerequisites([
      { tool: "nft", debianPackage: "nftables" },
      { tool: "iptables-restore", debianPackage: "iptables" },
      { tool: "nats-server", debianPackage: "nats-server" },
    ]);
    lab = await createLab({ prefix: "lmpxp-" });
    namespace = await lab.namespace("ns");
    const port = await freePort();
    nats = spawn("nats-server", ["-p", String(port), "-a", "127.0.0.1"], { stdio: "ignore" });
    connection = await eventually(() => connect({ servers: `nats://127.0.0.1:${port}`, reconnect: false }), 10_000, "nats-server");
    bus = new Bus({ connection, node: "edge-a", log: silentLogger() });
  });
  afterAll(async () => {
    bus?.close();
    await connection?.close();
    nats?.kill("SIGKILL");
    await lab?.teardown();
  });

  describe.each(["nftables", "iptables"] as const)("over the bus with %s", (intercept) => {
    let feed: IndexFeed;
    let traffic: TrafficActor;
    let proxier: ProxierActor;
    const events: MeshEventPayload<"rules">[] = [];

    beforeAll(async () => {
      bus.subscribe({ actor: "proxier", event: "rules" }, ({ payload }) => events.push(payload));
      feed = new IndexFeed();
      putService(feed, { name: "a", clusterIP: "198.19.1.1", ports: tcp80, endpoints: [{ ip: "198.18.5.1" }] });
      // "z-clash" claims a's cluster IP and port: it loses (sorted after "a").
      putService(feed, { name: "z-clash", clusterIP: "198.19.1.1", ports: tcp80, endpoints: [{ ip: "198.18.5.2" }] });
      putService(feed, { name: "c", clusterIP: "198.19.1.2", ports: [{ name: "dns", protocol: "UDP", port: 53, targetPort: 53 }], endpoints: [{ ip: "198.18.5.3" }] });
      putService(feed, { name: "n", clusterIP: "198.19.1.3", ports: tcp80, endpoints: [{ ip: "198.18.5.4" }], labels: { "service.leafmesh.io/noproxy": "" } });
      const listeners = busListenerSource(bus);
      proxier = createProxierActor({ bus, feed, log: silentLogger(), intercept, listeners, namespace, retryMs: 200 });
      traffic = createTrafficActor({ bus, feed, log: silentLogger(), node: "edge-a", pageSize: 1 });
      await proxier.start();
      await traffic.start();
    });
    afterAll(async () => {
      await traffic?.stop();
      await proxier?.stop();
    });

    const ruleFor = (key: string) => {
      const binding = traffic.listeners().find((candidate) => candidate.key === key)!;
      return `${binding.clusterIPs[0]}:${binding.port}/${binding.protocol} -> ${binding.listenerHost}:${binding.listenerPort}`;
    };

    it("installs a rule per proxied service port from traffic's paged listener events, reports a clash, and publishes each sync", async () => {
      await eventually(() => events.some((event) => event.services === 2 && event.backend === intercept), 10_000, "a rules event for 2 services");
      expect(await proxier.inspect()).toEqual({ rules: [ruleFor("lab/a:main/TCP"), ruleFor("lab/c:dns/UDP")].sort(), hooks: 2, guard: true, ipv6: { hooks: 2, guard: true } });
      const clashes = proxier.stats().clashes;
      expect(clashes).toHaveLength(1);
      expect(clashes[0].error).toBe("lab/z-clash:main/TCP claims 198.19.1.1:80/TCP, already taken by lab/a:main/TCP: lab/z-clash:main/TCP is not intercepted there (fix the Services' clusterIP or port)");
      expect(proxier.actor.getSnapshot().value).toBe("synced");
      expect(await proxier.routes()).toEqual(["198.19.1.1", "198.19.1.2"]); // each intercepted cluster IP routed on lo (routes.ts)
      const registry = new Registry();
      registerProxierMetrics(registry, proxier);
      const text = await registry.metrics();
      expect(text).toContain("leafmesh_proxier_rules 2");
      expect(text).toContain("leafmesh_proxier_clashes 1");
    });

    it("follows the catalog: a removed service frees its cluster IP for the other claimant, a noproxy label removes a rule", async () => {
      deleteService(feed, "lab", "a");
      putService(feed, { name: "c", clusterIP: "198.19.1.2", ports: [{ name: "dns", protocol: "UDP", port: 53, targetPort: 53 }], endpoints: [{ ip: "198.18.5.3" }], labels: { "service.leafmesh.io/noproxy": "" } });
      await eventually(async () => {
        const state = await proxier.inspect();
        return state.rules.length === 1 && state.rules[0] === ruleFor("lab/z-clash:main/TCP");
      }, 10_000, "only z-clash's rule");
      await eventually(() => proxier.stats().clashes.length === 0, 5000, "no clash left");
    });

    it("removes everything on stop", async () => {
      await traffic.stop();
      await proxier.stop();
      expect(await proxier.inspect()).toEqual({ rules: [], hooks: 0, guard: false });
      expect(await proxier.routes()).toEqual([]);
      expect(proxier.actor.getSnapshot().value).toBe("stopped");
    });
  });

  it("a proxier started after traffic gets the listener set at once (rpc), not at the next periodic publish", async () => {
    const feed = new IndexFeed();
    putService(feed, { name: "late", clusterIP: "198.19.2.1", ports: tcp80, endpoints: [{ ip: "198.18.5.1" }] });
    const traffic = createTrafficActor({ bus, feed, log: silentLogger(), node: "edge-a", republishMs: 3_600_000 });
    await traffic.start();
    const listeners = busListenerSource(bus);
    const proxier = createProxierActor({ bus, feed, log: silentLogger(), intercept: "nftables", listeners, namespace });
    try {
      await proxier.start();
      await eventually(async () => (await proxier.inspect()).rules.length === 1, 10_000, "the late proxier's rule");
    } finally {
      await traffic.stop();
      await proxier.stop();
      listeners.close();
    }
    expect(await proxier.inspect()).toEqual({ rules: [], hooks: 0, guard: false });
  });

  it("under churn syncs at most once per minSyncMs, every change in; a change after a quiet spell goes in at once", async () => {
    const feed = new IndexFeed();
    putService(feed, { name: "first", clusterIP: "198.19.4.250", ports: tcp80, endpoints: [{ ip: "198.18.5.1" }] });
    const traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a" });
    await traffic.start();
    const minSyncMs = 2_500;
    const proxier = createProxierActor({ feed, log: silentLogger(), intercept: "nftables", listeners: traffic, namespace, minSyncMs });
    try {
      await proxier.start();
      await eventually(() => proxier.stats().syncs === 1, 10_000, "the first sync");
      // 40 services, one every 10 ms: without the gap each sync ran again at once, nft and ip each time (~15 syncs here).
      const before = proxier.stats().syncs;
      for (let index = 0; index < 40; index++) {
        putService(feed, { name: `churn-${index}`, clusterIP: `198.19.4.${index + 1}`, ports: tcp80, endpoints: [{ ip: "198.18.5.1" }] });
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await eventually(async () => (await proxier.inspect()).rules.length === 41, 10_000, "every churned service's rule");
      expect(proxier.stats().syncs - before).toBeLessThanOrEqual(2);
      // Quiet for longer than the gap: the next change waits for nothing.
      await new Promise((resolve) => setTimeout(resolve, minSyncMs + 200));
      const changed = Date.now();
      putService(feed, { name: "after-quiet", clusterIP: "198.19.4.200", ports: tcp80, endpoints: [{ ip: "198.18.5.1" }] });
      await eventually(async () => (await proxier.inspect()).rules.length === 42, 10_000, "the rule of the change after the quiet spell");
      expect(Date.now() - changed).toBeLessThan(minSyncMs);
      // A stop while changes wait for the gap removes everything, and no sync runs after it.
      putService(feed, { name: "during-stop", clusterIP: "198.19.4.201", ports: tcp80, endpoints: [{ ip: "198.18.5.1" }] });
      await eventually(() => proxier.actor.getSnapshot().value === "pausing", 5_000, "the change waiting for the gap");
      await proxier.stop();
      await new Promise((resolve) => setTimeout(resolve, minSyncMs));
      expect(await proxier.inspect()).toEqual({ rules: [], hooks: 0, guard: false });
    } finally {
      await traffic.stop();
      await proxier.stop();
    }
  });

  it("retries a failed sync and recovers when the kernel side is back", async () => {
    const ns = await lab.namespace("gone");
    const feed = new IndexFeed();
    putService(feed, { name: "r", clusterIP: "198.19.3.1", ports: tcp80, endpoints: [{ ip: "198.18.5.1" }] });
    const traffic = createTrafficActor({ feed, log: silentLogger(), node: "edge-a" });
    await traffic.start();
    const proxier = createProxierActor({ feed, log: silentLogger(), intercept: "iptables", listeners: traffic, namespace: ns, retryMs: 100 });
    try {
      await proxier.start();
      await eventually(() => proxier.stats().syncs === 1, 10_000, "first sync");
      await lab.exec("host", ["ip", "netns", "delete", ns]); // the namespace (our stand-in for a broken kernel side) goes away
      putService(feed, { name: "r2", clusterIP: "198.19.3.2", ports: tcp80, endpoints: [{ ip: "198.18.5.1" }] });
      await eventually(() => proxier.stats().failures >= 2, 10_000, "failed syncs being retried");
      expect(proxier.actor.getSnapshot().value).toMatch(/retrying|syncing/);
      expect(proxier.stats().lastError).toContain("Cannot open network namespace");
      await lab.exec("host", ["ip", "netns", "add", ns]);
      await lab.exec("host", ["ip", "-n", ns, "link", "set", "lo", "up"]); // a fresh namespace's lo is down: no route (routes.ts) can go on it
      await eventually(() => proxier.actor.getSnapshot().value === "synced", 10_000, "recovery");
      expect((await proxier.inspect()).rules).toHaveLength(2);
    } finally {
      await traffic.stop();
      await proxier.stop();
    }
    expect(await proxier.inspect()).toEqual({ rules: [], hooks: 0, guard: false });
  });

  it("a missing tool fails start with the Debian package named, and intercept off installs nothing", async () => {
    const bare = mkdtempSync(join(tmpdir(), "lmpx-path-"));
    symlinkSync("/bin/sh", join(bare, "sh"));
    const path = process.env.PATH;
    process.env.PATH = bare;
    const feed = new IndexFeed();
    const listeners = { onListeners: () => () => undefined };
    try {
      const proxier = createProxierActor({ feed, log: silentLogger(), intercept: "nftables", listeners });
      await expect(proxier.start()).rejects.toThrow("--intercept nftables needs nft, which is not installed: apt-get install -y nftables (or run with --intercept off)");
      expect(proxier.actor.getSnapshot().value).toBe("failed");
      await proxier.stop();
      const iptables = createProxierActor({ feed, log: silentLogger(), intercept: "iptables", listeners });
      await expect(iptables.start()).rejects.toThrow("apt-get install -y iptables");
      await iptables.stop();
    } finally {
      process.env.PATH = path;
      rmSync(bare, { recursive: true, force: true });
    }
    const off = createProxierActor({ feed, log: silentLogger(), intercept: "off", listeners });
    await off.start();
    expect(off.actor.getSnapshot().value).toBe("off");
    expect(await off.inspect()).toEqual({ rules: [], hooks: 0, guard: false });
    await off.stop();
  });
});
