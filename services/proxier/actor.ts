/**
 * The proxier actor: keeps the kernel's interception rules equal to "every
 * proxied cluster IP:port goes to its traffic listener". Its machine:
 * idle → preparing (tool check, leftovers of a crashed run removed) → waiting
 * (no listener set yet) → syncing ⇄ synced, retrying after a failed sync, and
 * removing → stopped on stop. With intercept "off" it stays in `off`.
 *
 * A change after a quiet spell is synced at once; changes that follow a sync
 * closer than minSyncMs wait in `pausing` until then and go in one sync, as
 * kube-proxy's --iptables-min-sync-period does: under churn (a service added and
 * removed every few ms) each sync ran nft and ip two or three times, back to back.
 */
import { assign, createActor, fromPromise, setup, type ActorRefFrom } from "xstate";
import { linkActorToBus, waitForState, type ActorLink } from "../../bus/actor-link.ts";
import type { Bus } from "../../bus/bus.ts";
import type { CatalogFeed } from "../../bus/catalog-feed.ts";
import { kindOfKey } from "../../bus/catalog.ts";
import { nowIso, type ListenerBinding } from "../../bus/events.ts";
import { systemClock, type Clock } from "../../lib/clock.ts";
import { describeError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { runTool, type InterceptBackend, type InterceptMode, type InterceptState } from "./backend.ts";
import { IptablesBackend } from "./iptables.ts";
import type { ListenerSource } from "./listener-source.ts";
import { NftablesBackend } from "./nftables.ts";
import { buildRules, type InterceptRule, type RuleClash } from "./rules.ts";
import { changedUdpTargets, clearUdpConntrack } from "./conntrack.ts";
import { ClusterRoutes } from "./routes.ts";
import { ipv6Unusable } from "./host-ipv6.ts";

export interface ProxierOptions {
  /** Optional: without a bus the actor runs alone (tests, the lab) and publishes nothing. */
  bus?: Bus;
  feed: CatalogFeed;
  log: Logger;
  /** "iptables" | "nftables" | "off", or a backend object (tests). */
  intercept: InterceptMode | InterceptBackend;
  /** traffic's listener ports: `busListenerSource(bus)` in the agent, or the traffic actor itself. */
  listeners: ListenerSource;
  /** @default "127.0.0.1" — where traffic listens (TrafficOptions.listenHost). */
  listenHost?: string;
  clock?: Clock;
  /** @default 2_000 — a failed sync (a lock held by another tool) is retried this often. */
  retryMs?: number;
  /** @default 1_000 — at least this long from one sync's start to the next one's: changes meanwhile wait and go in one. */
  minSyncMs?: number;
  /** Run the tools inside this network namespace (tests); the current one when omitted. */
  namespace?: string;
}

export interface ProxierActor {
  readonly actor: ActorRefFrom<typeof proxierMachine>;
  /** Prepares the backend (throws TOOL_MISSING with the Debian package) and starts following listeners. */
  start(): Promise<void>;
  /** Removes every rule it added. */
  stop(): Promise<void>;
  inspect(): Promise<InterceptState>;
  /** The cluster IPs routed on `lo` now (routes.ts), as the kernel lists them. */
  routes(): Promise<string[]>;
  /** ipv6: "on", or "off: <why>" (IPv6 cluster IPs not intercepted), with interception on. */
  stats(): { backend: string; syncs: number; failures: number; rules: number; routes: number; lastSyncMs?: number; lastError?: string; clashes: RuleClash[]; ipv6?: string };
  /** Resolves after the next sync that includes everything known now. */
  synced(): Promise<void>;
}

type MachineEvent = { type: "START" } | { type: "CHANGED" } | { type: "STOP" };

const proxierMachine = setup({
  types: { context: {} as { off: boolean; dirty: boolean; haveListeners: boolean; lastError?: string }, events: {} as MachineEvent, input: {} as { off: boolean } },
  actors: {
    prepare: fromPromise<void>(async () => undefined),
    sync: fromPromise<void>(async () => undefined),
    remove: fromPromise<void>(async () => undefined),
  },
  delays: { retry: 2_000, gap: 0 },
}).createMachine({
  id: "proxier",
  initial: "idle",
  context: ({ input }) => ({ off: input.off, dirty: false, haveListeners: false }),
  states: {
    idle: {
      on: {
        START: [{ guard: ({ context }) => context.off, target: "off" }, { target: "preparing" }],
        // A listener set known before start (traffic started first) is synced right after preparing.
        CHANGED: { actions: assign({ haveListeners: true }) },
        STOP: "stopped",
      },
    },
    off: { on: { STOP: "stopped" } },
    preparing: {
      invoke: {
        src: "prepare",
        onDone: [{ guard: ({ context }) => context.haveListeners, target: "syncing" }, { target: "waiting" }],
        onError: { target: "failed", actions: assign({ lastError: ({ event }) => describeError(event.error) }) },
      },
      on: { CHANGED: { actions: assign({ haveListeners: true }) }, STOP: "stopped" },
    },
    waiting: { on: { CHANGED: { target: "syncing", actions: assign({ haveListeners: true }) }, STOP: "removing" } },
    syncing: {
      entry: assign({ dirty: false }),
      invoke: {
        src: "sync",
        onDone: [{ guard: ({ context }) => context.dirty, target: "pausing" }, { target: "synced", actions: assign({ lastError: undefined }) }],
        onError: { target: "retrying", actions: assign({ lastError: ({ event }) => describeError(event.error) }) },
      },
      on: { CHANGED: { actions: assign({ dirty: true }) }, STOP: "removing" },
    },
    synced: { on: { CHANGED: "pausing", STOP: "removing" } },
    /** Until minSyncMs after the last sync's start (no wait after a quiet spell); the sync then takes every change made meanwhile. */
    pausing: { after: { gap: "syncing" }, on: { STOP: "removing" } },
    retrying: { after: { retry: "syncing" }, on: { STOP: "removing" } },
    /** prepare failed (a missing tool): nothing to retry until the operator fixes it. */
    failed: { on: { STOP: "stopped" } },
    removing: { invoke: { src: "remove", onDone: "stopped", onError: { target: "stopped", actions: assign({ lastError: ({ event }) => describeError(event.error) }) } } },
    stopped: { type: "final" },
  },
});

const localnetSysctl = "net.ipv4.conf.all.route_localnet";

export function createBackend(mode: InterceptMode, namespace?: string): InterceptBackend | undefined {
  if (mode === "iptables") return new IptablesBackend({ namespace });
  if (mode === "nftables") return new NftablesBackend({ namespace });
  return undefined;
}

export function createProxierActor(options: ProxierOptions): ProxierActor {
  const log = options.log;
  const clock = options.clock ?? systemClock;
  const listenHost = options.listenHost ?? "127.0.0.1";
  const backend = typeof options.intercept === "string" ? createBackend(options.intercept, options.namespace) : options.intercept;
  // The other kind's rules, as a run killed under the other --intercept left them (the operator changed it since).
  const other = options.intercept === "iptables" ? createBackend("nftables", options.namespace) : options.intercept === "nftables" ? createBackend("iptables", options.namespace) : undefined;
  const backendName = backend?.name ?? "off";
  // With interception on, every intercepted cluster IP is routed on lo (routes.ts: reachable without a default route, and full-size segments).
  const routes = backend ? new ClusterRoutes({ namespace: options.namespace }) : undefined;
  let bindings: ListenerBinding[] = options.listeners.listeners?.() ?? [];
  let lastApplied: string | undefined;
  let appliedRules: InterceptRule[] = [];
  let conntrackMissingLogged = false;
  let lastLoggedFailure: string | undefined;
  let clashes: RuleClash[] = [];
  let loggedClashes = new Set<string>();
  let loggedUnserved = "";
  const counters = { syncs: 0, failures: 0, rules: 0, lastSyncMs: undefined as number | undefined };
  const minSyncMs = options.minSyncMs ?? 1_000;
  let lastSyncStarted = -Infinity;
  let inFlight: Promise<void> = Promise.resolve();
  /** This run turned route_localnet on (it was off): stop turns it off again. */
  let localnetTurnedOn = false;
  let syncWaiters: (() => void)[] = [];
  /** IPv6 cluster IPs are intercepted (prepare found IPv6 usable and put its guard, prefix and address in). */
  let ipv6 = false;
  /** Why they are not, when they are not: said once per run, in the log and in stats. */
  let ipv6Off: string | undefined;
  const unsubscribers: (() => void)[] = [];
  let link: ActorLink | undefined;

  const sync = async () => {
    if (!backend) return;
    const waiters = syncWaiters;
    syncWaiters = [];
    const built = buildRules(bindings, { listenHost, catalog: options.feed.reader, ipv6 });
    clashes = built.clashes;
    const current = new Set<string>();
    for (const clash of clashes) {
      current.add(clash.error);
      if (loggedClashes.has(clash.error)) continue;
      log.error({ clusterIP: clash.clusterIP, port: clash.port, kept: clash.kept, dropped: clash.dropped }, clash.error);
    }
    loggedClashes = current; // logged once while it lasts, again if it comes back
    const unserved = built.withoutIpv6Listener.join();
    if (unserved && unserved !== loggedUnserved) {
      const first = built.withoutIpv6Listener.slice(0, 5).join(", ");
      log.warn({ servicePorts: built.withoutIpv6Listener.length, first }, `IPv6 cluster IPs of ${built.withoutIpv6Listener.length} service port(s) are not intercepted (${first}): traffic has no IPv6 socket for them (a non-loopback --proxy-host gives each TCP service port an IPv4 socket of its own; the loopback default serves both families)`);
    }
    loggedUnserved = unserved;
    const wanted = JSON.stringify(built.rules);
    if (wanted === lastApplied) {
      for (const waiter of waiters) waiter();
      return;
    }
    const started = performance.now();
    try {
      await backend.sync(built.rules);
      await routes?.sync(built.rules.map((rule) => rule.clusterIP));
    } catch (error) {
      counters.failures++;
      syncWaiters.push(...waiters);
      options.bus?.publish("proxier", "rules", { at: nowIso(clock.now), backend: backendName, services: built.rules.length, durationMs: performance.now() - started, error: describeError(error) });
      const message = describeError(error);
      if (message !== lastLoggedFailure) log.error({ err: error }, "rule sync failed, retrying (logged again only when the error changes)");
      lastLoggedFailure = message;
      throw error;
    }
    lastApplied = wanted;
    const stale = changedUdpTargets(appliedRules, built.rules);
    appliedRules = built.rules;
    try {
      const cleared = await clearUdpConntrack(stale, { namespace: options.namespace, listenHost, log });
      if (cleared.missing && !conntrackMissingLogged) {
        conntrackMissingLogged = true;
        log.warn("conntrack is not installed (apt-get install -y conntrack): UDP clients that keep their source port may reach an old listener after a restart until their conntrack entry expires");
      }
    } catch (error) {
      log.warn({ err: error }, "clearing stale UDP conntrack entries failed");
    }
    if (lastLoggedFailure) log.info({ rules: built.rules.length }, "rule sync works again");
    lastLoggedFailure = undefined;
    counters.syncs++;
    counters.rules = built.rules.length;
    counters.lastSyncMs = performance.now() - started;
    options.bus?.publish("proxier", "rules", { at: nowIso(clock.now), backend: backendName, services: built.rules.length, durationMs: counters.lastSyncMs });
    log.debug({ rules: built.rules.length, ms: counters.lastSyncMs }, "rules synced");
    for (const waiter of waiters) waiter();
  };

  const actor = createActor(
    proxierMachine.provide({
      actors: {
        prepare: fromPromise(async () => {
          if (!backend) return;
          // A guard left in the kernel is a crashed run's: that run had turned route_localnet on, unless it found it on.
          const leftover = await backend.inspect().catch(() => undefined);
          // Read with the other kind's tool, where it is installed (inspect fails without it: nothing of it to find).
          const otherLeftover = await other?.inspect().catch(() => undefined);
          // IPv6 cluster IPs when the host has IPv6: the backend's IPv6 guard goes in before the listener prefix is routed.
          ipv6Off = await ipv6Unusable({ namespace: options.namespace });
          const prepared = await backend.prepare({ ipv6: ipv6Off === undefined }); // the localnet guard is in before route_localnet goes on
          if (!ipv6Off && !prepared.ipv6) ipv6Off = prepared.reason ?? "the backend keeps no IPv6 rules";
          if (other && otherLeftover && (otherLeftover.guard || otherLeftover.hooks > 0 || otherLeftover.rules.length > 0)) {
            // After this run's own guard is in: 127.0.0.0/8 stays guarded while the crashed run's guard goes.
            await other.remove();
            log.info({ backend: other.name, rules: otherLeftover.rules.length }, `removed the ${other.name} rules a run killed under --intercept ${other.name} left`);
          }
          await routes?.prepare();
          if (!ipv6Off) {
            try {
              await routes?.prepareIpv6();
              ipv6 = true;
            } catch (error) {
              ipv6Off = describeError(error);
            }
          }
          if (ipv6Off) log.warn({ reason: ipv6Off }, `IPv6 cluster IPs are not intercepted (IPv4 ones are): ${ipv6Off}`);
          // DNAT to a loopback listener from PREROUTING is dropped as martian unless route_localnet is on (kube-proxy sets it for the same reason).
          if (listenHost.startsWith("127.")) {
            const before = await runTool(["sysctl", "-n", localnetSysctl], { namespace: options.namespace });
            const result = await runTool(["sysctl", "-q", "-w", `${localnetSysctl}=1`], { namespace: options.namespace });
            if (result.code !== 0) log.warn({ stderr: result.stderr.trim() }, `could not set ${localnetSysctl}=1: cluster IPs work for this host's clients only`);
            else localnetTurnedOn = before.stdout.trim() === "0" || leftover?.guard === true || otherLeftover?.guard === true;
          }
        }),
        sync: fromPromise(async () => {
          lastSyncStarted = clock.monotonic();
          inFlight = sync();
          await inFlight;
        }),
        remove: fromPromise(async () => {
          await inFlight.catch(() => undefined);
          // route_localnet goes back off before the guard goes: loopback is never open to the network in between.
          if (localnetTurnedOn) {
            const result = await runTool(["sysctl", "-q", "-w", `${localnetSysctl}=0`], { namespace: options.namespace });
            if (result.code === 0) localnetTurnedOn = false;
            else log.warn({ stderr: result.stderr.trim() }, `could not set ${localnetSysctl} back to 0`);
          }
          // Both, even when one fails: a rule or a route left behind would outlive the agent.
          const removed = await Promise.allSettled([backend?.remove(), routes?.remove()]);
          ipv6 = false;
          lastApplied = undefined;
          appliedRules = [];
          const failed = removed.find((result) => result.status === "rejected");
          if (failed) throw failed.reason;
        }),
      },
      delays: { retry: options.retryMs ?? 2_000, gap: () => Math.max(0, lastSyncStarted + minSyncMs - clock.monotonic()) },
    }),
    { input: { off: !backend }, clock: clock as unknown as NonNullable<Parameters<typeof createActor>[1]>["clock"] },
  );

  const waitFor = (test: (state: string) => boolean) => waitForState(actor, test);

  return {
    actor,
    async start() {
      actor.start();
      if (options.bus) link = linkActorToBus({ bus: options.bus, actorName: "proxier", actor, clock, detail: () => ({ ...this.stats(), clashes: clashes.length }) });
      unsubscribers.push(
        options.listeners.onListeners((next) => {
          bindings = next;
          actor.send({ type: "CHANGED" });
        }),
        // The rules read only Services from the catalog (gone, or labelled noproxy): slice and rule changes leave them as they are.
        options.feed.onChange((keys) => {
          if (actor.getSnapshot().context.haveListeners && keys.some((key) => kindOfKey(key) === "Service")) actor.send({ type: "CHANGED" });
        }),
      );
      // A set that arrived between construction and the subscription above is not lost.
      bindings = options.listeners.listeners?.() ?? bindings;
      if (bindings.length > 0) actor.send({ type: "CHANGED" });
      actor.send({ type: "START" });
      const state = await waitFor((value) => value !== "idle" && value !== "preparing");
      if (state === "failed") throw new Error(actor.getSnapshot().context.lastError);
      log.info({ backend: backendName, state }, "proxier started");
    },
    async stop() {
      for (const unsubscribe of unsubscribers.splice(0)) unsubscribe();
      if (actor.getSnapshot().status === "done") return;
      actor.send({ type: "STOP" });
      await waitFor(() => false);
      link?.stop();
      const error = actor.getSnapshot().context.lastError;
      if (error && backend) log.warn({ error }, "proxier stopped with an error");
    },
    inspect: () => (backend ? backend.inspect() : Promise.resolve({ rules: [], hooks: 0, guard: false })),
    routes: () => (routes ? routes.list() : Promise.resolve([])),
    stats: () => ({ backend: backendName, ...counters, routes: routes?.size ?? 0, lastError: actor.getSnapshot().context.lastError, clashes, ...(backend ? { ipv6: ipv6Off ? `off: ${ipv6Off}` : ipv6 ? "on" : "off" } : {}) }),
    synced() {
      return new Promise<void>((resolve) => {
        syncWaiters.push(resolve);
        actor.send({ type: "CHANGED" });
      });
    },
  };
}
