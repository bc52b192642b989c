/**
 * services/proxier: kernel interception of cluster IPs. Every proxied
 * clusterIP:port (TCP, UDP) is DNATed to the traffic actor's listener for it, by
 * iptables (own chain LEAFMESH-SERVICES, one `iptables-restore --noflush` per
 * change) or nftables (table `ip leafmesh`, one `nft -f` per change). Services
 * labelled `service.leafmesh.io/noproxy` are left alone. Start removes what a
 * crashed run left; stop removes everything. After a sync that changed a UDP
 * mapping, stale UDP conntrack entries of those cluster IPs are deleted
 * (`conntrack`, Debian package conntrack). With a loopback listenHost it sets
 * net.ipv4.conf.all.route_localnet=1 so PREROUTING (pods, forwarded traffic)
 * can be DNATed to 127.0.0.1, as kube-proxy does, behind kube-proxy's guard
 * against CVE-2020-8558 (rules.ts: 127.0.0.0/8 only from loopback or DNAT), and
 * turns it back off at stop when it found it off. Each intercepted cluster IP is
 * routed on `lo` (routes.ts, `proto 76`): host clients reach it without a default
 * route, with full-size TCP segments to the listener. IPv6 cluster IPs go the
 * same way where the host has IPv6 (ip6tables, or table `ip6 leafmesh`), to
 * traffic's IPv6 sockets in leafmesh's own prefix (bus/ipv6-listeners.ts),
 * routed `local` on lo behind a guard of its own; where it has not, IPv4 goes
 * on and the reason is logged once (stats `ipv6`).
 *
 * ```ts
 * import { busListenerSource, createProxierActor } from "./services/proxier/index.ts";
 * const listeners = busListenerSource(bus);     // traffic's `listeners` events
 * const proxier = createProxierActor({ bus, feed, log, intercept: "nftables", listeners, listenHost: "127.0.0.1" });
 * await proxier.start();                        // TOOL_MISSING: "... apt-get install -y nftables ..."
 * await proxier.stop();                         // no rule left
 * ```
 */
export { createBackend, createProxierActor, type ProxierActor, type ProxierOptions } from "./actor.ts";
export { interceptModes, type InterceptBackend, type InterceptMode, type InterceptState } from "./backend.ts";
export { busListenerSource, type ListenerSource } from "./listener-source.ts";
export { holdInterception, interceptLockName, type InterceptionHolder, type InterceptionLock } from "./intercept-lock.ts";
export { registerProxierMetrics } from "./metrics.ts";
export { changedUdpTargets, clearUdpConntrack } from "./conntrack.ts";
export { IptablesBackend } from "./iptables.ts";
export { NftablesBackend } from "./nftables.ts";
