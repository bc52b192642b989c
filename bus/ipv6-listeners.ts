/**
 * Where the traffic actor takes IPv6 cluster IPs' connections, as the proxier
 * sends them there: a contract between two actors, written once.
 *
 * IPv6 has no route_localnet: a packet of a pod DNATed in PREROUTING to ::1 is
 * dropped (measured: curl from another namespace to a cluster IP DNATed to
 * [::1] failed, the same rule from OUTPUT worked). So the proxier routes a ULA
 * prefix of its own as `local` on lo (Linux's AnyIP: every address in it is this
 * host's) and assigns one address of it to lo; the traffic actor's sockets take
 * IPv6 cluster IPs there:
 * - the shared TCP listener (a socket on [::]) gives each TCP service port the
 *   address `ipv6ServiceAddress(i)` matching its 127.128.0.0/9 one, so the
 *   accepted socket's local address names the service port, as for IPv4;
 * - every socket of its own (UDP, a TCP listener off the shared one) binds
 *   `ipv6ListenerAddress` (bind() needs an assigned address, not a route).
 * The proxier's guard drops what reaches the prefix from the network without
 * being DNATed, as its localnet guard does for 127.0.0.0/8.
 *
 * ```ts
 * ipv6ServiceAddress(1);    // "fd1e:af3e:5400::100:1"
 * ipv6ListenerAddress;      // "fd1e:af3e:5400::1"
 * ```
 */

/** A ULA /64 of leafmesh's own (RFC 4193, fd00::/8): "1eaf 3e54" for leafmesh. A cluster IP inside it is never intercepted. */
export const ipv6ListenerPrefix = "fd1e:af3e:5400::";
export const ipv6ListenerPrefixLength = 64;
export const ipv6ListenerCidr = `${ipv6ListenerPrefix}/${ipv6ListenerPrefixLength}`;
/** Assigned to lo by the proxier (interception on, IPv6 usable): UDP listeners and TCP listeners with a socket of their own bind it. */
export const ipv6ListenerAddress = `${ipv6ListenerPrefix}1`;

/**
 * Where the proxier DNATs a UDP service port with no endpoints (at the port of its own IPv6 listener socket, which
 * binds ipv6ListenerAddress alone, so nothing can hold this address and port): the kernel finds no socket and answers
 * ICMPv6 port unreachable, as IPv4's REJECT does. A REJECT in FORWARD, as for IPv4, never sees a pod's packet: to
 * a cluster IP routed on lo, the kernel drops it before FORWARD (measured: Ip6InNoRoutes counted it, no reply).
 */
export const ipv6RefusalAddress = `${ipv6ListenerPrefix}2`;

/** The IPv6 address of the shared TCP listener's i-th service port (0 < i < 2^23), in the form the kernel reports (RFC 5952). */
export function ipv6ServiceAddress(index: number): string {
  return `${ipv6ListenerPrefix}${(0x100 + (index >>> 16)).toString(16)}:${(index & 0xffff).toString(16)}`;
}

/** The index ipv6ServiceAddress was given, or undefined for any other address. */
export function ipv6ServiceIndex(address: string): number | undefined {
  const match = /^fd1e:af3e:5400::(1[0-7][0-9a-f]):([0-9a-f]{1,4})$/.exec(address);
  if (!match) return undefined;
  return ((Number.parseInt(match[1], 16) - 0x100) << 16) | Number.parseInt(match[2], 16);
}
