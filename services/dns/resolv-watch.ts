/**
 * The upstreams taken from /etc/resolv.conf follow it while the agent runs, as dnsmasq's do: a DHCP client or
 * NetworkManager rewrites it when the box moves networks or its lease names other DNS servers, and an agent that kept
 * the nameservers of its start forwarded every name outside the cluster to a server no longer there. The file is read
 * every `intervalMs`; a new text that reads the same twice in a row (not one being written) is taken, unless it names
 * no nameserver or only this cluster DNS: then the old ones stay, and that is said once.
 *
 * ```ts
 * const watch = watchResolvConf({ path: "/etc/resolv.conf", listen, forwarder, clock, log });
 * watch.stop();
 * ```
 */
import { readFileSync } from "node:fs";
import type { Clock } from "../../lib/clock.ts";
import { describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { LeafmeshError } from "../../lib/errors.ts";
import { localAddresses } from "../../lib/local-addresses.ts";
import { upstreamsFromResolvConf, type Forwarder, type Upstream } from "./forwarder.ts";

export function watchResolvConf(options: { path: string; listen: { host: string; port: number } | undefined; forwarder: Forwarder; clock: Clock; log?: Logger; intervalMs?: number }): { stop(): void } {
  const { path, forwarder, log } = options;
  const read = () => {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return undefined;
    }
  };
  /** The text the upstreams were last taken from (or last refused). */
  let taken = read();
  let previous = taken;
  const look = () => {
    const text = read();
    const settled = text === previous;
    previous = text;
    if (!settled || text === undefined || text === taken) return;
    taken = text;
    const was = forwarder.upstreams.map(hostPort);
    try {
      const { upstreams } = upstreamsOfResolvConf(text, path, options.listen);
      if (upstreams.length === 0) {
        log?.warn({ upstreams: was }, `${path} changed and names no nameserver: names outside the cluster still go to the ones it named before`);
        return;
      }
      const now = upstreams.map(hostPort);
      if (now.join(" ") === was.join(" ")) return;
      forwarder.setUpstreams(upstreams);
      log?.info({ upstreams: now, was }, `${path} changed: names outside the cluster now go to ${now.join(", ")}`);
    } catch (error) {
      log?.warn({ upstreams: was }, `${path} changed, but ${describeError(error)}; names outside the cluster still go to ${was.join(", ") || "no server"}`);
    }
  };
  const timer = options.clock.setInterval(look, options.intervalMs ?? 2_000);
  return { stop: () => options.clock.clearInterval(timer) };
}

export const hostPort = (upstream: Upstream) => `${upstream.host}:${upstream.port}`;

/**
 * The nameservers of a resolv.conf's text but this cluster DNS itself (`skipped`: a host whose resolv.conf names the
 * cluster DNS, to resolve Services from the host too, must not make it its own upstream). Throws when it names only
 * this cluster DNS; none at all (an offline box) leaves the cluster's names served and the others unanswered.
 */
export function upstreamsOfResolvConf(text: string, path: string, listen: { host: string; port: number } | undefined): { upstreams: Upstream[]; skipped: string[] } {
  const found = upstreamsFromResolvConf(text);
  const own = listen ? found.filter((upstream) => isOwnAddress(upstream, listen)) : [];
  const rest = found.filter((upstream) => !own.includes(upstream));
  if (own.length > 0 && rest.length === 0) {
    throw new LeafmeshError("CONFIG_INVALID", `${path} names only this cluster DNS (${own.map(hostPort).join(", ")}) as nameserver: names outside the cluster would be asked of it again and again; pass --upstream HOST:PORT with the DNS servers to forward to`);
  }
  return { upstreams: rest, skipped: own.map(hostPort) };
}

/** Whether a DNS upstream is the listen address itself: the same port on the same address, or on a local one when it listens on all of them. */
export function isOwnAddress(upstream: Upstream, listen: { host: string; port: number }): boolean {
  if (listen.port === 0 || upstream.port !== listen.port) return false;
  if (upstream.host === listen.host) return true;
  if (listen.host !== "0.0.0.0" && listen.host !== "::") return false;
  // Loopback's own address, not all of 127/8: systemd-resolved's stub listens on 127.0.0.53:53 beside a wildcard bind.
  if (upstream.host === "127.0.0.1" || upstream.host === "::1") return true;
  return localAddresses().has(upstream.host);
}
