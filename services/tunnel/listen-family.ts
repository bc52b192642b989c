/**
 * The tunnel listens on both address families by default (`/ip4/0.0.0.0/tcp/4101,/ip6/::/tcp/4101`,
 * TLS streams on `[::]:4102`, which takes IPv4 too): a node whose LAN has only IPv6 addresses was
 * reachable by no direct path, since the IPv4-only listener left its record with nothing but
 * 127.0.0.1 (probed: another node dialled that, reached itself, failed the handshake and was relayed,
 * with a warning that the peer "does not hold this mesh's pre-shared key"). A host without IPv6 at
 * all (ipv6.disable=1) cannot bind `::`: there the IPv6 wildcards are left out, or turned into the
 * IPv4 one, rather than failing the agent.
 *
 * ```ts
 * listenForFamilies(["/ip4/0.0.0.0/tcp/4101", "/ip6/::/tcp/4101"], hostHasIPv6()); // without IPv6: ["/ip4/0.0.0.0/tcp/4101"]
 * tlsListenForFamilies({ host: "::", port: 4102 }, false);                          // { host: "0.0.0.0", port: 4102 }
 * ```
 */
import { networkInterfaces } from "node:os";

/** Whether this host has IPv6 at all: any interface with an IPv6 address (loopback's ::1 counts). */
export function hostHasIPv6(interfaces: ReturnType<typeof networkInterfaces> = networkInterfaces()): boolean {
  return Object.values(interfaces).some((addresses) => addresses?.some((address) => address.family === "IPv6"));
}

const ipv6Wildcard = /^\/ip6\/::\/tcp\/\d+$/;

/** The libp2p listen addresses this host can bind: without IPv6, the IPv6 wildcard is left out (unless it is all there is, then its IPv4 twin). */
export function listenForFamilies(listen: readonly string[], hasIPv6: boolean): string[] {
  if (hasIPv6) return [...listen];
  const kept = listen.filter((address) => !ipv6Wildcard.test(address));
  if (kept.length > 0) return kept;
  return listen.map((address) => address.replace(/^\/ip6\/::\//, "/ip4/0.0.0.0/"));
}

/** The TLS streams' listen address this host can bind: `::` (both families) becomes 0.0.0.0 without IPv6. */
export function tlsListenForFamilies<T extends { host: string; port: number }>(listen: T, hasIPv6: boolean): T {
  return listen.host === "::" && !hasIPv6 ? { ...listen, host: "0.0.0.0" } : listen;
}
