/**
 * The traffic actor: keeps a listener per proxied service port in step with the
 * catalog (UDP: a socket each; TCP: a loopback address each on one shared
 * listener, shared-listener.ts, or a socket each on a non-loopback listenHost),
 * and tells the proxier where each one listens (bus event
 * `mesh.<node>.traffic.listeners`, and `onListeners` in process). Its machine:
 * idle → reconciling ⇄ serving → stopping → stopped; a catalog change during a
 * reconcile marks it dirty and runs one more.
 */
import { assign, createActor, fromPromise, setup, type ActorRefFrom } from "xstate";
import { linkActorToBus, type ActorLink } from "../../bus/actor-link.ts";
import type { Bus } from "../../bus/bus.ts";
import type { CatalogFeed } from "../../bus/catalog-feed.ts";
import type { ListenerBinding } from "../../bus/events.ts";
import { describeError, LeafmeshError } from "../../lib/errors.ts";
import { systemClock, type Clock } from "../../lib/clock.ts";
import type { Logger } from "../../lib/log.ts";
import { ServicePortBalancer, type BalancerShared } from "../../balance/balancer.ts";
import { Counters } from "./counters.ts";
import { createTrafficCapacity, defaultUdpIdleTimeoutMs, type TrafficLimits } from "./capacity.ts";
import type { NodeTopology } from "../../balance/policy.ts";
import type { ServicePortDialer, StreamDialer } from "../../bus/streams.ts";
import { servicePortDialer } from "./service-ports.ts";
import { ListenerPublisher } from "./listener-publisher.ts";
import { ListenerPortPicker, listenOnPickedPort, nameFraction, readEphemeralRange, type PortRange } from "./listener-ports.ts";
import { OutlierDetector, type OutlierOptions } from "../../balance/outlier.ts";
import type { ServicePortPlan } from "./plan.ts";
import { PlanScope } from "./scope.ts";
import { ListenerBindings, type Listener } from "./bindings.ts";
import { TcpServicePortListener } from "./tcp-proxy.ts";
import { SharedTcpListener } from "./shared-listener.ts";
import { UdpServicePortListener } from "./udp-proxy.ts";
import { partitionAdmission } from "./partition.ts";
import type { UpstreamState } from "../../bus/partition.ts";
import { rpc } from "../../bus/rpc.ts";

export interface TrafficOptions {
  /** Optional: without a bus the actor runs alone (tests, the lab) and reports only through onListeners. */
  bus?: Bus;
  feed: CatalogFeed;
  log: Logger;
  /** This node's name: endpoints with this nodeName are preferred, others go through the dialer. */
  node: string;
  /** @default "127.0.0.1" — the proxier DNATs cluster IPs to this address; loopback keeps listeners off the network. */
  listenHost?: string;
  dialer?: StreamDialer;
  /** The tunnel's view of other nodes (site, reachable): endpoints are preferred own node, site, reachable, then the rest. */
  topology?: NodeTopology;
  /** How far the node reaches: fail-closed services refuse new connections while it is partitioned (partition.ts). */
  upstream?: UpstreamState;
  clock?: Clock;
  /** @default 3_000 — see TcpProxyOptions.connectTimeoutMs */
  connectTimeoutMs?: number;
  /** @default 10_000 — see TcpProxyOptions.remoteConnectTimeoutMs */
  remoteConnectTimeoutMs?: number;
  /** @default 3_600_000 — see TcpProxyOptions.idleTimeoutMs */
  tcpIdleTimeoutMs?: number;
  /** @default defaultUdpIdleTimeoutMs (capacity.ts) */
  udpIdleTimeoutMs?: number;
  /** @default 4_096 — see UdpProxyOptions.maxFlows */
  udpMaxFlows?: number;
  /** @default 4 — endpoints tried per TCP connection */
  maxAttempts?: number;
  outlier?: Omit<OutlierOptions, "clock">;
  /** Admission of TCP connections: defaults and why in capacity.ts (`defaultTrafficLimits`). */
  capacity?: Partial<TrafficLimits>;
  /** @default 500 — see ListenerPublisherOptions.pageSize */
  pageSize?: number;
  /** @default 100 — see ListenerPublisherOptions.minIntervalMs */
  publishIntervalMs?: number;
  /** @default 60_000 — the full set is published again this often as a safety net; a (re)started proxier asks for it at once (rpc `traffic.listeners`). */
  republishMs?: number;
  /** @default this namespace's ephemeral range — where listener ports are picked (listener-ports.ts). */
  listenerPorts?: PortRange;
  /**
   * @default true when listenHost is a loopback address — every TCP service port on one listener, each on a loopback
   * address of its own (shared-listener.ts); false: a listener per TCP service port on listenHost.
   */
  sharedTcpListener?: boolean;
  /** Random source for the random policy (tests). */
  random?: () => number;
}


