import { describe, expect, it } from "vitest";
import type { NatType } from "../../bus/node-record.ts";
import { natRules, composedNat } from "../../lab/nat.ts";
import { canPunch, classifyNat, punchPlan } from "./nat.ts";

const measured: NatType[] = ["none", "full-cone", "restricted-cone", "port-restricted", "symmetric"];

describe("NAT table", () => {
  it("refuses exactly the pairs docs/nat.md says cannot be punched", () => {
    for (const a of measured) {
      for (const b of measured) {
        const hard = (a === "symmetric" && (b === "symmetric" || b === "port-restricted")) || (b === "symmetric" && (a === "symmetric" || a === "port-restricted"));
        expect(canPunch(a, b), `${a} × ${b}`).toBe(!hard);
        expect(canPunch(a, b)).toBe(canPunch(b, a));
      }
    }
  });

  it("lets the more open side listen and never asks a symmetric NAT to", () => {
    expect(punchPlan("full-cone", "symmetric")).toBe("a-listens");
    expect(punchPlan("symmetric", "restricted-cone")).toBe("b-listens");
    expect(punchPlan("restricted-cone", "full-cone")).toBe("b-listens");
    expect(punchPlan("port-restricted", "port-restricted")).toBe("simultaneous");
    for (const a of measured) for (const b of measured) {
      const plan = punchPlan(a, b);
      if (plan === "a-listens") expect(a).not.toBe("symmetric");
      if (plan === "b-listens") expect(b).not.toBe("symmetric");
      if (plan === "a-listens") expect(["none", "full-cone", "restricted-cone"]).toContain(a);
      if (plan === "b-listens") expect(["none", "full-cone", "restricted-cone"]).toContain(b);
    }
  });

  it("tries an unmeasured side once rather than giving up", () => {
    expect(punchPlan("unknown", "symmetric")).toBe("a-listens");
    expect(punchPlan("unknown", "unknown")).toBe("simultaneous");
  });

  it("classifies measured behaviour", () => {
    const base = { public: false, mappingVaries: false, reachedFromOtherAddress: false, reachedFromOtherPort: false };
    expect(classifyNat({ ...base, public: true, reachedFromOtherAddress: true, reachedFromOtherPort: true })).toBe("none");
    // Its own address behind a stateful firewall (IPv6 without NAT): filtered as the NAT of that filtering.
    expect(classifyNat({ ...base, public: true })).toBe("port-restricted");
    expect(classifyNat({ ...base, public: true, reachedFromOtherPort: true })).toBe("restricted-cone");
    expect(classifyNat({ ...base, mappingVaries: true, reachedFromOtherAddress: true })).toBe("symmetric");
    expect(classifyNat({ ...base, reachedFromOtherAddress: true, reachedFromOtherPort: true })).toBe("full-cone");
    expect(classifyNat({ ...base, reachedFromOtherPort: true })).toBe("restricted-cone");
    expect(classifyNat(base)).toBe("port-restricted");
  });
});

describe("lab NAT routers", () => {
  const options = { wan: "wan", lan: "lan", firstHost: "198.18.65.10" };
  const text = (rules: string[][]) => rules.map((rule) => rule.join(" "));

  it("makes each type the way docs/nat.md describes", () => {
    expect(text(natRules("symmetric", options)).some((rule) => rule.includes("MASQUERADE --random-fully"))).toBe(true);
    expect(text(natRules("port-restricted", options)).some((rule) => rule.includes("--random-fully") || rule.includes("-j DNAT"))).toBe(false);
    expect(text(natRules("full-cone", options))).toContain("iptables -t nat -A PREROUTING -i wan -p tcp -j DNAT --to-destination 198.18.65.10");
    const restricted = text(natRules("restricted-cone", options));
    expect(restricted.some((rule) => rule.includes("--rdest --set"))).toBe(true);
    expect(restricted.some((rule) => rule.includes("--rcheck --rsource") && rule.includes("DNAT"))).toBe(true);
    for (const nat of ["full-cone", "restricted-cone", "port-restricted", "symmetric"] as const) {
      // By default unsolicited connections from the WAN are dropped, never answered by the router.
      expect(text(natRules(nat, options))).toContain("iptables -A INPUT -i wan -m conntrack --ctstate NEW -j DROP");
    }
  });

  it("makes routers that answer unsolicited traffic: RST (OpenWrt's REJECT), ICMP, or a bare Linux stack", () => {
    const rst = text(natRules("port-restricted", { ...options, router: "rst" }));
    expect(rst).toContain("iptables -A INPUT -i wan -p tcp -m conntrack --ctstate NEW -j REJECT --reject-with tcp-reset");
    expect(rst).toContain("iptables -A FORWARD -i wan -p tcp -m conntrack --ctstate NEW -j REJECT --reject-with tcp-reset");
    expect(rst.some((rule) => rule.includes("-j DROP"))).toBe(false);
    const icmp = text(natRules("port-restricted", { ...options, router: "icmp" }));
    expect(icmp).toContain("iptables -A INPUT -i wan -m conntrack --ctstate NEW -j REJECT --reject-with icmp-port-unreachable");
    const linux = text(natRules("port-restricted", { ...options, router: "linux" }));
    expect(linux.some((rule) => rule.includes("-A INPUT"))).toBe(false);
  });

  it("composes a home NAT behind a carrier-grade NAT into the stricter of the two", () => {
    expect(composedNat("full-cone", undefined)).toBe("full-cone");
    expect(composedNat("full-cone", "port-restricted")).toBe("port-restricted");
    expect(composedNat("restricted-cone", "full-cone")).toBe("restricted-cone");
    expect(composedNat("symmetric", "port-restricted")).toBe("symmetric");
    expect(composedNat("port-restricted", "symmetric")).toBe("symmetric");
  });
});
