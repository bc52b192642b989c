import { describe, expect, it } from "vitest";
import { changedUdpTargets } from "./conntrack.ts";
import { buildRules, iptablesCleanupInput, iptablesRestoreInput, nftInput, type InterceptRule } from "./rules.ts";

const binding = (key: string, clusterIPs: string[], port: number, protocol: "TCP" | "UDP", listenerPort: number) => ({ key, clusterIPs, port, protocol, listenerPort });

describe("rules", () => {
  it("builds one rule per IPv4 cluster IP, reports clashes by key order, skips IPv6 when not asked for it", () => {
    const { rules, clashes } = buildRules(
      [binding("b/x:p/TCP", ["198.19.0.1"], 80, "TCP", 40001), binding("a/x:p/TCP", ["198.19.0.1", "fd00::1"], 80, "TCP", 40002), binding("a/x:d/UDP", ["198.19.0.1"], 80, "UDP", 40003)],
      { listenHost: "127.0.0.1" },
    );
    expect(rules.map((rule) => `${rule.key} ${rule.clusterIP}:${rule.port}/${rule.protocol} ${rule.listenerPort}`)).toEqual(["a/x:d/UDP 198.19.0.1:80/UDP 40003", "a/x:p/TCP 198.19.0.1:80/TCP 40002"]);
    expect(clashes).toEqual([expect.objectContaining({ kept: "a/x:p/TCP", dropped: "b/x:p/TCP" })]);
  });

  it("IPv6: a rule per IPv6 cluster IP to the binding's IPv6 listener, in one spelling; a zone, a foreign listener or leafmesh's own prefix get none", () => {
    const v6 = (key: string, clusterIPs: string[], listenerHost6: string | undefined, refused = false) => ({
      ...binding(key, clusterIPs, 53, "UDP", 40001),
      ...(listenerHost6 ? { listenerHost6, listenerPort6: 40101 } : {}),
      ...(refused ? { refused } : {}),
    });
    const bindings = [
      v6("a/dual:d/UDP", ["198.19.0.1", "FD00:0:0::0010"], "fd1e:af3e:5400::1"),
      v6("a/same:d/UDP", ["fd00::10"], "fd1e:af3e:5400::1"), // the same address spelled otherwise: a clash, not a second map element
      v6("a/zone:d/UDP", ["fe80::1%eth0"], "fd1e:af3e:5400::1"),
      v6("a/mapped:d/UDP", ["::ffff:198.19.0.9"], "fd1e:af3e:5400::1"),
      v6("a/nosocket:d/UDP", ["fd00::11"], undefined),
      v6("a/foreign:d/UDP", ["fd00::12"], "::1"),
      v6("a/own:d/UDP", ["fd1e:af3e:5400::100:9"], "fd1e:af3e:5400::1"),
      v6("a/quiet:d/UDP", ["fd00::13"], "fd1e:af3e:5400::1", true),
    ];
    const { rules, clashes } = buildRules(bindings, { listenHost: "127.0.0.1", ipv6: true });
    expect(rules.map((rule) => `${rule.key} ${rule.clusterIP} -> ${rule.listenHost}:${rule.listenerPort}${rule.refused ? " refused" : ""}`)).toEqual([
      "a/dual:d/UDP 198.19.0.1 -> 127.0.0.1:40001",
      "a/dual:d/UDP fd00::10 -> fd1e:af3e:5400::1:40101",
      "a/quiet:d/UDP fd00::13 -> fd1e:af3e:5400::1:40101 refused",
    ]);
    expect(clashes).toEqual([expect.objectContaining({ clusterIP: "fd00::10", kept: "a/dual:d/UDP", dropped: "a/same:d/UDP" })]);
    expect(buildRules(bindings, { listenHost: "127.0.0.1" }).rules.map((rule) => rule.clusterIP)).toEqual(["198.19.0.1"]);
    // Each family's text holds only its own rules; a refused IPv6 port goes where the kernel answers port unreachable.
    expect(iptablesRestoreInput(rules, 6)).toBe(
      [
        "*nat",
        ":LEAFMESH-SERVICES - [0:0]",
        '-A LEAFMESH-SERVICES -d fd00::10/128 -p udp -m udp --dport 53 -m comment --comment "a/dual:d/UDP" -j DNAT --to-destination [fd1e:af3e:5400::1]:40101',
        '-A LEAFMESH-SERVICES -d fd00::13/128 -p udp -m udp --dport 53 -m comment --comment "a/quiet:d/UDP has no endpoints" -j DNAT --to-destination [fd1e:af3e:5400::2]:40101',
        "COMMIT",
        "*filter",
        ":LEAFMESH-REJECT - [0:0]",
        "COMMIT",
        "",
      ].join("\n"),
    );
    expect(iptablesRestoreInput(rules)).not.toContain("fd00");
    const nft = nftInput(rules, 6);
    expect(nft).toContain("table ip6 leafmesh {");
    expect(nft).toContain("map udp_services { type ipv6_addr . inet_service : ipv6_addr . inet_service; elements = { fd00::10 . 53 : fd1e:af3e:5400::1 . 40101, fd00::13 . 53 : fd1e:af3e:5400::2 . 40101 } }");
    expect(nft).toContain("meta l4proto udp dnat ip6 to ip6 daddr . udp dport map @udp_services");
    expect(nftInput(rules)).not.toContain("fd00");
  });

  it("changed UDP targets of IPv6 cluster IPs keep their whole address", () => {
    const rule = (clusterIP: string, listenerPort: number): InterceptRule => ({ key: "a/x:d/UDP", clusterIP, port: 53, protocol: "UDP", listenHost: "fd1e:af3e:5400::1", listenerPort });
    expect(changedUdpTargets([rule("fd00::10", 1), rule("fd00::11", 1)], [rule("fd00::10", 2), rule("fd00::11", 1)])).toEqual([{ clusterIP: "fd00::10", port: 53 }]);
  });

  it("sends a binding to its own listener address when it names one (the shared TCP listener), and never writes anything but an IPv4 address", () => {
    const { rules } = buildRules(
      [
        { ...binding("a/x:p/TCP", ["198.19.0.1"], 80, "TCP", 40001), listenerHost: "127.128.0.7" },
        { ...binding("a/y:p/TCP", ["198.19.0.2"], 80, "TCP", 40001), listenerHost: "127.0.0.1 } ; flush ruleset ; {" },
        binding("a/z:p/UDP", ["198.19.0.3"], 53, "UDP", 40002),
      ],
      { listenHost: "127.0.0.1" },
    );
    expect(rules.map((rule) => `${rule.clusterIP}:${rule.port} -> ${rule.listenHost}:${rule.listenerPort}`)).toEqual(["198.19.0.1:80 -> 127.128.0.7:40001", "198.19.0.3:53 -> 127.0.0.1:40002"]);
  });

  it("renders iptables-restore and nft inputs, and a cleanup that touches only our chains", () => {
    const rules: InterceptRule[] = [{ key: "a/x:p/TCP", clusterIP: "198.19.0.1", port: 80, protocol: "TCP", listenHost: "127.0.0.1", listenerPort: 40001 }];
    expect(iptablesRestoreInput(rules)).toBe(
      '*nat\n:LEAFMESH-SERVICES - [0:0]\n-A LEAFMESH-SERVICES -d 198.19.0.1/32 -p tcp -m tcp --dport 80 -m comment --comment "a/x:p/TCP" -j DNAT --to-destination 127.0.0.1:40001\nCOMMIT\n*filter\n:LEAFMESH-REJECT - [0:0]\nCOMMIT\n',
    );
    expect(nftInput(rules)).toContain("map tcp_services { type ipv4_addr . inet_service : ipv4_addr . inet_service; elements = { 198.19.0.1 . 80 : 127.0.0.1 . 40001 } }");
    const dump = ["*nat", ":OUTPUT ACCEPT [0:0]", ":LEAFMESH-SERVICES - [0:0]", ":DOCKER - [0:0]", "-A OUTPUT -j LEAFMESH-SERVICES", "-A OUTPUT -j DOCKER", "-A PREROUTING -j LEAFMESH-SERVICES", "-A LEAFMESH-SERVICES -d 1.2.3.4/32 -j DNAT", "COMMIT"].join("\n");
    expect(iptablesCleanupInput(dump)).toBe("*nat\n-D OUTPUT -j LEAFMESH-SERVICES\n-D PREROUTING -j LEAFMESH-SERVICES\n-F LEAFMESH-SERVICES\n-X LEAFMESH-SERVICES\nCOMMIT\n");
    expect(iptablesCleanupInput("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j DOCKER\nCOMMIT\n")).toBeNull();
    const filter = ["*filter", ":INPUT ACCEPT [0:0]", ":LEAFMESH-LOCALNET - [0:0]", "-A INPUT -j LEAFMESH-LOCALNET", "-A INPUT -j KUBE-FIREWALL", "-A LEAFMESH-LOCALNET ! -s 127.0.0.0/8 -d 127.0.0.0/8 -j DROP", "COMMIT"].join("\n");
    expect(iptablesCleanupInput(filter, "filter")).toBe("*filter\n-D INPUT -j LEAFMESH-LOCALNET\n-F LEAFMESH-LOCALNET\n-X LEAFMESH-LOCALNET\nCOMMIT\n");
  });

  it("rejects a refused UDP service port (no endpoints) in the filter table instead of DNATing it", () => {
    const { rules } = buildRules([{ ...binding("a/q:dns/UDP", ["198.19.0.4"], 53, "UDP", 40003), refused: true }, { ...binding("a/t:p/TCP", ["198.19.0.5"], 80, "TCP", 40004), refused: true }], { listenHost: "127.0.0.1" });
    expect(rules.map((rule) => rule.refused === true)).toEqual([true, false]); // TCP is refused by its listener, with an RST
    const input = iptablesRestoreInput(rules);
    expect(input).not.toContain("198.19.0.4/32 -p udp -m udp --dport 53 -m comment --comment \"a/q:dns/UDP\" -j DNAT");
    expect(input).toContain('*filter\n:LEAFMESH-REJECT - [0:0]\n-A LEAFMESH-REJECT -d 198.19.0.4/32 -p udp -m udp --dport 53 -m comment --comment "a/q:dns/UDP has no endpoints" -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n');
    const nft = nftInput(rules);
    expect(nft).toContain("map udp_services { type ipv4_addr . inet_service : ipv4_addr . inet_service; }");
    expect(nft).toContain("set udp_refused { type ipv4_addr . inet_service; elements = { 198.19.0.4 . 53 } }");
    // Going from a listener to refused (or back) is a changed mapping: its conntrack entries are cleared.
    const udp: InterceptRule = { key: "a/q:dns/UDP", clusterIP: "198.19.0.4", port: 53, protocol: "UDP", listenHost: "127.0.0.1", listenerPort: 40003 };
    expect(changedUdpTargets([udp], [{ ...udp, refused: true }])).toEqual([{ clusterIP: "198.19.0.4", port: 53 }]);
  });

  it("finds the UDP mappings whose conntrack entries went stale", () => {
    const udp = (ip: string, listenerPort: number): InterceptRule => ({ key: ip, clusterIP: ip, port: 53, protocol: "UDP", listenHost: "127.0.0.1", listenerPort });
    const tcp: InterceptRule = { ...udp("198.19.0.9", 1), protocol: "TCP" };
    expect(changedUdpTargets([], [udp("198.19.0.1", 1), tcp])).toEqual([{ clusterIP: "198.19.0.1", port: 53 }]);
    expect(changedUdpTargets([udp("198.19.0.1", 1), udp("198.19.0.2", 2)], [udp("198.19.0.1", 1), udp("198.19.0.2", 3), udp("198.19.0.3", 4)])).toEqual([
      { clusterIP: "198.19.0.2", port: 53 },
      { clusterIP: "198.19.0.3", port: 53 },
    ]);
    expect(changedUdpTargets([udp("198.19.0.1", 1)], [])).toEqual([{ clusterIP: "198.19.0.1", port: 53 }]);
  });
});