/** Listeners opened concurrently while reconciling. */
const openBatch = 128;


export interface TrafficActor {
  readonly actor: ActorRefFrom<typeof trafficMachine>;
  /** Starts: opens listeners for the current catalog and follows its changes; resolves when the first reconcile is done. */
  start(): Promise<void>;
  /** Closes every listener and connection. */
  stop(): Promise<void>;
  /** Current listener of every proxied service port (the first `limit`). */
  listeners(limit?: number): ListenerBinding[];
  /** Called after every reconcile with the full set (the proxier's in-process input). */
  onListeners(listener: (bindings: ListenerBinding[]) => void): () => void;
  /** Services left out and why (invalid annotation). */
  rejected(): { service: string; reason: string; error: string }[];
  /** sharedTcpPort: the one port every TCP service port's own loopback address is on (shared-listener.ts), once open. */
  /** Service ports opened for the SOCKS proxy exactly as for a client of the cluster IP (service-ports.ts). */
  readonly servicePorts: ServicePortDialer;
  stats(): { counters: Record<string, number>; listeners: number; sharedTcpPort?: number; connections: number; bufferedBytes: number; ejected: string[]; admission: { connections: number; opening: number; waiting: number; clients: number } };
}

type MachineEvent = { type: "START" } | { type: "CHANGED" } | { type: "STOP" };

const trafficMachine = setup({
  types: { context: {} as { dirty: boolean; lastError?: string }, events: {} as MachineEvent },
  actors: {
    reconcile: fromPromise<void>(async () => undefined),
    shutdown: fromPromise<void>(async () => undefined),
  },
}).createMachine({
  id: "traffic",
  initial: "idle",
  context: { dirty: false },
  states: {
    idle: { on: { START: "reconciling", STOP: "stopped" } },
    reconciling: {
      entry: assign({ dirty: false }),
      invoke: {
        src: "reconcile",
        onDone: [{ guard: ({ context }) => context.dirty, target: "reconciling", reenter: true }, { target: "serving", actions: assign({ lastError: undefined }) }],
        onError: { target: "serving", actions: assign({ lastError: ({ event }) => describeError(event.error) }) },
      },
      on: { CHANGED: { actions: assign({ dirty: true }) }, STOP: "stopping" },
    },
    serving: { on: { CHANGED: "reconciling", STOP: "stopping" } },
    stopping: { invoke: { src: "shutdown", onDone: "stopped", onError: "stopped" } },
    stopped: { type: "final" },
  },
});

