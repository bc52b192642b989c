/**
 * The start-up every leafmesh server process shares (hub, site, agent): its
 * supervised nats-server, the local client connection and the bus on it, the
 * fabric monitor, the metrics and health endpoints, the `status` reply, and one
 * shutdown that undoes all of it in reverse order. A role composes this and
 * adds its own parts (publisher, controller, actors), each registering how it
 * stops; a start-up that fails half-way stops what it had already started
 * (without this, a hub whose publisher could not open left its nats-server
 * running).
 *
 * ```ts
 * const node = await startServerProcess({ name: "hub-1", role: "hub", server: { dataDir, monitor, configText }, client, log });
 * node.onStop(() => publisher.stop());           // stopped before the bus and the server
 * node.watchFabric({ upstreams: [] });
 * await node.serveMetrics({ listen, health, metrics: { objects: () => 0 } });
 * node.serveStatus(() => status());
 * await node.stop();
 * ```
 */
import type { ConnectionOptions, NatsConnection } from "@nats-io/transport-node";
import { Gauge, type Registry } from "../lib/prom.ts";
import type { Bus } from "../bus/bus.ts";
import { describeError, LeafmeshError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import type { Health, MetricsServer } from "../lib/metrics.ts";
import type { FabricMonitor } from "../nats/fabric-monitor.ts";
import type { HostPort } from "../nats/render.ts";
import { NatsServerSupervisor } from "../nats/supervisor.ts";
import { readyAgain } from "../nats/ready-again.ts";
import type { ListenFlag } from "../nats/start-hints.ts";

/**
 * What a server process needs once its nats-server is up: nats.js, the bus and its event schemas, the fabric
 * monitor, metrics. Loaded while the server starts (~100 ms of imports, on the main thread while the server
 * boots on another core), not before it is spawned: a fresh agent's server, its leaf link and its catalog
 * mirror were ~150 ms later for them (bench/fabric, issue 17).
 */
async function loadServerParts() {
  const [bus, connect, events, metrics, fabric, rpc] = await Promise.all([
    import("../bus/bus.ts"),
    import("../bus/connect.ts"),
    import("../bus/events.ts"),
    import("../lib/metrics.ts"),
    import("../nats/fabric-monitor.ts"),
    import("../bus/rpc.ts"),
  ]);
  return { Bus: bus.Bus, connectNats: connect.connectNats, localClientUrl: connect.localClientUrl, nowIso: events.nowIso, MetricsServer: metrics.MetricsServer, FabricMonitor: fabric.FabricMonitor, rpc: rpc.rpc };
}

export type ServerRole = "hub" | "site" | "agent";

export interface ServerProcessOptions {
  /** The server's name (hub name, node name, site server name): the nats server_name and the bus's node. */
  name: string;
  role: ServerRole;
  server: {
    dataDir: string;
    monitor: HostPort;
    configText: string;
    /** Accounts nats-server must resolve at start (secured hubs and sites: nats/account-preload.ts). */
    loadAccountsAtStart?: { storeDir: string; accounts: string[] };
    /** What a line of the server's log means for this node (NatsServerOptions.explainLine). */
    explainLine?: (line: string) => { kind: string; text: string } | undefined;
    /** The role's flags for the server's listen addresses (NatsServerOptions.listenFlags). */
    listenFlags?: readonly ListenFlag[];
  };
  /** The server's client address: this process connects to it over loopback. */
  client: HostPort;
  /** Credentials and TLS of this process's own client (undefined: --insecure). */
  connectOptions?: Partial<ConnectionOptions>;
  /** The process's logger; everything below gets a child with `node` set. */
  log: Logger;
  /** Called once the server's process is spawned: a role starts loading its own parts then, while the server starts. */
  alsoLoad?: () => void;
  /** A stop asked while the server starts (Ctrl-C, SIGTERM): the start ends with INTERRUPTED, its server stopped. */
  signal?: AbortSignal;
}

export interface ServerProcess {
  readonly log: Logger;
  readonly server: NatsServerSupervisor;
  readonly connection: NatsConnection;
  readonly bus: Bus;
  /** Set by `watchFabric`. */
  readonly fabric: FabricMonitor | undefined;
  /** The process's metrics registry; served once `serveMetrics` is called with an address. */
  readonly metrics: MetricsServer;
  /** Registers how a part stops; parts stop in the reverse order of registration, before the bus and the server. */
  onStop(stop: () => Promise<void> | void, what?: string): void;
  /** Starts watching the server's fabric links (leaf upstream, leafs, routes, gateways) onto the bus. */
  watchFabric(options?: { upstreams?: string[] }): FabricMonitor;
  /** Serves /metrics, /healthz and /readyz (when `listen` is given) with the gauges every server process has. */
  serveMetrics(options: { listen?: HostPort; health: () => Health; objects: () => number; upstream?: () => boolean; leading?: () => boolean }): Promise<void>;
  /** Answers `rpc.<name>.status`. */
  serveStatus(status: () => unknown): void;
  /**
   * Throws INTERRUPTED once the start's signal has aborted: a role calls it between the parts it starts after its
   * server is ready, and stops what it started (`stop`) when it throws.
   */
  throwIfStopAsked(): void;
  stop(): Promise<void>;
}

export async function startServerProcess(options: ServerProcessOptions): Promise<ServerProcess> {
  const log = options.log.child({ node: options.name });
  const stops: { what: string; stop: () => Promise<void> | void }[] = [];
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      server.stopBegun();
      for (const { what, stop } of stops.reverse()) {
        try {
          await stop();
        } catch (error) {
          log.error({ err: describeError(error), part: what }, `${what} failed to stop`);
        }
      }
    })());

  const server = new NatsServerSupervisor({
    name: options.name,
    dataDir: options.server.dataDir,
    monitor: options.server.monitor,
    log: log.child({ actor: "fabric" }),
    loadAccountsAtStart: options.server.loadAccountsAtStart,
    configText: options.server.configText,
    explainLine: options.server.explainLine,
    listenFlags: options.server.listenFlags,
  });
  try {
    log.info({ client: options.client }, `starting the ${options.role}'s nats-server`);
    stops.push({ what: "nats-server", stop: () => server.stop() });
    let loading: ReturnType<typeof loadServerParts> | undefined;
    const load = () => (loading ??= loadServerParts());
    await server.start(() => {
      // Unheard until awaited below: a start that fails first must not leave a rejection unhandled.
      load().catch(() => undefined);
      options.alsoLoad?.();
    }, options.signal);
    const { Bus, connectNats, localClientUrl, nowIso, MetricsServer, FabricMonitor, rpc } = await load();
    const connectLocal = () => connectNats({ ...options.connectOptions, servers: [localClientUrl(options.client)], name: `leafmesh-${options.role} ${options.name}` });
    const restartsBefore = server.actor.getSnapshot().context.restarts;
    const connection = await connectLocal().catch(async (error: unknown) => {
      // Its server died under this first connection (a crash or a kill just after it was ready): said as "cannot connect
      // to NATS ... Is the leafmesh hub or agent running there?", while the supervisor was starting it again. Connected
      // to that one instead; a server that does not come back is said as what it is.
      // The connection may hear of it before the supervisor hears of the exit: a moment to hear it, in this failure only.
      for (let wait = 0; wait < 10 && server.actor.getSnapshot().context.restarts === restartsBefore; wait++) await new Promise((resolve) => setTimeout(resolve, 100));
      const { restarts, lastExit } = server.actor.getSnapshot().context;
      if (restarts === restartsBefore) throw error;
      await readyAgain(server, 30_000, options.signal).catch((cause: unknown) => {
        throw new LeafmeshError("NATS_SERVER_FAILED", `the ${options.role}'s nats-server '${options.name}' ${lastExit} just after it was ready, and: ${describeError(cause)}. Its last lines:\n${server.recentLines.slice(-8).join("\n")}`, { cause });
      });
      log.warn({ detail: lastExit }, "the nats-server exited as this process connected to it; connecting to it again, restarted");
      return connectLocal();
    });
    stops.push({ what: "the local NATS connection", stop: () => connection.drain().catch(() => connection.close()) });
    const bus = new Bus({ connection, node: options.name, log: log.child({ actor: "bus" }) });
    stops.push({ what: "the bus", stop: () => bus.close() });
    server.options.onStatus = (status, detail) => bus.publish("fabric", "server", { at: nowIso(), status, detail });
    const metrics = new MetricsServer({ log: log.child({ actor: "metrics" }), labels: { node: options.name, role: options.role } });
    let fabric: FabricMonitor | undefined;
    return {
      log,
      server,
      connection,
      bus,
      get fabric() {
        return fabric;
      },
      metrics,
      onStop(partStop, what = "a part") {
        stops.push({ what, stop: partStop });
      },
      watchFabric(watch = {}) {
        fabric = new FabricMonitor({ bus, log: log.child({ actor: "fabric" }), monitor: options.server.monitor, upstreams: watch.upstreams });
        fabric.start();
        const started = fabric;
        stops.push({ what: "the fabric monitor", stop: () => started.stop() });
        return started;
      },
      async serveMetrics(serve) {
        metrics.setHealth(serve.health);
        registerFabricMetrics(metrics.registry, {
          objects: serve.objects,
          upstream: serve.upstream,
          leading: serve.leading,
          restarts: () => server.actor.getSnapshot().context.restarts,
          drops: () => bus.drops,
        });
        if (!serve.listen) return;
        await metrics.start(serve.listen);
        stops.push({ what: "the metrics server", stop: () => metrics.stop() });
      },
      serveStatus(status) {
        const stopServing = bus.serve(rpc.status, () => status());
        stops.push({ what: "the status reply", stop: stopServing });
      },
      throwIfStopAsked() {
        if (options.signal?.aborted) throw new LeafmeshError("INTERRUPTED", `stopped while it was starting, after its nats-server '${options.name}' was ready: nothing is left running`);
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
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
