/**
 * The DNS actor: an xstate machine idle → starting (bind UDP and TCP) → serving
 * → stopping → stopped, or failed when the address cannot be bound. While
 * serving it answers from the catalog feed's reader (a change batch of the feed
 * is in the next answer: only the touched names are encoded again), forwards the rest, and
 * publishes `mesh.<node>.dns.stats` every few seconds.
 */
import { readFileSync } from "node:fs";
import { assign, createActor, fromPromise, setup, type ActorRefFrom } from "xstate";
import * as z from "../../lib/schema/index.ts";
import { linkActorToBus, waitForState, type ActorLink } from "../../bus/actor-link.ts";
import type { Bus } from "../../bus/bus.ts";
import type { CatalogFeed } from "../../bus/catalog-feed.ts";
import { nowIso } from "../../bus/events.ts";
import { systemClock, type Clock } from "../../lib/clock.ts";
import { describeError, LeafmeshError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import type { Registry } from "../../lib/prom.ts";
import { Forwarder, parseUpstream, type Upstream } from "./forwarder.ts";
import { DnsServer, type ListenAddress } from "./server.ts";
import { DnsStats, registerDnsMetrics } from "./stats.ts";
import { hostPort, isOwnAddress, upstreamsOfResolvConf, watchResolvConf } from "./resolv-watch.ts";
import { partitionFeed, partitionView, refusalWhilePartitioned, type UpstreamState } from "../../bus/partition.ts";

/** The DNS actor's configuration; the CLI merges --dns, --cluster-domain and --upstream into it. */
export const dnsConfigSchema = z.object({
  /** @default 127.0.0.1:53 on a bare machine; on a node the agent passes 169.254.96.16:53 (EdgeMesh's link-local address). */
  listen: z.object({ host: z.string().min(1), port: z.number().int().min(0).max(65535) }).default({ host: "127.0.0.1", port: 53 }),
  /** @default "cluster.local" — the Kubernetes default cluster domain. */
  clusterDomain: z
    .string()
    .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$/i, "a domain name such as cluster.local")
    .default("cluster.local"),
  /** Upstreams as HOST, HOST:PORT or [IPv6]:PORT. @default the nameservers of /etc/resolv.conf */
  upstreams: z.array(z.string()).optional(),
  /** @default 5 — seconds, the TTL of cluster answers (CoreDNS kubernetes plugin's default). */
  ttl: z.number().int().min(0).max(3600).default(5),
  /** @default 2_000 — ms per upstream before failing over to the next. */
  upstreamTimeoutMs: z.number().int().min(10).max(30_000).default(2_000),
  /** @default 10_000 — cached upstream answers. */
  cacheSize: z.number().int().min(0).default(10_000),
  /** @default 10_000 — an idle or half-sent TCP client is closed after this many ms (RFC 7766 §6.2.3). */
  tcpIdleMs: z.number().int().min(50).default(10_000),
  /** @default 5_000 — how often `mesh.<node>.dns.stats` is published. */
  statsIntervalMs: z.number().int().min(100).default(5_000),
});
export type DnsConfig = z.input<typeof dnsConfigSchema>;

export interface DnsActorOptions extends DnsConfig {
  /** Optional: without a bus the actor runs alone and publishes nothing. */
  bus?: Bus;
  feed: CatalogFeed;
  log: Logger;
  clock?: Clock;
  /** Registers `leafmesh_dns_*` metrics on it. */
  registry?: Registry;
  /** Read when `upstreams` is not given, and followed while the actor runs (resolv-watch.ts). @default "/etc/resolv.conf" */
  resolvConfPath?: string;
  /** @default 2_000 — how often resolv.conf is read again. */
  resolvConfIntervalMs?: number;
  /** How far the node reaches: fail-closed services answer SERVFAIL while it is partitioned (bus/partition.ts). */
  upstream?: UpstreamState;
}

export interface DnsActor {
  readonly actor: ActorRefFrom<typeof dnsMachine>;
  /** Binds and serves; throws DNS_FAILED when the address cannot be bound. */
  start(): Promise<ListenAddress>;
  stop(): Promise<void>;
  /** Where it listens once serving (the real port when 0 was asked). */
  readonly address: ListenAddress | undefined;
  readonly upstreams: readonly Upstream[];
  /** Counters, drops by reason, latency p50/p99, cache figures: the payload of `mesh.<node>.dns.stats`. */
  stats(): Record<string, unknown>;
}

type MachineEvent = { type: "START" } | { type: "STOP" };

const dnsMachine = setup({
  types: { context: {} as { lastError?: string }, events: {} as MachineEvent },
  actors: {
    bind: fromPromise<void>(async () => undefined),
    unbind: fromPromise<void>(async () => undefined),
  },
}).createMachine({
  id: "dns",
  initial: "idle",
  context: {},
  states: {
    idle: { on: { START: "starting", STOP: "stopped" } },
    starting: {
      invoke: {
        src: "bind",
        onDone: "serving",
        onError: { target: "failed", actions: assign({ lastError: ({ event }) => describeError(event.error) }) },
      },
    },
    serving: { on: { STOP: "stopping" } },
    /** The address could not be bound (in use, no permission): nothing to retry until the operator changes it. */
    failed: { on: { STOP: "stopped" } },
    stopping: { invoke: { src: "unbind", onDone: "stopped", onError: { target: "stopped", actions: assign({ lastError: ({ event }) => describeError(event.error) }) } } },
    stopped: { type: "final" },
  },
});

