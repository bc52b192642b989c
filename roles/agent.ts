/**
 * The agent role assembled: a supervised leaf nats-server (JetStream domain =
 * node name, one remote listing every upstream URL so it fails over by itself),
 * the fabric monitor, and the actors. Actors are started by `ActorFactory`s
 * handed in, so this file imports no actor but the controller, which every
 * agent runs.
 *
 * ```ts
 * const agent = await startAgent({ node: "edge-a", upstreams: ["nats://hub:7422"], dataDir, client, monitor, log });
 * agent.status();
 * await agent.stop();
 * ```
 */
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import type { AnyActorRef } from "xstate";
import { Bus } from "../bus/bus.ts";
import { linkActorToBus, stateName, type ActorLink } from "../bus/actor-link.ts";
import { followCatalog, type CatalogFeed } from "../bus/catalog-feed.ts";
import { connectNats, localClientUrl } from "../bus/connect.ts";
import { nowIso } from "../bus/events.ts";
import { FabricMonitor } from "../nats/fabric-monitor.ts";
import { NatsServerSupervisor } from "../nats/supervisor.ts";
import { checkNodeName, hubDomain, type ActorName } from "../bus/subjects.ts";
import type { Logger } from "../lib/log.ts";
import { Gauge, type Registry } from "prom-client";
import { MetricsServer } from "../lib/metrics.ts";
import { accountStreamBuffersInHeapLimits } from "../lib/stream-heap.ts";
import { orderByRtt } from "../nats/nearest.ts";
import { checkUpstreamUrls, renderLeafConfig, toLeafUrl, type ClusterOptions, type HostPort } from "../nats/render.ts";
import { startController, type Controller } from "../services/controller/agent-controller.ts";
import { buildStatus, type NodeStatus } from "./status.ts";
import type { NodeSecurity } from "../trust/security.ts";
import type { SiteSecurity } from "../trust/site-security.ts";
import { watchPermissionErrors } from "../trust/denials.ts";

export interface AgentContext {
  node: string;
  bus: Bus;
  connection: NatsConnection;
  log: Logger;
  /** Prometheus registry of this process: actors register their metrics here. */
  registry: Registry;
  /** The catalog as catalog events build it (one view shared by the actors of this process). */
  feed: CatalogFeed;
}

/**
 * A started actor as the agent sees it: its machine (the actor links itself to
 * the bus for state and heartbeat events; the agent reads it for status),
 * status details, and how to stop it.
 */
export interface StartedActor {
  name: ActorName;
  actor: AnyActorRef;
  detail?: () => Record<string, unknown>;
  stop(): Promise<void>;
}

export type ActorFactory = (context: AgentContext) => Promise<StartedActor>;

export interface AgentConfig {
  node: string;
  /** Leafnode URLs of the hubs (or of the site servers). */
  upstreams: string[];
  dataDir: string;
  client: HostPort;
  monitor: HostPort;
  /** @default "hub" */
  upstreamDomain?: string;
  /** "rtt": nearest upstream first (measured at start); "given": the order given. @default "rtt" */
  upstreamOrder?: "rtt" | "given";
  /** JetStream domain of this server. @default the node name (a site cluster's servers share the site's name) */
  domain?: string;
  actors?: ActorFactory[];
  /** A site server: the role name in status, the leafnode address its agents attach to, its cluster. */
  role?: "agent" | "site";
  leaf?: HostPort;
  cluster?: ClusterOptions;
  /** JetStream replicas of the catalog mirror. @default 1, or 3 in a site cluster */
  replicas?: number;
  /** Where /metrics, /healthz and /readyz listen; undefined: not served. */
  metrics?: HostPort;
  /** Mesh security (trust/): the node's credentials, local auth and client options. Undefined: --insecure. */
  security?: NodeSecurity;
  /** A secured site server (trust/site-security.ts): operator mode, one remote per account, TLS towards its agents. */
  siteSecurity?: SiteSecurity;
  log: Logger;
}

