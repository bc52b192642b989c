/** The NAT lab's link shapes (root, network namespaces, tc): a rate on both ends of every shaped link. */
import { describe, expect, it } from "vitest";
import { buildNatLab, shapeCommand } from "./nat.ts";
import { hostNamespace } from "./netns.ts";

describe("NAT lab link shapes", () => {
  it("limits both ends of each site's uplink and each host's LAN link, and leaves the hub's link alone", async () => {
    const nat = await buildNatLab({ prefix: "lmsh-", sites: [{ name: "s1", nat: "port-restricted" }], links: { wan: { rateMbit: 200 }, lan: { rateMbit: 1_000 } } });
    try {
      const qdisc = (namespace: string, device: string) => nat.lab.exec(namespace, ["tc", "qdisc", "show", "dev", device]);
      const site = nat.sites[0];
      expect(await qdisc(site.router, "wan")).toMatch(/tbf .*rate 200Mbit/);
      expect(await qdisc(site.hosts[0].namespace, "eth0")).toMatch(/tbf .*rate 1Gbit/);
      // The host-side ends: every tbf in the host namespace belongs to this lab's links (lmsh-…).
      const hostSide = await nat.lab.exec(hostNamespace, ["tc", "qdisc", "show"]);
      const shapedHere = hostSide.split("\n").filter((line) => line.includes("tbf") && line.includes("lmsh-"));
      expect(shapedHere.filter((line) => line.includes("rate 200Mbit"))).toHaveLength(1);
      expect(shapedHere.filter((line) => line.includes("rate 1Gbit"))).toHaveLength(1);
      expect(await qdisc(nat.hub.namespace, "eth0")).not.toMatch(/tbf/);
    } finally {
      await nat.teardown();
    }
  }, 60_000);

  it("refuses a rate that is not a positive number", () => {
    expect(() => shapeCommand("eth0", { rateMbit: 0 })).toThrow(/rate above 0/);
    expect(() => shapeCommand("eth0", { rateMbit: Number.NaN })).toThrow(/rate above 0/);
    expect(shapeCommand("eth0", { rateMbit: 200 })).toEqual(["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "200mbit", "burst", "256kb", "latency", "20ms"]);
  });
});