export function resolveUpstreams(options: Pick<DnsActorOptions, "upstreams" | "resolvConfPath" | "listen"> & { log?: Logger }): Upstream[] {
  const listen = options.listen;
  if (options.upstreams) {
    return options.upstreams.map((text, index) => {
      let upstream: Upstream;
      try {
        upstream = parseUpstream(text);
      } catch (cause) {
        throw new LeafmeshError("CONFIG_INVALID", `upstreams[${index}]: ${(cause as Error).message}`, { cause });
      }
      if (listen && isOwnAddress(upstream, listen)) {
        throw new LeafmeshError("CONFIG_INVALID", `upstream ${text} is this cluster DNS itself (it listens on ${listen.host}:${listen.port}): names outside the cluster would be asked of it again and again; give the DNS servers it should forward to`);
      }
      return upstream;
    });
  }
  const path = options.resolvConfPath ?? "/etc/resolv.conf";
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (cause) {
    throw new LeafmeshError("CONFIG_INVALID", `no upstreams given and ${path} cannot be read: pass --upstream HOST:PORT`, { cause });
  }
  const { upstreams, skipped } = upstreamsOfResolvConf(text, path, listen);
  if (skipped.length > 0) options.log?.warn({ skipped, upstreams: upstreams.map(hostPort) }, `${path} names this cluster DNS itself: not used as an upstream`);
  return upstreams;
}

export function createDnsActor(options: DnsActorOptions): DnsActor {
  const parsed = dnsConfigSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new LeafmeshError("CONFIG_INVALID", `dns.${issue.path.join(".")}: ${issue.message}`, { cause: parsed.error });
  }
  const config = parsed.data;
  const clock = options.clock ?? systemClock;
  const log = options.log;
  const upstreams = resolveUpstreams({ ...options, listen: config.listen });
  const stats = new DnsStats();
  const forwarder = new Forwarder({ upstreams, clock, log, timeoutMs: config.upstreamTimeoutMs, cacheSize: config.cacheSize });
  // Nameservers from resolv.conf follow it (a DHCP lease, another network); --upstream's are the operator's and stay.
  let resolvWatch: { stop(): void } | undefined;
  const upstream = options.upstream;
  const server = new DnsServer({
    catalog: upstream ? partitionView(options.feed.reader, upstream) : options.feed.reader,
    feed: upstream ? partitionFeed(options.feed, upstream) : options.feed,
    withheld: upstream ? (service, slices) => refusalWhilePartitioned(service, slices, upstream) !== undefined : undefined,
    clusterDomain: config.clusterDomain,
    ttl: config.ttl,
    forwarder,
    log,
    stats,
    tcpIdleMs: config.tcpIdleMs,
  });
  if (options.registry) registerDnsMetrics(options.registry, stats, () => forwarder.counters);
  let link: ActorLink | undefined;
  let statsTimer: unknown;
  let started = false;
  let bindError: unknown;

  const snapshot = () => ({ ...stats.snapshot(), tcpClients: server.tcpClients, forwarder: { ...forwarder.counters }, catalogVersion: options.feed.reader.version });

  const actor = createActor(
    dnsMachine.provide({
      actors: {
        bind: fromPromise(async () => {
          const address = await server.start(config.listen).catch((error: unknown) => {
            bindError = error; // kept as start()'s cause: the role says a taken address with its flag (lib/listen-errors.ts)
            throw error;
          });
          log.info({ ...address, clusterDomain: config.clusterDomain, upstreams }, "DNS serving");
        }),
        unbind: fromPromise(async () => {
          await server.stop();
          forwarder.close();
        }),
      },
    }),
    { clock: clock as unknown as NonNullable<Parameters<typeof createActor>[1]>["clock"] },
  );

  const waitFor = (test: (state: string) => boolean) => waitForState(actor, test);

  return {
    actor,
    get address() {
      return server.address;
    },
    get upstreams() {
      return forwarder.upstreams;
    },
    stats: snapshot,
    async start() {
      if (started) throw new LeafmeshError("INTERNAL", "the DNS actor was already started");
      started = true;
      actor.start();
      if (options.bus) {
        const bus = options.bus;
        link = linkActorToBus({ bus, actorName: "dns", actor, clock, detail: () => ({ queries: stats.queries, ...server.address }) });
        statsTimer = clock.setInterval(() => bus.publish("dns", "stats", { at: nowIso(clock.now), ...snapshot() }), config.statsIntervalMs);
      }
      actor.send({ type: "START" });
      if (!options.upstreams) resolvWatch = watchResolvConf({ path: options.resolvConfPath ?? "/etc/resolv.conf", listen: config.listen, forwarder, clock, log, intervalMs: options.resolvConfIntervalMs });
      const state = await waitFor((value) => value === "serving" || value === "failed");
      if (state === "failed") throw new LeafmeshError("DNS_FAILED", actor.getSnapshot().context.lastError ?? "DNS server failed to start", { cause: bindError });
      return server.address!;
    },
    async stop() {
      if (!started) return;
      if (statsTimer !== undefined) clock.clearInterval(statsTimer);
      resolvWatch?.stop();
      actor.send({ type: "STOP" });
      await waitFor(() => false);
      link?.stop();
    },
  };
}