export interface AgentRuntime {
  readonly connection: NatsConnection;
  readonly bus: Bus;
  readonly server: NatsServerSupervisor;
  readonly controller: Controller;
  readonly fabric: FabricMonitor;
  readonly metrics: MetricsServer;
  status(): NodeStatus;
  stop(): Promise<void>;
}

export async function startAgent(config: AgentConfig): Promise<AgentRuntime> {
  checkNodeName(config.node, config.role === "site" ? "site server name" : "node name");
  if (config.domain) checkNodeName(config.domain, "site name");
  const log = config.log.child({ node: config.node });
  // This process splices stream bytes (tunnel, cluster IPs): see lib/stream-heap.ts.
  accountStreamBuffersInHeapLimits();
  // Nearest upstream first: the leaf attaches to it and fails over down the list.
  checkUpstreamUrls(config.upstreams.map(toLeafUrl));
  let upstreams = config.upstreams.map(toLeafUrl);
  // Only a choice needs measuring (each probe is a bare TCP connect, which a TLS hub logs as a failed handshake).
  if ((config.upstreamOrder ?? "rtt") === "rtt" && upstreams.length > 1) {
    const measured = await orderByRtt(upstreams);
    upstreams = measured.map((upstream) => upstream.url);
    log.info({ upstreams: measured }, "upstreams ordered by round-trip time");
  }
  const server = new NatsServerSupervisor({
    name: config.node,
    dataDir: config.dataDir,
    monitor: config.monitor,
    log: log.child({ actor: "fabric" }),
    loadAccountsAtStart: config.siteSecurity && { storeDir: join(config.dataDir, "jetstream"), accounts: config.siteSecurity.accounts },
    configText: renderLeafConfig({
      serverName: config.node,
      domain: config.domain ?? config.node,
      storeDir: join(config.dataDir, "jetstream"),
      client: config.client,
      monitor: config.monitor,
      upstreams,
      leaf: config.leaf,
      cluster: config.cluster && config.siteSecurity ? { ...config.cluster, security: config.siteSecurity.routesFragment } : config.cluster,
      security: config.security?.localAuthFragment ?? config.siteSecurity?.configFragment,
      remoteSecurity: config.security?.leafRemoteFragment,
      leafSecurity: config.siteSecurity?.leafnodesFragment,
      remotes: config.siteSecurity?.remotes,
    }),
  });
  log.info({ upstreams, client: config.client }, "starting the node's leaf nats-server");
  await server.start();
  const connection = await connectNats({ ...(config.security?.clientConnectOptions ?? config.siteSecurity?.clientConnectOptions), servers: [localClientUrl(config.client)], name: `leafmesh-${config.role ?? "agent"} ${config.node}` });
  const bus = new Bus({ connection, node: config.node, log: log.child({ actor: "bus" }) });
  // A refused publish is silent at the client: log it, explained (which subject, whose it is).
  if (config.security) watchPermissionErrors(connection, log.child({ actor: "trust" }), config.node);
  server.options.onStatus = (status, detail) => bus.publish("fabric", "server", { at: nowIso(), status, detail });

  // The controller subscribes to link events before the monitor publishes the first one.
  const controller = await startController({ bus, log: log.child({ actor: "controller" }), upstreamDomain: config.upstreamDomain ?? hubDomain, replicas: config.replicas ?? (config.cluster ? 3 : 1) });
  const fabric = new FabricMonitor({ bus, log: log.child({ actor: "fabric" }), monitor: config.monitor, upstreams });
  fabric.start();

  const links: ActorLink[] = [
    linkActorToBus({
      bus,
      actorName: "fabric",
      actor: server.actor,
      // What `leafmesh status --tree` draws the fabric from.
      detail: () => ({
        role: config.role ?? "agent",
        domain: config.domain ?? config.node,
        upstream: fabric.links.find((link) => link.direction === "upstream")?.url ?? null,
        ...(config.leaf ? { leafListen: `${config.leaf.host}:${config.leaf.port}` } : {}),
      }),
    }),
    linkActorToBus({ bus, actorName: "controller", actor: controller.actor, detail: () => ({ objects: controller.index.size, online: controller.online }) }),
  ];
  const metrics = new MetricsServer({
    listen: config.metrics ?? { host: "127.0.0.1", port: 0 },
    log: log.child({ actor: "metrics" }),
    labels: { node: config.node, role: config.role ?? "agent" },
    health: () => ({
      healthy: server.state === "ready" && !connection.isClosed(),
      ready: controller.actor.getSnapshot().matches("serving"),
      detail: { server: server.state, controller: stateOf(controller.actor.getSnapshot().value), upstream: fabric.upstreamUp },
    }),
  });
  registerFabricMetrics(metrics.registry, { objects: () => controller.index.size, upstream: () => fabric.upstreamUp, restarts: () => server.actor.getSnapshot().context.restarts, drops: () => bus.drops });
  if (config.metrics) await metrics.start();

  const started: StartedActor[] = [];
  const feed = (config.actors ?? []).length > 0 ? await followCatalog({ bus, log: log.child({ actor: "agent" }) }) : undefined;
  for (const factory of config.actors ?? []) {
    const actor = await factory({ node: config.node, bus, connection, log: log.child({ actor: "agent" }), registry: metrics.registry, feed: feed! });
    started.push(actor);
  }

  const status = (): NodeStatus =>
    buildStatus({
      node: config.node,
      role: config.role ?? "agent",
      links: fabric.links,
      actors: [
        ...links.map((link) => ({ name: link.actorName, state: link.state, since: new Date(link.since).toISOString() })),
        ...started.map((actor) => ({ name: actor.name, state: stateName(actor.actor.getSnapshot().value), since: "", ...(actor.detail ? { detail: actor.detail() } : {}) })),
      ],
      catalogObjects: controller.index.size,
    });
  const stopStatus = bus.serve("status", () => status());
  log.info({ node: config.node }, `${config.role ?? "agent"} ready`);

  return {
    connection,
    bus,
    server,
    controller,
    fabric,
    metrics,
    status,
    async stop() {
      stopStatus();
      await metrics.stop();
      for (const actor of started.reverse()) await actor.stop().catch((error: unknown) => log.error({ err: error, actor: actor.name }, "actor failed to stop"));
      for (const link of links) link.stop();
      fabric.stop();
      feed?.close();
      await controller.stop();
      bus.close();
      await connection.drain().catch(() => connection.close());
      await server.stop();
    },
  };
}

