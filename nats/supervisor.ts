/**
 * Supervises one `nats-server` child: writes its config, starts it, waits until
 * its monitor says healthy, forwards its log lines into our structured log,
 * restarts it with backoff when it crashes, and stops it cleanly. The lifecycle
 * is an xstate machine (idle → starting → ready → backoff → starting …,
 * stopping → stopped; failed when it never came up), observable by the bus link.
 *
 * The child gets PR_SET_PDEATHSIG through `setpriv` so a `kill -9` of leafmesh
 * does not leave an orphaned server holding the ports and the JetStream store.
 *
 * ```ts
 * const server = new NatsServerSupervisor({ name: "edge-a", configText, dataDir, monitor, log });
 * await server.start();        // resolves when /healthz answers ok
 * server.actor.getSnapshot();  // state for status and heartbeats
 * await server.stop();
 * ```
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync, readFileSync, existsSync, rmSync } from "node:fs";
import { ReadyLine } from "./ready-line.ts";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { assign, createActor, setup } from "xstate";
import { LeafmeshError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";
import type { HostPort } from "./render.ts";
import { markAccountsForLoadAtStart } from "./account-preload.ts";
import { monitorBase, monitorGet } from "./monitor-http.ts";
import { ServerLines } from "./server-lines.ts";
import { makeDirectories } from "../lib/make-dirs.ts";
import { checkServerVersion, readServerVersion } from "./server-version.ts";
import { missingBinary, testConfiguration, writeConfig } from "./server-binary.ts";
import { refusedListener, startFailureHint, type ListenFlag } from "./start-hints.ts";

export { checkNatsServerBinary } from "./server-binary.ts";

/** @default 300 — how long an unexpected exit waits to be said: a stop that comes meanwhile makes it no failure. */
const exitReportDelayMs = 300;

export interface NatsServerOptions {
  /** Used in logs and file names. */
  name: string;
  configText: string;
  /** Where the config, the pid file and (by the config) the JetStream store live. */
  dataDir: string;
  monitor: HostPort;
  log: Logger;
  /** @default "nats-server" — LEAFMESH_NATS_SERVER overrides. */
  binary?: string;
  /** @default 20_000 — JetStream recovering a large store can take seconds. */
  readyTimeoutMs?: number;
  /** Backoff between restarts: min, doubling up to max. @default 500 / 15_000 */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /**
   * Secured servers: the config's JetStream store_dir and every account to resolve
   * at start, one after the other, before any connection (nats-config/account-preload.ts).
   */
  loadAccountsAtStart?: { storeDir: string; accounts: readonly string[] };
  /** Called with each transition, for bus events. */
  onStatus?: (status: "starting" | "ready" | "exited" | "restarting" | "stopped", detail?: string) => void;
  /**
   * Says what a line of the server's own log means for this node, when it means something the line does not
   * say (a leaf refused for revoked credentials: trust/denials.ts). Said as an error after the line, at most
   * once a minute for each `kind` (the words may carry a time): a refused leaf retries every second.
   */
  explainLine?: (line: string) => { kind: string; text: string } | undefined;
  /** The role's flags for the server's listen addresses: a listener it cannot open is said with its flag. */
  listenFlags?: readonly ListenFlag[];
}

const supervisorMachine = setup({
  types: {
    context: {} as { restarts: number; lastExit: string },
    events: {} as
      | { type: "START" }
      | { type: "READY" }
      | { type: "EXITED"; detail: string }
      | { type: "RETRY" }
      | { type: "STOP" }
      | { type: "STOPPED" }
      | { type: "GIVE_UP"; detail: string },
  },
}).createMachine({
  id: "nats-server",
  initial: "idle",
  context: { restarts: 0, lastExit: "" },
  states: {
    idle: { on: { START: "starting" } },
    starting: {
      on: {
        READY: "ready",
        EXITED: { target: "backoff", actions: assign({ lastExit: ({ event }) => event.detail, restarts: ({ context }) => context.restarts + 1 }) },
        GIVE_UP: { target: "failed", actions: assign({ lastExit: ({ event }) => event.detail }) },
        STOP: "stopping",
      },
    },
    ready: {
      on: {
        EXITED: { target: "backoff", actions: assign({ lastExit: ({ event }) => event.detail, restarts: ({ context }) => context.restarts + 1 }) },
        STOP: "stopping",
      },
    },
    backoff: { on: { RETRY: "starting", STOP: "stopped" } },
    stopping: { on: { STOPPED: "stopped", EXITED: "stopped" } },
    // Not final: start() after stop() (or after a start that failed) starts the server again, and the
    // same actor, which the bus link follows, supervises it; a final state would ignore its events.
    stopped: { on: { START: { target: "starting", actions: assign({ restarts: 0, lastExit: "" }) } } },
    failed: { on: { START: { target: "starting", actions: assign({ restarts: 0 }) }, STOP: "stopped" } },
  },
});

