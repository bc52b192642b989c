/**
 * The localnet guard, as an attacker on the node's LAN meets it (CVE-2020-8558,
 * which kube-proxy answers with the same rule). The proxier turns
 * net.ipv4.conf.all.route_localnet on, so that cluster IPs can be DNATed to
 * loopback listeners from PREROUTING; with it on and nothing else, the kernel
 * accepts packets from the network addressed to 127.0.0.0/8. A neighbour that
 * routes 127.0.0.0/8 to the node then reaches whatever the node keeps on
 * loopback: here the node's own nats-server, as an agent runs it.
 *
 * Lab: namespace "node" (nats-server on 127.0.0.1:4222, the proxier with each
 * backend) and namespace "lan" (the neighbour: its own loopback route removed,
 * 127.0.0.0/8 and the cluster IPs routed to the node), joined by a veth pair.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IndexFeed } from "../../bus/catalog-feed.ts";
import type { ListenerBinding } from "../../bus/events.ts";
import { checkLabPrerequisites, createLab, type Lab } from "../../lab/netns.ts";
import { silentLogger } from "../../lib/log.ts";
import { putService } from "../../test/support/traffic-catalog.ts";
import { eventually } from "../../test/support/ports.ts";
import { createProxierActor } from "./actor.ts";

const natsPort = 4222;
const clusterIP = "198.19.9.1";

describe("the localnet guard against a neighbour on the LAN", () => {
  let lab: Lab;
  let node: string;
  let lan: string;

  /** What the neighbour reads from host:port within 2 s: nats-server's INFO line, or "" when it cannot connect. */
  const neighbourReads = async (host: string, port: number) => {
    const result = await lab.run(lan, ["socat", "-T", "2", "-u", `TCP:${host}:${port},connect-timeout=2`, "-"], { timeoutMs: 5_000 });
    return result.stdout;
  };
  const routeLocalnet = async () => (await lab.exec(node, ["sysctl", "-n", "net.ipv4.conf.all.route_localnet"])).trim();

  beforeAll(async () => {
    await checkLabPrerequisites([
      { tool: "nft", debianPackage: "nftables" },
      { tool: "iptables-restore", debianPackage: "iptables" },
      { tool: "nats-server", debianPackage: "nats-server" },
      { tool: "socat", debianPackage: "socat" },
    ]);
    lab = await createLab({ prefix: "lmlng-" });
    node = await lab.namespace("node");
    lan = await lab.namespace("lan");
    await lab.veth({ a: node, b: lan, nameA: "eth0", nameB: "eth0", addressA: "198.18.61.1/24", addressB: "198.18.61.2/24" });
    // The neighbour sends 127.0.0.0/8 out to the node: its own loopback routes and address go, and its kernel lets it.
    await lab.exec(lan, ["ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"]);
    await lab.exec(lan, ["ip", "address", "del", "127.0.0.1/8", "dev", "lo"]);
    await lab.exec(lan, ["sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf.eth0.route_localnet=1"]);
    await lab.route(lan, "127.0.0.0/8", { via: "198.18.61.1" });
    await lab.route(lan, "198.19.0.0/16", { via: "198.18.61.1" });
    const nats = lab.spawn(node, ["nats-server", "-a", "127.0.0.1", "-p", String(natsPort)]);
    nats.stdout?.resume();
    nats.stderr?.resume();
    await eventually(async () => (await lab.run(node, ["socat", "-T", "1", "-u", `TCP:127.0.0.1:${natsPort}`, "-"])).stdout.startsWith("INFO"), 10_000, "nats-server on the node's loopback");
  });
  afterAll(async () => {
    await lab?.teardown();
  });

  it("without route_localnet the neighbour cannot reach the node's loopback (the kernel's martian check)", async () => {
    expect(await routeLocalnet()).toBe("0");
    expect(await neighbourReads("127.0.0.1", natsPort)).toBe("");
  });

  describe.each(["nftables", "iptables"] as const)("with %s", (intercept) => {
    it("route_localnet on: the cluster IP's DNAT to loopback works from the LAN, loopback itself stays closed to it; stop puts route_localnet back off", async () => {
      const feed = new IndexFeed();
      putService(feed, { name: "a", clusterIP, ports: [{ name: "main", protocol: "TCP", port: 80, targetPort: 8080 }], endpoints: [{ ip: "198.18.5.1" }] });
      // A listener binding as traffic publishes it, pointing the cluster IP at the loopback nats-server: the DNAT path a pod's connection takes.
      const bindings: ListenerBinding[] = [{ key: "lab/a:main/TCP", protocol: "TCP", clusterIPs: [clusterIP], port: 80, listenerPort: natsPort }];
      const proxier = createProxierActor({ feed, log: silentLogger(), intercept, listeners: { onListeners: () => () => undefined, listeners: () => bindings }, namespace: node, retryMs: 200 });
      try {
        await proxier.start();
        await eventually(() => proxier.actor.getSnapshot().value === "synced", 10_000, "the cluster IP's rule synced");
        expect(await routeLocalnet()).toBe("1");
        expect(await proxier.inspect()).toMatchObject({ hooks: 2, guard: true });

        expect(await neighbourReads(clusterIP, 80)).toMatch(/^INFO /); // DNATed: the guard lets it through
        expect(await neighbourReads("127.0.0.1", natsPort)).toBe(""); // straight to loopback: dropped

        // The same kernel without the guard is what the rule stands against: the neighbour reads the node's nats-server.
        if (intercept === "nftables") await lab.exec(node, ["nft", "delete", "table", "ip", "leafmesh-localnet"]);
        else await lab.exec(node, ["iptables", "-w", "5", "-D", "INPUT", "-j", "LEAFMESH-LOCALNET"]);
        expect(await neighbourReads("127.0.0.1", natsPort)).toMatch(/^INFO /);
      } finally {
        await proxier.stop();
      }
      expect(await proxier.inspect()).toEqual({ rules: [], hooks: 0, guard: false });
      expect(await routeLocalnet()).toBe("0");
      expect(await neighbourReads("127.0.0.1", natsPort)).toBe("");
    });
  });

  it("a restart after a crash keeps the guard in and still puts route_localnet back off at its stop", async () => {
    const feed = new IndexFeed();
    const listeners = { onListeners: () => () => undefined };
    const crashed = createProxierActor({ feed, log: silentLogger(), intercept: "nftables", listeners, namespace: node });
    await crashed.start(); // then never stopped: its guard and route_localnet=1 stay, as after kill -9
    expect(await routeLocalnet()).toBe("1");
    expect(await neighbourReads("127.0.0.1", natsPort)).toBe("");
    const next = createProxierActor({ feed, log: silentLogger(), intercept: "nftables", listeners, namespace: node });
    await next.start();
    expect((await next.inspect()).guard).toBe(true);
    expect(await neighbourReads("127.0.0.1", natsPort)).toBe("");
    await next.stop();
    expect(await routeLocalnet()).toBe("0");
    expect(await next.inspect()).toEqual({ rules: [], hooks: 0, guard: false });
  });

  it("route_localnet found on (another component's) is left on at stop", async () => {
    await lab.exec(node, ["sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1"]);
    const proxier = createProxierActor({ feed: new IndexFeed(), log: silentLogger(), intercept: "iptables", listeners: { onListeners: () => () => undefined }, namespace: node });
    await proxier.start();
    expect(await neighbourReads("127.0.0.1", natsPort)).toBe("");
    await proxier.stop();
    expect(await routeLocalnet()).toBe("1");
    await lab.exec(node, ["sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=0"]);
  });
});
