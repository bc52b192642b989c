/**
 * Watches the fabric links of the local nats-server through its monitor port
 * (/leafz, /routez, /gatewayz) and puts every change on the bus as a `link`
 * event of the `fabric` pseudo-actor: the leaf link to the hubs (which hub),
 * and on hubs their routes and the leafs attached to them.
 *
 * ```ts
 * const monitor = new FabricMonitor({ bus, log, monitor: { host, port }, upstreams: ["nats-leaf://hub:7422"] });
 * monitor.start();
 * monitor.links; // [{ kind: "leaf", up: true, url: "nats-leaf://hub:7422", rttMs: 0.4 }]
 * ```
 */
import type { Logger } from "../lib/log.ts";
import type { HostPort } from "./render.ts";
import { monitorBase, monitorJson } from "./monitor-http.ts";
import { LeafAccountNames, type AccountDetail } from "./leaf-account-names.ts";
import type { Bus } from "../bus/bus.ts";
import type { FabricLink } from "../bus/status.ts";

export type { FabricLink } from "../bus/status.ts";
import { nowIso } from "../bus/events.ts";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";


export interface FabricMonitorOptions {
  bus: Bus;
  log: Logger;
  monitor: HostPort;
  /** URLs this server dials as a leaf; a leaf connection to one of them is the upstream link. */
  upstreams?: string[];
  /** @default 1_000 — a leaf reconnects within about a second; status should see it as fast. */
  intervalMs?: number;
}

