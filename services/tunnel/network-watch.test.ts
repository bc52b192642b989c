/**
 * This host's own addresses, looked at while the tunnel runs (network-watch.ts): what counts as one, what a
 * change is, and a watch that reports each change once, at its next look, stepped on a ManualClock.
 */
import type { NetworkInterfaceInfo } from "node:os";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../lib/clock.ts";
import { addressChange, hostAddresses, NetworkWatch, type AddressChange } from "./network-watch.ts";

const entry = (address: string, family: "IPv4" | "IPv6", internal = false) => ({ address, family, internal, netmask: "", mac: "", cidr: null, scopeid: 0 }) as NetworkInterfaceInfo;

describe("hostAddresses", () => {
  it("lists every interface's addresses a connection can use: not loopback, not IPv6 link-local", () => {
    const interfaces = {
      lo: [entry("127.0.0.1", "IPv4", true), entry("::1", "IPv6", true)],
      eth0: [entry("198.18.65.11", "IPv4"), entry("fe80::1", "IPv6"), entry("fd00:18::b", "IPv6")],
      wwan0: [entry("100.64.3.7", "IPv4")],
    };
    expect(hostAddresses(interfaces)).toEqual(["100.64.3.7", "198.18.65.11", "fd00:18::b"]);
  });
});

describe("addressChange", () => {
  it("says a replaced lease as one address gone and one added, and nothing when nothing changed", () => {
    expect(addressChange(["198.18.65.11"], ["198.18.65.21"])).toEqual({ gone: ["198.18.65.11"], added: ["198.18.65.21"] });
    expect(addressChange(["198.18.65.11", "100.64.3.7"], ["100.64.3.7", "198.18.65.11"])).toBeUndefined();
    expect(addressChange([], ["198.18.80.10"])).toEqual({ gone: [], added: ["198.18.80.10"] });
  });
});

describe("NetworkWatch", () => {
  it("reports a change at its next look, once, and nothing after it stopped", () => {
    const clock = new ManualClock();
    let addresses = ["198.18.65.11"];
    const changes: AddressChange[] = [];
    const watch = new NetworkWatch({ clock, intervalMs: 2_000, addresses: () => addresses, onChange: (change) => changes.push(change) });
    watch.start();
    clock.advance(2_000);
    expect(changes).toEqual([]);
    addresses = ["198.18.65.21"];
    clock.advance(1_999);
    expect(changes).toEqual([]);
    clock.advance(1);
    expect(changes).toEqual([{ gone: ["198.18.65.11"], added: ["198.18.65.21"] }]);
    clock.advance(10_000);
    expect(changes).toHaveLength(1);
    watch.stop();
    addresses = [];
    clock.advance(10_000);
    expect(changes).toHaveLength(1);
    expect(watch.addresses).toEqual(["198.18.65.21"]);
  });
});
