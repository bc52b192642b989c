/**
 * The gateway actor: follows the catalog, compiles what this node serves
 * (compile.ts, pure), and keeps one listener per port of the plan on the
 * node's address (listeners.ts), opening, updating and closing them as the
 * plan changes. Every change of routes, refusals or listeners is one `routes`
 * event on `mesh.<node>.gateway.routes`; each refusal is counted by reason and
 * logged once (not again while it stays refused). A port that cannot be opened
 * (in use, no permission) is a failed listener with its reason in status and
 * the event, retried when the catalog changes; the other ports keep serving.
 */
import { createActor, setup } from "xstate";
import type { BalancerShared } from "../../balance/balancer.ts";
import { OutlierDetector, type OutlierOptions } from "../../balance/outlier.ts";
import type { NodeTopology } from "../../balance/policy.ts";
import { linkActorToBus, type ActorLink } from "../../bus/actor-link.ts";
import type { Bus } from "../../bus/bus.ts";
import type { CatalogFeed } from "../../bus/catalog-feed.ts";
import { nowIso, type MeshEventPayload } from "../../bus/events.ts";
import type { StreamDialer } from "../../bus/streams.ts";
import { systemClock, type Clock } from "../../lib/clock.ts";
import { describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { openAccessLog, type AccessLogTarget } from "./access-file.ts";
import { batchedAccessLog } from "./access-log.ts";
import { compileGateway } from "./compile.ts";
import { HttpForwarder, type AccessEntry } from "./http-proxy.ts";
import { GatewayPortListener, type ConnectionEntry, type ListenerDeps } from "./listeners.ts";
import type { GatewayPlan, PlannedBackend, PortPlan, Refusal } from "./plan.ts";
import { BackendPools, type UpstreamOptions } from "./upstream.ts";

export interface GatewayOptions {
  bus?: Bus;
  feed: CatalogFeed;
  log: Logger;
  node: string;
  /** The node's labels: a Gateway's selector picks the gateway nodes that serve it (`kubernetes.io/hostname` is the node's name). */
  labels?: Record<string, string>;
  /** The address the listeners bind: the node's external address, or 0.0.0.0 for all. */
  listenHost: string;
  /** The tunnel's stream opener: backends on other nodes are reached through it. */
  dialer?: StreamDialer;
  topology?: NodeTopology;
  clock?: Clock;
  outliers?: Omit<OutlierOptions, "clock">;
  /** The deadlines for reaching backends (upstream.ts: defaults and why there). */
  backendTimeouts?: Pick<UpstreamOptions, "connectTimeoutMs" | "remoteConnectTimeoutMs" | "http2SettingsTimeoutMs" | "http2PingTimeoutMs">;
  /** @default 50 — catalog changes arriving together (a relist, a rollout) make one re-plan. */
  replanDelayMs?: number;
  /** @default 1_000 — a port that could not be listened on is tried again after this, then after twice as long each time, up to 30 s. */
  listenRetryMs?: number;
  /** Access log lines (JSON); default: written to `accessLog`. */
  access?: (entry: AccessEntry | ConnectionEntry) => void;
  /** Where the access log goes (access-file.ts): @default { kind: "stderr" } — the actor's logger at info, as `"log":"access"`. */
  accessLog?: AccessLogTarget;
  /** The listeners' deadlines for clients (listeners.ts: defaults and why there). */
  clientTimeouts?: Pick<ListenerDeps, "helloTimeoutMs" | "idleTimeoutMs" | "handshakeTimeoutMs" | "http2IdleMs" | "http2RequestMs" | "answerStallMs">;
}

const gatewayMachine = setup({ types: { events: {} as { type: "SERVING" } | { type: "STOP" } } }).createMachine({
  id: "gateway",
  initial: "starting",
  states: { starting: { on: { SERVING: "serving", STOP: "stopped" } }, serving: { on: { STOP: "stopped" } }, stopped: { type: "final" } },
});

type RoutesEvent = MeshEventPayload<"routes">;

const statusClasses = ["0xx", "1xx", "2xx", "3xx", "4xx", "5xx"];

export function createGatewayActor(options: GatewayOptions) {
  const actor = createActor(gatewayMachine).start();
  const log = options.log;
  const clock = options.clock ?? systemClock;
  const counters = new Map<string, number>();
  const count = (reason: string) => counters.set(reason, (counters.get(reason) ?? 0) + 1);
  /** Requests and connections per route, by status class: the per-route metrics. */
  const routeStats = new Map<string, Record<string, number>>();
  const routeOutcome = (route: string, status: number) => {
    let stats = routeStats.get(route);
    if (!stats) routeStats.set(route, (stats = {}));
    // The class's name made once, not per request (1xx … 5xx; anything else by its own name).
    const bucket = statusClasses[Math.floor(status / 100)] ?? `${Math.floor(status / 100)}xx`;
    stats[bucket] = (stats[bucket] ?? 0) + 1;
  };
  const accessSink = openAccessLog(options.accessLog ?? { kind: "stderr" }, log);
  const accessLog = accessSink.log && batchedAccessLog(accessSink.log);
  const access = options.access ?? (accessLog ? (entry: AccessEntry | ConnectionEntry) => accessLog.write(entry, entry.kind === "http" ? "request" : "connection") : () => undefined);
  const shared: BalancerShared = { node: options.node, clock, outliers: new OutlierDetector({ clock, ...options.outliers }), active: new Map(), topology: options.topology };
  const pools = new BackendPools({ node: options.node, dialer: options.dialer, shared, count, log, ...options.backendTimeouts });
  const forwarder = new HttpForwarder({ pools, log, count, routeOutcome, access });
  const listeners = new Map<number, GatewayPortListener>();
  let plan: GatewayPlan = { ports: new Map(), routes: [], refused: [], gateways: [] };
  let lastEvent = "";
  let knownRefusals = new Set<string>();
  let link: ActorLink | undefined;
  let unsubscribe: (() => void) | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  /** A failed listener's next try, and how long after the last (doubling to retryMaxMs while it keeps failing). */
  let retryTimer: NodeJS.Timeout | undefined;
  let retryMs = 0;
  let reconciling: Promise<void> = Promise.resolve();

  const kindOf = (port: PortPlan): "http" | "tls" | "tcp" => port.kind;

  const listenerRows = () =>
    [...listeners.values()]
      .map((listener) => ({ port: listener.port, kind: kindOf(listener.plan), ...listener.state, connections: listener.connections }))
      .sort((a, b) => a.port - b.port);

  const backendsOf = (gatewayPlan: GatewayPlan): PlannedBackend[] => {
    const backends: PlannedBackend[] = [];
    const fromHttp = (hosts: Extract<PortPlan, { kind: "http" }>["hosts"]) => {
      for (const [, host] of hosts.patterns()) for (const entry of host.entries) backends.push(...entry.rule.backends);
    };
    for (const port of gatewayPlan.ports.values()) {
      if (port.kind === "tcp") backends.push(...port.route.backends);
      else if (port.kind === "http") fromHttp(port.hosts);
      else {
        for (const [, entry] of port.sni.patterns()) {
          if (entry.mode === "passthrough") backends.push(...entry.route.backends);
          else if (entry.inner.kind === "tcp") backends.push(...entry.inner.route.backends);
          else fromHttp(entry.inner.hosts);
        }
      }
    }
    return backends;
  };

  const noteRefusals = (refused: Refusal[]) => {
    const now = new Set<string>();
    for (const refusal of refused) {
      const id = `${refusal.key}\u0000${refusal.object}\u0000${refusal.error}`;
      now.add(id);
      if (knownRefusals.has(id)) continue;
      count(`refused: ${refusal.reason}`);
      log.warn({ object: refusal.object, reason: refusal.reason, error: refusal.error }, `gateway refuses ${refusal.object}: ${refusal.error}`);
    }
    knownRefusals = now;
  };

  const publish = () => {
    const payload: RoutesEvent = {
      at: nowIso(clock.now),
      gateways: plan.gateways,
      routes: plan.routes,
      refused: plan.refused.map(({ object, reason, error }) => ({ object, reason, error })),
      listeners: listenerRows().map(({ port, kind, state, ...rest }) => ({ port, kind, state, ...("error" in rest ? { error: rest.error } : {}) })),
    };
    const { at: _at, ...comparable } = payload;
    const text = JSON.stringify(comparable);
    if (text === lastEvent) return;
    lastEvent = text;
    options.bus?.publish("gateway", "routes", payload);
  };

  const reconcile = async () => {
    if (stopped) return;
    const reader = options.feed.reader;
    plan = compileGateway(reader, { name: options.node, labels: options.labels ?? {} });
    pools.refresh(reader, backendsOf(plan));
    noteRefusals(plan.refused);
    const deps = { host: options.listenHost, forwarder, pools, log, count, routeOutcome, access, ...options.clientTimeouts };
    for (const [port, listener] of listeners) {
      const next = plan.ports.get(port);
      // A port whose kind changed gets a new listener: its connections were accepted as another kind.
      if (!next || next.kind !== listener.plan.kind || listener.state.state === "failed") {
        listeners.delete(port);
        await listener.close();
        if (next) log.info({ port }, "gateway listener replaced");
      } else listener.update(next);
    }
    for (const [port, portPlan] of plan.ports) {
      if (listeners.has(port)) continue;
      const listener = new GatewayPortListener(port, portPlan, deps);
      listeners.set(port, listener);
      try {
        await listener.listen();
        log.info({ port, kind: portPlan.kind, host: options.listenHost }, "gateway listening");
      } catch (error) {
        count("listener failed");
        log.error({ port, err: describeError(error) }, `gateway cannot listen on port ${port}; the other ports keep serving; tried again in ${Math.round(nextRetryMs() / 1000)} s`);
      }
    }
    // A port that could not be had (held by another process for a while, no descriptor left in a burst) is tried again
    // by itself: before, only a catalog change re-planned it, and on a quiet catalog the port stayed shut for good.
    if ([...listeners.values()].some((listener) => listener.state.state === "failed")) {
      if (!retryTimer && !stopped) {
        retryMs = nextRetryMs();
        retryTimer = setTimeout(() => {
          retryTimer = undefined;
          schedule();
        }, retryMs);
      }
    } else retryMs = 0;
    publish();
  };

  const nextRetryMs = () => Math.min(retryMs === 0 ? (options.listenRetryMs ?? 1_000) : retryMs * 2, 30_000);

  const schedule = () => {
    if (stopped || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      reconciling = reconciling.then(reconcile).catch((error: unknown) => {
        count("re-plan failed");
        log.error({ err: describeError(error) }, "gateway re-plan failed; serving the previous plan");
      });
    }, options.replanDelayMs ?? 50);
  };

  const stats = () => ({
    counters: Object.fromEntries(counters),
    ejections: shared.outliers.ejections,
    connections: [...listeners.values()].reduce((sum, listener) => sum + listener.connections, 0),
  });

  return {
    actor,
    /** What status shows: gateways, listeners with their state, routes, refusals with reasons, per-route outcomes, counters, endpoints ejected. */
    status: () => ({
      gateways: plan.gateways,
      listeners: listenerRows(),
      routes: plan.routes,
      refused: plan.refused.map(({ object, reason, error }) => ({ object, reason, error })),
      routeStats: Object.fromEntries(routeStats),
      counters: Object.fromEntries(counters),
      /** Endpoints left out now by outlier ejection (ip:port). */
      ejected: shared.outliers.ejected(),
    }),
    stats,
    /** The plan in force (for tests and the bench). */
    get plan(): GatewayPlan {
      return plan;
    },
    async start() {
      unsubscribe = options.feed.onChange(() => schedule());
      reconciling = reconciling.then(reconcile);
      await reconciling;
      actor.send({ type: "SERVING" });
      if (options.bus) link = linkActorToBus({ bus: options.bus, actorName: "gateway", actor, detail: () => ({ listeners: listeners.size, routes: plan.routes.length, refused: plan.refused.length }) });
    },
    /** Resolves once the re-plans scheduled so far are done (tests wait on it instead of sleeping). */
    async settled() {
      while (timer) await new Promise((resolve) => setTimeout(resolve, options.replanDelayMs ?? 50));
      await reconciling;
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (retryTimer) clearTimeout(retryTimer);
      unsubscribe?.();
      link?.stop();
      await reconciling.catch(() => undefined);
      for (const listener of listeners.values()) await listener.close();
      listeners.clear();
      pools.closeIdle();
      accessLog?.flush();
      accessSink.close();
      actor.send({ type: "STOP" });
    },
  };
}

export type GatewayActor = ReturnType<typeof createGatewayActor>;