/** "350µs", "1.2ms", "2s", "1m3s" → milliseconds. */
export function parseGoDuration(text: string | undefined): number | undefined {
  if (!text) return undefined;
  const units: Record<string, number> = { ns: 1e-6, "µs": 1e-3, us: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  let matched = false;
  for (const match of text.matchAll(/([\d.]+)(ns|µs|us|ms|s|m|h)/g)) {
    total += Number(match[1]) * units[match[2]];
    matched = true;
  }
  return matched ? Math.round(total * 1000) / 1000 : undefined;
}

interface LeafzEntry {
  ip: string;
  port: number;
  rtt?: string;
  name?: string;
  /** The account the leaf is bound to: its node's (`node-<name>`) with the mesh's keys, `$G` without. */
  account?: string;
}

/** An upstream URL with the addresses its host name resolved to (an IP literal: itself). */
export interface ResolvedUpstream {
  url: string;
  host: string;
  port: number;
  addresses: ReadonlySet<string>;
}

/**
 * Pure: which upstream a leaf connection (the remote address /leafz shows) goes to. By address first:
 * upstreams given by host name (tls://hub-1.example.net:7422, tls://hub-2.example.net:7422) all share a
 * port, and the port alone named the first of them whichever hub the leaf was on. Without an address
 * match (a name that resolves differently here than for nats-server), the first upstream of that port
 * given by name, so that a leaf link is never taken for a downstream one.
 */
export function upstreamOfLeaf(leaf: { ip: string; port: number }, upstreams: readonly ResolvedUpstream[]): ResolvedUpstream | undefined {
  const samePort = upstreams.filter((upstream) => upstream.port === leaf.port);
  return samePort.find((upstream) => upstream.addresses.has(leaf.ip)) ?? samePort.find((upstream) => !isIP(upstream.host));
}

/** @default 5_000 — an unmatched leaf resolves the upstreams' names again at most this often. */
const resolveEveryMs = 5_000;

export class FabricMonitor {
  readonly #options: FabricMonitorOptions;
  #links = new Map<string, FabricLink>();
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  #upstreamUp = false;
  #first = true;
  #upstreams: ResolvedUpstream[];
  #resolvedAt = -Infinity;
  readonly #accountNames: LeafAccountNames;

  constructor(options: FabricMonitorOptions) {
    this.#options = options;
    this.#accountNames = new LeafAccountNames((account) => getJson<AccountDetail>(`${monitorBase(options.monitor)}/accountz?acc=${account}`));
    this.#upstreams = (options.upstreams ?? []).map((url) => {
      const parsed = new URL(url);
      const host = parsed.hostname.replace(/^\[|\]$/g, "");
      return { url, host, port: Number(parsed.port), addresses: new Set(isIP(host) ? [host] : []) };
    });
  }

  /** Resolves the upstreams' host names again when a leaf's address matches none (at start, or a name that moved). */
  async #resolveFor(leafs: readonly LeafzEntry[]): Promise<void> {
    const ports = new Set(this.#upstreams.map((upstream) => upstream.port));
    const unmatched = leafs.some((leaf) => ports.has(leaf.port) && !this.#upstreams.some((upstream) => upstream.addresses.has(leaf.ip)));
    if (!unmatched || performance.now() - this.#resolvedAt < resolveEveryMs) return;
    this.#resolvedAt = performance.now();
    this.#upstreams = await Promise.all(
      this.#upstreams.map(async (upstream) => {
        if (isIP(upstream.host)) return upstream;
        const answers = await lookup(upstream.host, { all: true }).catch(() => []);
        return { ...upstream, addresses: new Set(answers.map((answer) => answer.address)) };
      }),
    );
  }

  get links(): FabricLink[] {
    return [...this.#links.values()];
  }

  /** True while the leaf link to an upstream (hub or site) is connected. */
  get upstreamUp(): boolean {
    return this.#upstreamUp;
  }

  start(): void {
    void this.poll();
    this.#timer = setInterval(() => void this.poll(), this.#options.intervalMs ?? 1_000);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  async poll(): Promise<void> {
    if (this.#polling) return;
    this.#polling = true;
    try {
      const base = monitorBase(this.#options.monitor);
      const [leafz, routez, gatewayz] = await Promise.all([
        getJson<{ leafs?: LeafzEntry[] }>(`${base}/leafz`),
        getJson<{ routes?: { remote_id: string; ip: string; port: number; rtt?: string }[] }>(`${base}/routez`),
        getJson<{ outbound_gateways?: Record<string, { connection?: { ip: string; port: number; rtt?: string } }> }>(`${base}/gatewayz`),
      ]);
      if (!leafz) return; // the server is restarting: keep the last view
      await this.#resolveFor(leafz.leafs ?? []);
      await this.#accountNames.learn((leafz.leafs ?? []).map((leaf) => leaf.account));
      const next = new Map<string, FabricLink>();
      for (const leaf of leafz.leafs ?? []) {
        const upstream = upstreamOfLeaf(leaf, this.#upstreams);
        const address = joinHostPort(leaf.ip, leaf.port);
        if (upstream) {
          next.set(`leaf:${upstream.url}`, { kind: "leaf", direction: "upstream", remote: upstream.url, url: upstream.url, address, rttMs: parseGoDuration(leaf.rtt), up: true });
          continue;
        }
        // A downstream leaf by the node it logs in as, where the keys say (2.9.10's /leafz has no name); keyed by its
        // address, so that a node's new link made before its old one is gone is a link of its own.
        const remote = leaf.name ?? this.#accountNames.nodeOf(leaf.account) ?? address;
        next.set(`leaf:${address}`, { kind: "leaf", direction: "downstream", remote, address, rttMs: parseGoDuration(leaf.rtt), up: true });
      }
      for (const route of routez?.routes ?? []) {
        next.set(`route:${route.remote_id}`, { kind: "route", direction: "peer", remote: route.remote_id, url: joinHostPort(route.ip, route.port), rttMs: parseGoDuration(route.rtt), up: true });
      }
      for (const [name, gateway] of Object.entries(gatewayz?.outbound_gateways ?? {})) {
        next.set(`gateway:${name}`, {
          kind: "gateway",
          direction: "peer",
          remote: name,
          url: gateway.connection ? `${gateway.connection.ip}:${gateway.connection.port}` : undefined,
          rttMs: parseGoDuration(gateway.connection?.rtt),
          up: true,
        });
      }
      this.#publishChanges(next);
    } finally {
      this.#polling = false;
    }
  }

  #publishChanges(next: Map<string, FabricLink>): void {
    const { bus, log } = this.#options;
    for (const [key, link] of next) {
      if (!this.#links.has(key)) {
        log.info({ link }, `${link.kind} link up${linkWho(link)}`);
        bus.publish("fabric", "link", { at: nowIso(), up: true, kind: link.kind, remote: link.remote, url: link.url, rttMs: link.rttMs });
      }
    }
    for (const [key, link] of this.#links) {
      if (!next.has(key)) {
        log.warn({ link }, `${link.kind} link down${linkWho(link)}`);
        bus.publish("fabric", "link", { at: nowIso(), up: false, kind: link.kind, remote: link.remote, url: link.url });
      }
    }
    this.#links = next;
    const upstreamUp = [...next.values()].some((link) => link.direction === "upstream");
    if (this.#upstreams.length > 0 && (upstreamUp !== this.#upstreamUp || this.#first) && !upstreamUp) {
      // No upstream connection at all: say so once, with no remote (the controller goes offline on it).
      log.warn({ upstreams: this.#upstreams.map((upstream) => upstream.url) }, "not connected to any upstream");
      bus.publish("fabric", "link", { at: nowIso(), up: false, kind: "leaf" });
    }
    this.#first = false;
    this.#upstreamUp = upstreamUp;
  }
}

/** ": node edge-a (127.0.0.1:52948)" for a downstream leaf known by its node; nothing for the others (their remote is in the line's fields). */
function linkWho(link: FabricLink): string {
  return link.direction === "downstream" && link.address && link.remote !== link.address ? `: node ${link.remote} (${link.address})` : "";
}

const getJson = <T>(url: string): Promise<T | undefined> => monitorJson<T>(url, 2_000);

/** "198.18.0.1:7422", "[2001:db8::1]:7422": an IPv6 address in brackets, as a URL has it ("::1:36584" read as one address). */
function joinHostPort(ip: string | undefined, port: number | undefined): string {
  return `${ip?.includes(":") ? `[${ip}]` : ip}:${port}`;
}
