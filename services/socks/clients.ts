/**
 * Who may use the SOCKS proxy. It dials any node of the mesh (its own loopback, through the tunnel)
 * and any address the agent can reach, for whoever connects, without a password (SOCKS5's
 * username/password goes in clear): on an address beyond loopback it must name its clients.
 *
 * ```ts
 * const clients = socksClients(["10.0.0.0/24", "fd00::/64"], "--socks-clients");
 * clients.allows("10.0.0.7"); // true
 * ```
 */
import { BlockList, isIP } from "node:net";
import { LeafmeshError } from "../../lib/errors.ts";

export interface SocksClients {
  allows(address: string): boolean;
  /** The ranges as given, for logs and status. */
  readonly ranges: readonly string[];
}

/** Loopback: the default for a proxy on a loopback address. */
export const loopbackClients = ["127.0.0.0/8", "::1/128"];

/** The ranges (CIDR, or one address) as a matcher; a range that is not one is refused naming `flag`. */
export function socksClients(ranges: readonly string[], flag: string): SocksClients {
  const list = new BlockList();
  for (const range of ranges) {
    const [address, bits, extra] = range.split("/");
    const family = isIP(address);
    const max = family === 4 ? 32 : 128;
    const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : Number.NaN;
    if (family === 0 || extra !== undefined || !(prefix >= 0 && prefix <= max)) {
      throw new LeafmeshError("CONFIG_INVALID", `${flag}: '${range}' is not an address or a CIDR range (e.g. 10.0.0.0/24, fd00::/64, 192.0.2.7)`);
    }
    list.addSubnet(address, prefix, family === 4 ? "ipv4" : "ipv6");
  }
  return {
    ranges: [...ranges],
    allows(address) {
      // A dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d.
      const plain = address.startsWith("::ffff:") && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
      const family = isIP(plain);
      return family !== 0 && list.check(plain, family === 4 ? "ipv4" : "ipv6");
    },
  };
}

/** True when `host` (an IP literal or a name) is only reachable from this machine. */
export function isLoopbackHost(host: string): boolean {
  if (host === "localhost") return true;
  const family = isIP(host);
  if (family === 4) return host.startsWith("127.");
  return family === 6 && (host === "::1" || /^::ffff:127\./i.test(host));
}