export function createTrafficActor(options: TrafficOptions): TrafficActor {
  const log = options.log;
  const clock = options.clock ?? systemClock;
  const listenHost = options.listenHost ?? "127.0.0.1";
  const counters = new Counters();
  const capacity = createTrafficCapacity({ log, clock, limits: options.capacity });
  const shared: BalancerShared = {
    node: options.node,
    clock,
    outliers: new OutlierDetector({ clock, ...options.outlier }),
    active: new Map(),
    random: options.random,
    topology: options.topology,
    admit: options.upstream && partitionAdmission({ reader: options.feed.reader, upstream: options.upstream, log }),
  };
  const listeners = new Map<string, Listener>();
  /** TCP listeners of service ports gone from the catalog that still carry connections (reset when the agent stops). */
  const retired = new Set<TcpServicePortListener>();
  // From a start of this node's own (its name's hash), not a random one: an agent started again (by hand, or by
  // itself on new keys) binds the same shared port, so the addresses a user was given without interception stay.
  const ports = new ListenerPortPicker(options.listenerPorts ?? readEphemeralRange(), () => nameFraction(options.node));
  const front = (options.sharedTcpListener ?? listenHost.startsWith("127.")) ? new SharedTcpListener({ counters, log }) : undefined;
  let frontOpen: Promise<number> | undefined;
  const subscribers = new Set<(bindings: ListenerBinding[]) => void>();
  let loggedRejections = new Set<string>();
  let rejected: { service: string; reason: string; error: string }[] = [];
  let inFlight: Promise<void> = Promise.resolve();
  let firstReconcile: { resolve: () => void; reject: (error: unknown) => void } | undefined;
  let unsubscribeFeed: (() => void) | undefined;
  let republishTimer: unknown;
  let stopServing: (() => void) | undefined;
  let link: ActorLink | undefined;

  const kept = new ListenerBindings(listenHost, front);
  /** The bindings of the listeners that have a cluster IP, the first `limit` of them (status shows a few). */
  const bindings = (limit = Number.POSITIVE_INFINITY): ListenerBinding[] => {
    const result: ListenerBinding[] = [];
    for (const listener of listeners.values()) {
      if (result.length >= limit) break;
      const binding = kept.of(listener)?.binding;
      if (binding) result.push(binding);
    }
    return result;
  };
  /** The same bindings as JSON, for the bus: each encoded once per listener state (bindings.ts). */
  const encodedBindings = (): string[] => {
    const result: string[] = [];
    for (const listener of listeners.values()) {
      const json = kept.of(listener)?.json;
      if (json) result.push(json);
    }
    return result;
  };

  const publisher = options.bus && new ListenerPublisher({ bus: options.bus, clock, bindings: encodedBindings, pageSize: options.pageSize, minIntervalMs: options.publishIntervalMs });

  // How a TCP connection reaches an endpoint: the same for the cluster IP and the SOCKS proxy (service-ports.ts).
  const connect = { shared, log, counters, refusals: capacity.refusals, dialer: options.dialer, connectTimeoutMs: options.connectTimeoutMs ?? 3_000, remoteConnectTimeoutMs: options.remoteConnectTimeoutMs ?? 10_000, maxAttempts: options.maxAttempts ?? 4 };
  const open = async (plan: ServicePortPlan): Promise<Listener> => {
    const balancer = new ServicePortBalancer(plan, shared);
    const common = { balancer, shared, log, counters, listenHost, admission: capacity.admission, refusals: capacity.refusals };
    const create = () =>
      plan.protocol === "TCP"
        ? new TcpServicePortListener({ ...common, ...connect, idleTimeoutMs: options.tcpIdleTimeoutMs ?? 3_600_000, front })
        : new UdpServicePortListener({ ...common, dialer: options.dialer, idleTimeoutMs: options.udpIdleTimeoutMs ?? defaultUdpIdleTimeoutMs, maxFlows: options.udpMaxFlows ?? 4_096 });
    if (front && plan.protocol === "TCP") {
      // The shared listener opens once, with the first TCP service port; a failed open is tried again by the next.
      frontOpen ??= front.listen(ports).catch((error: unknown) => {
        frontOpen = undefined;
        throw error;
      });
      await frontOpen;
      const socket = create();
      await socket.listen();
      return { plan, balancer, socket };
    }
    // Ports we pick (see listener-ports.ts); a taken one is skipped, and after a run of them the kernel picks.
    const socket = await listenOnPickedPort(ports, async (port) => {
      const candidate = create();
      try {
        await candidate.listen(port);
        return candidate;
      } catch (error) {
        await candidate.close().catch(() => undefined);
        throw error;
      }
    });
    return { plan, balancer, socket };
  };

  // Which Services the next reconcile plans again (scope.ts).
  const scope = new PlanScope(() => options.feed.reader, options.node);

  const reconcile = async () => {
    const { desired, considered } = scope.take(listeners.keys());
    rejected = scope.rejected();
    // Logged and counted once per (service, error) while it lasts; the set holds only current rejections.
    const current = new Set<string>();
    for (const rejection of rejected) {
      const once = `${rejection.service}:${rejection.error}`;
      current.add(once);
      if (loggedRejections.has(once)) continue;
      counters.count(`service rejected: ${rejection.reason}`);
      log.error({ service: rejection.service, error: rejection.error }, "service not proxied");
    }
    loggedRejections = current;
    let changed = false;
    for (const retiredListener of retired) if (retiredListener.connections === 0) retired.delete(retiredListener);
    for (const key of considered) {
      const listener = listeners.get(key);
      if (!listener || desired.has(key)) continue;
      listeners.delete(key);
      if (listener.socket instanceof TcpServicePortListener) {
        // Its established connections go on (kube-proxy's conntrack keeps them); the agent's stop resets them.
        await listener.socket.close({ keepConnections: true });
        if (listener.socket.connections > 0) retired.add(listener.socket);
      } else await listener.socket.close();
      changed = true;
    }
    const failures: string[] = [];
    const toOpen: ServicePortPlan[] = [];
    for (const [key, plan] of desired) {
      const existing = listeners.get(key);
      if (!existing) {
        toOpen.push(plan);
        continue;
      }
      if (existing.plan.clusterIPs.join() !== plan.clusterIPs.join() || existing.plan.port !== plan.port) changed = true;
      if (plan.protocol === "UDP" && (existing.plan.endpoints.length === 0) !== (plan.endpoints.length === 0)) changed = true;
      existing.plan = plan;
      existing.balancer.update(plan);
      // A Service made dual-stack gets its IPv6 socket now (udp-proxy.ts listen6).
      if (existing.socket instanceof UdpServicePortListener) await existing.socket.retainEndpoints(new Set(plan.endpoints.map((endpoint) => endpoint.key))).listen6();
    }
    // Opened in batches: one at a time, 10,000 services take seconds to start; all at once, a burst of fds.
    for (let start = 0; start < toOpen.length; start += openBatch) {
      const batch = toOpen.slice(start, start + openBatch);
      const results = await Promise.allSettled(batch.map(open));
      results.forEach((result, i) => {
        const key = batch[i].key;
        if (result.status === "fulfilled") {
          listeners.set(key, result.value);
          changed = true;
        } else {
          counters.count("listener failed");
          failures.push(`${key}: ${describeError(result.reason)}`);
          // Not open: the next change to this Service (or the next full pass) tries again.
          scope.retry(batch[i].namespace, batch[i].service);
        }
      });
    }
    if (shared.outliers.tracked > 0) {
      const known = new Set<string>();
      for (const listener of listeners.values()) for (const endpoint of listener.plan.endpoints) known.add(endpoint.key);
      shared.outliers.retain(known);
    }
    if (changed) {
      publisher?.request();
      if (subscribers.size > 0) {
        const current = bindings();
        for (const subscriber of subscribers) subscriber(current);
      }
    }
    // The first few by name: out of descriptors, thousands fail alike, and one log line must not carry them all.
    const more = failures.length > 5 ? `; and ${failures.length - 5} more` : "";
    if (failures.length > 0) throw new LeafmeshError("PROXY_FAILED", `could not open ${failures.length} listeners (the other services work): ${failures.slice(0, 5).join("; ")}${more}`);
  };

  const actor = createActor(
    trafficMachine.provide({
      actors: {
        reconcile: fromPromise(async () => {
          inFlight = reconcile();
          try {
            await inFlight;
          } catch (error) {
            log.error({ err: error }, "reconcile failed");
            throw error;
          } finally {
            firstReconcile?.resolve();
            firstReconcile = undefined;
          }
        }),
        shutdown: fromPromise(async () => {
          await inFlight.catch(() => undefined);
          capacity.close();
          for (const listener of listeners.values()) await listener.socket.close();
          for (const listener of retired) await listener.close();
          listeners.clear();
          retired.clear();
          await front?.close();
        }),
      },
    }),
  );

  const handle: TrafficActor = {
    actor,
    async start() {
      const ready = new Promise<void>((resolve, reject) => (firstReconcile = { resolve, reject }));
      actor.start();
      if (options.bus) {
        link = linkActorToBus({ bus: options.bus, actorName: "traffic", actor, clock, detail: () => ({ ...handle.stats() }) });
        republishTimer = clock.setInterval(() => publisher?.publishNow(), options.republishMs ?? 60_000);
        // A proxier that (re)starts asks for the current set instead of waiting for the next change.
        stopServing = options.bus.serve(rpc.trafficListeners, () => {
          publisher?.publishNow();
          return { generation: publisher?.generation ?? 0, listeners: listeners.size };
        });
      }
      unsubscribeFeed = options.feed.onChange((keys) => {
        scope.noteChanged(keys);
        actor.send({ type: "CHANGED" });
      });
      actor.send({ type: "START" });
      await ready;
      log.info({ listeners: listeners.size, listenHost }, "traffic serving");
    },
    async stop() {
      unsubscribeFeed?.();
      stopServing?.();
      clock.clearInterval(republishTimer);
      publisher?.stop();
      if (actor.getSnapshot().status === "done") return;
      const stopped = new Promise<void>((resolve) => {
        const subscription = actor.subscribe((snapshot) => {
          if (snapshot.status === "done") {
            subscription.unsubscribe();
            resolve();
          }
        });
        if (actor.getSnapshot().status === "done") resolve();
      });
      actor.send({ type: "STOP" });
      await stopped;
      link?.stop();
    },
    listeners: (limit) => bindings(limit),
    onListeners(listener) {
      subscribers.add(listener);
      return () => subscribers.delete(listener);
    },
    rejected: () => rejected,
    servicePorts: servicePortDialer({ reader: () => options.feed.reader, node: options.node, listeners, rejected: () => rejected, connect }),
    stats() {
      let connections = 0;
      let bufferedBytes = 0;
      for (const listener of listeners.values()) {
        if (listener.socket instanceof TcpServicePortListener) {
          connections += listener.socket.connections;
          bufferedBytes += listener.socket.bufferedBytes;
        } else connections += listener.socket.flows;
      }
      for (const listener of retired) connections += listener.connections;
      const sharedTcpPort = front && front.port !== 0 ? front.port : undefined;
      return { counters: counters.snapshot(), listeners: listeners.size, ...(sharedTcpPort ? { sharedTcpPort } : {}), connections, bufferedBytes, ejected: shared.outliers.ejected(), admission: capacity.admission.counts };
    },
  };
  return handle;
}