function stateOf(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** Gauges every leafmesh server process exposes, read when Prometheus scrapes. */
export function registerFabricMetrics(
  registry: Registry,
  read: { objects: () => number; upstream?: () => boolean; restarts: () => number; drops: () => ReadonlyMap<string, number>; leading?: () => boolean },
): void {
  new Gauge({ name: "leafmesh_catalog_objects", help: "Catalog objects this process holds", registers: [registry], collect() { this.set(read.objects()); } });
  if (read.upstream) {
    const upstream = read.upstream;
    new Gauge({ name: "leafmesh_upstream_connected", help: "1 while the leaf link to a hub or site is up", registers: [registry], collect() { this.set(upstream() ? 1 : 0); } });
  }
  if (read.leading) {
    const leading = read.leading;
    new Gauge({ name: "leafmesh_publisher_leading", help: "1 while this hub holds the catalog publisher lease", registers: [registry], collect() { this.set(leading() ? 1 : 0); } });
  }
  new Gauge({ name: "leafmesh_nats_server_restarts", help: "Times the supervised nats-server was restarted after exiting", registers: [registry], collect() { this.set(read.restarts()); } });
  new Gauge({
    name: "leafmesh_bus_dropped",
    help: "Bus messages dropped, by reason",
    labelNames: ["reason"],
    registers: [registry],
    collect() {
      for (const [reason, count] of read.drops()) this.set({ reason }, count);
    },
  });
}
