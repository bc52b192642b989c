/**
 * One suite, both backends (STYLE 15): real iptables and nft in a fresh network
 * namespace each. What goes through the rules is tested end to end in
 * services/traffic/lab.test.ts; here: the rule set the kernel holds.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkLabPrerequisites, createLab, type Lab } from "../../lab/netns.ts";
import type { InterceptBackend } from "./backend.ts";
import { IptablesBackend } from "./iptables.ts";
import { NftablesBackend } from "./nftables.ts";
import type { InterceptRule } from "./rules.ts";

const rule = (i: number, protocol: "TCP" | "UDP" = "TCP"): InterceptRule => ({
  key: `lab/svc-${i}:main/${protocol}`,
  clusterIP: `198.19.${i >> 8}.${i & 255}`,
  port: 80,
  protocol,
  listenHost: "127.0.0.1",
  listenerPort: 40_000 + i,
});
const line = (r: InterceptRule) => `${r.clusterIP}:${r.port}/${r.protocol} -> ${r.listenHost}:${r.listenerPort}`;

const backends: [string, (namespace: string) => InterceptBackend][] = [
  ["iptables", (namespace) => new IptablesBackend({ namespace })],
  ["nftables", (namespace) => new NftablesBackend({ namespace })],
];

describe.each(backends)("interception backend %s", (name, make) => {
  let lab: Lab;
  let namespace: string;
  beforeAll(async () => {
    await checkLabPrerequisites([
      { tool: "iptables-restore", debianPackage: "iptables" },
      { tool: "nft", debianPackage: "nftables" },
    ]);
    lab = await createLab({ prefix: name === "iptables" ? "lmpxi-" : "lmpxf-" });
    namespace = await lab.namespace("ns");
  });
  afterAll(async () => {
    await lab?.teardown();
  });

  it("syncs exactly the given rules, replaces them on change, and removes them all", async () => {
    const backend = make(namespace);
    await backend.prepare();
    expect(await backend.inspect()).toEqual({ rules: [], hooks: 0, guard: true }); // the localnet guard from prepare on
    const first = [rule(1), rule(2), rule(3, "UDP")];
    await backend.sync(first);
    expect(await backend.inspect()).toEqual({ rules: first.map(line).sort(), hooks: 2, guard: true });
    const second = [rule(2), rule(4), rule(5, "UDP")];
    await backend.sync(second);
    await backend.sync(second); // a repeat changes nothing, adds no second hook
    expect(await backend.inspect()).toEqual({ rules: second.map(line).sort(), hooks: 2, guard: true });
    await backend.sync([]);
    expect(await backend.inspect()).toEqual({ rules: [], hooks: 2, guard: true });
    await backend.remove();
    expect(await backend.inspect()).toEqual({ rules: [], hooks: 0, guard: false });
  });

  it("a new instance after a crash removes the leftovers and leaves exactly one set", async () => {
    const crashed = make(namespace);
    await crashed.prepare();
    await crashed.sync([rule(7), rule(8)]);
    const next = make(namespace);
    await next.prepare();
    expect(await next.inspect()).toEqual({ rules: [], hooks: 0, guard: true });
    await next.sync([rule(9)]);
    expect(await next.inspect()).toEqual({ rules: [line(rule(9))], hooks: 2, guard: true });
    await next.remove();
  });

  it("leaves other rules of the same table alone", async () => {
    const backend = make(namespace);
    await backend.prepare();
    await lab.exec(namespace, ["iptables", "-t", "nat", "-A", "OUTPUT", "-d", "198.18.9.9/32", "-j", "ACCEPT"]);
    await backend.sync([rule(1)]);
    await backend.remove();
    expect(await lab.exec(namespace, ["iptables-save", "-t", "nat"])).toContain("-A OUTPUT -d 198.18.9.9/32 -j ACCEPT");
    await lab.exec(namespace, ["iptables", "-t", "nat", "-D", "OUTPUT", "-d", "198.18.9.9/32", "-j", "ACCEPT"]);
  });

  it("leaves other rules of the filter table alone, and keeps one guard through repeated prepares", async () => {
    const backend = make(namespace);
    await lab.exec(namespace, ["iptables", "-A", "INPUT", "-s", "198.18.9.9/32", "-j", "ACCEPT"]);
    await backend.prepare();
    await backend.prepare();
    const filter = await lab.exec(namespace, ["iptables-save", "-t", "filter"]);
    expect(filter.split("\n").filter((text) => text === "-A INPUT -j LEAFMESH-LOCALNET")).toHaveLength(name === "iptables" ? 1 : 0);
    if (name === "nftables") expect((await lab.exec(namespace, ["nft", "list", "tables"])).match(/leafmesh-localnet/g)).toHaveLength(1);
    await backend.remove();
    expect(await lab.exec(namespace, ["iptables-save", "-t", "filter"])).toContain("-A INPUT -s 198.18.9.9/32 -j ACCEPT");
    expect(await backend.inspect()).toEqual({ rules: [], hooks: 0, guard: false });
    await lab.exec(namespace, ["iptables", "-D", "INPUT", "-s", "198.18.9.9/32", "-j", "ACCEPT"]);
  });

  it("IPv6: its guard from prepare, rules of both families, a refused IPv6 port, a crashed run's IPv6 rules gone when IPv6 is no longer wanted", async () => {
    const v6 = (i: number, protocol: "TCP" | "UDP" = "TCP", refused = false): InterceptRule => ({
      key: `lab/v6-${i}:main/${protocol}`,
      clusterIP: `fd00:99::${i.toString(16)}`,
      port: 80,
      protocol,
      listenHost: protocol === "TCP" ? `fd1e:af3e:5400::100:${i.toString(16)}` : "fd1e:af3e:5400::1",
      listenerPort: 40_000 + i,
      ...(refused ? { refused } : {}),
    });
    const backend = make(namespace);
    expect(await backend.prepare({ ipv6: true })).toEqual({ ipv6: true });
    expect(await backend.inspect()).toEqual({ rules: [], hooks: 0, guard: true, ipv6: { hooks: 0, guard: true } });
    await backend.sync([rule(1), v6(1), v6(2, "UDP"), v6(3, "UDP", true)]);
    expect(await backend.inspect()).toEqual({
      rules: [line(rule(1)), "[fd00:99::1]:80/TCP -> [fd1e:af3e:5400::100:1]:40001", "[fd00:99::2]:80/UDP -> [fd1e:af3e:5400::1]:40002", "[fd00:99::3]:80/UDP -> refused"],
      hooks: 2,
      guard: true,
      ipv6: { hooks: 2, guard: true },
    });
    // A run killed here; the next one wants no IPv6 (disabled since): nothing of IPv6 stays.
    const next = make(namespace);
    expect(await next.prepare()).toEqual({ ipv6: false });
    expect(await next.inspect()).toEqual({ rules: [], hooks: 0, guard: true });
    await next.remove();
    expect(await next.inspect()).toEqual({ rules: [], hooks: 0, guard: false });
  });

  it("syncs 10,000 services in one transaction", async () => {
    const backend = make(namespace);
    await backend.prepare();
    const many = Array.from({ length: 10_000 }, (_, i) => rule(i + 1, i % 2 === 0 ? "TCP" : "UDP"));
    await backend.sync(many);
    const state = await backend.inspect();
    expect(state.rules.length).toBe(10_000);
    expect(state.hooks).toBe(2);
    await backend.remove();
    expect((await backend.inspect()).rules.length).toBe(0);
  });
});
