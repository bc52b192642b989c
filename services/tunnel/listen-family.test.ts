/** Which listen addresses a host can bind (listen-family.ts): both families with IPv6, IPv4 alone without. */
import { describe, expect, it } from "vitest";
import { hostHasIPv6, listenForFamilies, tlsListenForFamilies } from "./listen-family.ts";

describe("listen addresses by the host's address families", () => {
  const both = ["/ip4/0.0.0.0/tcp/4101", "/ip6/::/tcp/4101"];

  it("keeps both families on a host with IPv6, and leaves the IPv6 wildcard out on one without", () => {
    expect(listenForFamilies(both, true)).toEqual(both);
    expect(listenForFamilies(both, false)).toEqual(["/ip4/0.0.0.0/tcp/4101"]);
    expect(listenForFamilies(["/ip6/::/tcp/4101"], false), "the wildcard alone becomes its IPv4 twin").toEqual(["/ip4/0.0.0.0/tcp/4101"]);
    expect(listenForFamilies(["/ip6/fd00::5/tcp/4101"], false), "an address the operator named is left to fail loudly").toEqual(["/ip6/fd00::5/tcp/4101"]);
  });

  it("listens for TLS streams on [::] (both families) with IPv6, on 0.0.0.0 without", () => {
    expect(tlsListenForFamilies({ host: "::", port: 4102 }, true)).toEqual({ host: "::", port: 4102 });
    expect(tlsListenForFamilies({ host: "::", port: 4102 }, false)).toEqual({ host: "0.0.0.0", port: 4102 });
    expect(tlsListenForFamilies({ host: "198.18.1.2", port: 4102 }, false)).toEqual({ host: "198.18.1.2", port: 4102 });
  });

  it("tells a host with IPv6 (loopback's ::1 is enough) from one without", () => {
    const v4 = { address: "127.0.0.1", netmask: "255.0.0.0", family: "IPv4" as const, mac: "00:00:00:00:00:00", internal: true, cidr: "127.0.0.1/8" };
    const v6 = { address: "::1", netmask: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", family: "IPv6" as const, mac: "00:00:00:00:00:00", internal: true, cidr: "::1/128", scopeid: 0 };
    expect(hostHasIPv6({ lo: [v4] })).toBe(false);
    expect(hostHasIPv6({ lo: [v4, v6] })).toBe(true);
  });
});