export class NatsServerSupervisor {
  readonly actor;
  readonly options: NatsServerOptions;
  readonly configPath: string;
  readonly #log: Logger;
  #child: ChildProcess | undefined;
  readonly #lines: ServerLines;
  #backoffTimer: NodeJS.Timeout | undefined;
  #exitReportTimer: NodeJS.Timeout | undefined;
  #stopping = false;
  /** Set while restartWith() replaces the server: its exit is no crash. */
  #replacing = false;
  #readySince = 0;
  /** Between a launch and its readiness: the health checks failing meanwhile are our own polls. */
  #awaitingReady = false;
  /** The server of a start() not ready yet: its exit fails the start, which says why, and is not restarted. */
  #firstLaunch: ChildProcess | undefined;

  constructor(options: NatsServerOptions) {
    this.options = options;
    this.#log = options.log;
    this.#lines = new ServerLines({ name: options.name, log: options.log, explainLine: options.explainLine, startingUp: () => this.#awaitingReady });
    this.configPath = join(options.dataDir, `nats-server.conf`);
    this.actor = createActor(supervisorMachine).start();
  }

  get state(): string {
    return String(this.actor.getSnapshot().value);
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** The last lines nats-server printed, for error messages. */
  get recentLines(): readonly string[] {
    return this.#lines.recent;
  }

  /**
   * Starts the server and resolves once it is healthy; rejects with its last log lines if it cannot start.
   * A supervisor that was stopped (or failed to start) may be started again: it then supervises the new server.
   * `onSpawn` is called once the server's process is spawned, before it is ready: a role loads the rest of its
   * code then, while the server starts on another core (roles/server-process.ts). `signal` (a Ctrl-C) ends the
   * start: the server is stopped and start() rejects with INTERRUPTED.
   */
  async start(onSpawn?: () => void, signal?: AbortSignal): Promise<void> {
    if (this.#child) throw new LeafmeshError("NATS_SERVER_FAILED", `nats-server '${this.options.name}' is already ${this.state}: started twice`);
    const binary = this.options.binary ?? process.env.LEAFMESH_NATS_SERVER ?? "nats-server";
    this.#stopping = false;
    this.#readySince = 0;
    makeDirectories(this.options.dataDir);
    this.#killLeftover();
    writeConfig(this.configPath, this.options.configText);
    if (this.options.loadAccountsAtStart) markAccountsForLoadAtStart(this.options.loadAccountsAtStart.storeDir, this.options.loadAccountsAtStart.accounts);
    // One run of the binary, off the event loop, says both whether it runs and whether it takes the configuration
    // (a --version and a -t, each spawned synchronously, held a starting agent's loop ~70 ms).
    // Its version too, beside it: a server older than the code needs is refused here, one newer than tested warned about once.
    // A Ctrl-C meanwhile kills both (a hung wrapper script held it up to their 30 s timeout).
    const [check, version] = await Promise.all([testConfiguration(binary, this.configPath, signal), readServerVersion(binary, signal)]);
    if (signal?.aborted) throw this.#interrupted();
    if (check.missing) throw missingBinary(binary, check.missing);
    if (version.missing) throw missingBinary(binary, version.missing);
    checkServerVersion(binary, version, this.#log);
    if (check.status !== 0) {
      const detail = check.output;
      this.actor.send({ type: "START" });
      this.actor.send({ type: "GIVE_UP", detail });
      throw new LeafmeshError("CONFIG_INVALID", `nats-server rejected the configuration ${this.configPath}: ${detail}`);
    }
    this.actor.send({ type: "START" });
    await this.#launch(binary, true, onSpawn, signal);
  }

  #interrupted(): LeafmeshError {
    return new LeafmeshError("INTERRUPTED", `stopped while its nats-server '${this.options.name}' was starting, before it was ready: nothing is left running`);
  }

  async #launch(binary: string, first: boolean, onSpawn?: () => void, signal?: AbortSignal): Promise<void> {
    this.options.onStatus?.("starting");
    this.#awaitingReady = true;
    this.#lines.clear();
    const usePdeathsig = existsSync("/usr/bin/setpriv");
    const command = usePdeathsig ? "/usr/bin/setpriv" : binary;
    const args = usePdeathsig ? ["--pdeathsig", "TERM", "--", binary, "-c", this.configPath] : ["-c", this.configPath];
    // Its own process group: a Ctrl-C (or timeout(1)) reaches leafmesh only, which stops its parts with the server still up,
    // and the server last. If leafmesh dies the server gets SIGTERM (--pdeathsig). systemd's stop still signals both.
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], detached: true });
    this.#child = child;
    if (first) this.#firstLaunch = child;
    writeFileSync(this.#pidFile, String(child.pid ?? ""));
    const said = new ReadyLine();
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream! }).on("line", (line) => {
        this.#lines.forward(line);
        said.read(line);
      });
    }
    onSpawn?.();
    const exited = new Promise<string>((resolve) => {
      child.once("error", (error) => resolve(`could not start: ${error.message}`));
      child.once("exit", (code, signal) => resolve(signal ? `killed by ${signal}` : `exited with code ${code}`));
    });
    let exit: string | undefined;
    void exited.then((detail) => {
      exit = detail;
      this.#onExit(child, binary, detail);
    });

    const deadline = performance.now() + (this.options.readyTimeoutMs ?? 20_000);
    while (performance.now() < deadline && !signal?.aborted) {
      if (this.#child !== child || exit !== undefined || child.exitCode !== null || child.signalCode !== null) break;
      // Its monitor is asked once the server said it is ready, having bound every port: before, another server's
      // monitor on the same address (a hub's and an agent's are both 127.0.0.1:8222 by default) answered for one that
      // was failing to bind it, and leafmesh went on with a server that was gone, or connected to that other server.
      if (said.ready && (await this.#healthy())) {
        this.#readySince = performance.now();
        this.#awaitingReady = false;
        if (this.#firstLaunch === child) this.#firstLaunch = undefined;
        this.actor.send({ type: "READY" });
        this.options.onStatus?.("ready");
        this.#log.info({ serverPid: child.pid, monitor: this.options.monitor }, "nats-server ready");
        return;
      }
      // Ends at once when the ready line comes.
      await said.within(100);
    }
    if (first) {
      const tail = this.#lines.recent.slice(-8).join("\n");
      // This server is given up: its exit is no crash to restart, and start() may be called again at once.
      if (this.#child === child) this.#child = undefined;
      this.#firstLaunch = undefined;
      if (signal?.aborted || this.#stopping) {
        await stopChild(child);
        this.actor.send({ type: "GIVE_UP", detail: "stopped while starting" });
        throw this.#interrupted();
      }
      child.kill("SIGKILL");
      this.actor.send({ type: "GIVE_UP", detail: tail });
      throw (exit && refusedListener(tail, this.options.listenFlags)) || new LeafmeshError(
        "NATS_SERVER_FAILED",
        `nats-server '${this.options.name}' ${exit ? `${exit} while starting` : `did not become ready (monitor ${monitorBase(this.options.monitor)}/healthz)`}. Its last lines:\n${tail || "(none)"}${startFailureHint(tail)}`,
      );
    }
  }

  get #pidFile(): string {
    return join(this.options.dataDir, "nats-server.pid");
  }

  /** A crashed earlier run may have left its server running on our ports and store. */
  #killLeftover(): void {
    if (!existsSync(this.#pidFile)) return;
    const pid = Number(readFileSync(this.#pidFile, "utf8"));
    rmSync(this.#pidFile, { force: true });
    if (!pid) return;
    let cmdline = "";
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
    } catch {
      return; // not running any more
    }
    if (cmdline.includes("nats-server") && cmdline.includes(this.configPath)) {
      this.#log.warn({ serverPid: pid }, "stopping a nats-server left running by an earlier run");
      process.kill(pid, "SIGKILL");
    }
  }

  async #healthy(): Promise<boolean> {
    const answer = await monitorGet(`${monitorBase(this.options.monitor)}/healthz`, 1_000);
    return answer !== undefined && answer.status >= 200 && answer.status < 300;
  }

  /**
   * Stops the server and starts it again with `configText`, resolving once it is healthy
   * again. What cannot change by a config reload changes this way: a leaf's remotes
   * (nats-server 2.9.10 refuses "config reload not supported for LeafNode"), which relay
   * choice (roles/relay-choice.ts) reorders to move the leaf link to another upstream.
   * The JetStream store stays on disk; local clients reconnect by themselves.
   */
  async restartWith(configText: string, graceMs = 5_000): Promise<void> {
    const binary = this.options.binary ?? process.env.LEAFMESH_NATS_SERVER ?? "nats-server";
    if (this.state !== "ready") throw new LeafmeshError("NATS_SERVER_FAILED", `nats-server '${this.options.name}' is ${this.state}, not ready: not restarted with a new configuration`);
    const previous = this.options.configText;
    writeConfig(this.configPath, configText);
    // Off the event loop: a running agent's DNS, proxy and tunnel go on meanwhile (spawned synchronously, the check
    // held them ~20 ms on every move of the leaf link, and for good behind a hung binary).
    const check = await testConfiguration(binary, this.configPath);
    if (check.status !== 0 || this.state !== "ready") {
      writeConfig(this.configPath, previous);
      if (check.missing) throw missingBinary(binary, check.missing);
      if (check.status !== 0) throw new LeafmeshError("CONFIG_INVALID", `nats-server rejected the new configuration: ${check.output}`);
      throw new LeafmeshError("NATS_SERVER_FAILED", `nats-server '${this.options.name}' became ${this.state} while its new configuration was checked: not restarted with it`);
    }
    this.options.configText = configText;
    const child = this.#child;
    if (child && child.exitCode === null && child.signalCode === null) {
      this.#replacing = true;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
      this.#replacing = false;
    }
    if (this.#stopping) return;
    this.actor.send({ type: "RETRY" });
    this.options.onStatus?.("restarting", "new configuration");
    await this.#launch(binary, false);
    if (this.state !== "ready") throw new LeafmeshError("NATS_SERVER_FAILED", `nats-server '${this.options.name}' did not come back with the new configuration: ${this.#lines.recent.slice(-5).join(" | ")}`);
  }

  #onExit(child: ChildProcess, binary: string, detail: string): void {
    if (this.#child !== child) return;
    // A start() waiting for this server says its exit itself: restarted meanwhile, it was said as a crash and its
    // replacement was left to the start's failure to stop.
    if (this.#firstLaunch === child && !this.#stopping) return;
    this.#child = undefined;
    if (this.#replacing && !this.#stopping) {
      // restartWith() starts the next one itself.
      this.actor.send({ type: "EXITED", detail: `replaced: ${detail}` });
      this.options.onStatus?.("exited", "replaced with a new configuration");
      return;
    }
    if (this.#stopping) {
      this.actor.send({ type: "STOPPED" });
      this.options.onStatus?.("stopped");
      return;
    }
    const state = this.state;
    this.actor.send({ type: "EXITED", detail });
    if (state === "failed" || this.state !== "backoff") return;
    const restarts = this.actor.getSnapshot().context.restarts;
    // A server that ran for a minute was healthy: start the backoff over.
    const stableRun = this.#readySince > 0 && performance.now() - this.#readySince > 60_000;
    const min = this.options.backoffMinMs ?? 500;
    const delay = stableRun ? min : Math.min(this.options.backoffMaxMs ?? 15_000, min * 2 ** Math.min(restarts - 1, 10));
    // Said a moment later, unless a stop comes first: systemd's stop (which signals every process of the unit) or a
    // kill of the group reaches the server with leafmesh itself, and its exit then is the stop, not a failure.
    const lastLines = this.#lines.recent.slice(-5);
    this.#exitReportTimer = setTimeout(() => {
      this.#log.error({ detail, restarts, retryInMs: delay, lastLines }, "nats-server exited unexpectedly; restarting");
      this.options.onStatus?.("exited", detail);
    }, Math.min(delay, exitReportDelayMs));
    this.#backoffTimer = setTimeout(() => {
      this.actor.send({ type: "RETRY" });
      this.options.onStatus?.("restarting", `restart ${restarts}`);
      this.#launch(binary, false).catch((error) => this.#log.error({ err: error }, "nats-server restart failed"));
    }, delay);
  }

  /**
   * A stop of the whole process has begun; the server stops last (`stop`), after the parts that use it, which
   * can take seconds. Its exit from now on (systemd's stop signals it too) is the stop's: no failure, no restart.
   */
  stopBegun(): void {
    this.#stopping = true;
    clearTimeout(this.#backoffTimer);
    clearTimeout(this.#exitReportTimer);
  }

  /** Stops the server (SIGTERM, then SIGKILL after the grace period). */
  async stop(graceMs = 5_000): Promise<void> {
    this.stopBegun();
    const child = this.#child;
    if (!child && (this.state === "stopped" || this.state === "idle")) return;
    this.actor.send({ type: "STOP" });
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      this.actor.send({ type: "STOPPED" });
      rmSync(this.#pidFile, { force: true });
      return;
    }
    await stopChild(child, graceMs);
    rmSync(this.#pidFile, { force: true });
  }
}

/** SIGTERM, then SIGKILL after the grace period; resolves once the process has exited. */
async function stopChild(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}
