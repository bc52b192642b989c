/**
 * A node's own JetStream, watched from outside. When the file system of the
 * data directory filled up (an edge box's SD card full of logs), nats-server
 * 2.9.10's store of the catalog mirror stopped answering: every JetStream
 * request on the node timed out, the server stopped reading the connection
 * that asked (its pings unanswered: "Stale Connection" every 15 s, so
 * `status` went unanswered too), the catalog stopped following the hub, and
 * nothing said why. It stayed so after space came back; a restart of the
 * server recovers it.
 *
 * - Every `intervalMs` the node's mirror is asked for its stream info; an
 *   answer of any kind (an error too) is a JetStream that answers, no
 *   answer or no JetStream at all (nats-server may disable it when its disk
 *   is full) is not. After
 *   `restartAfter` unanswered asks in a row (a minute by default: a local
 *   request answers in milliseconds), the server is killed, with the reason
 *   and the file system's free space in the log, and the supervisor restarts
 *   it as after a crash.
 * - A file system with less than `lowSpaceBytes` free is said (once in ten
 *   minutes): that is where JetStream keeps the mirror.
 *
 * A server in a cluster (hubs or site servers with routes) is not restarted
 * (`restart: false`): it may be waiting for its cluster's quorum, which no
 * restart brings; its silence and the free space are said all the same.
 *
 * ```ts
 * const watchdog = watchStore({ connection, stream: "KV_mesh-catalog", dataDir, server: supervisor, log });
 * watchdog.stop();
 * ```
 */
import { statfs } from "node:fs/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { describeError } from "../lib/errors.ts";
import type { Logger } from "../lib/log.ts";

export interface StoreWatchdogOptions {
  connection: NatsConnection;
  /** The stream asked for its info: the node's catalog mirror. */
  stream: string;
  /** The server's data directory (its JetStream store is under it). */
  dataDir: string;
  /** The supervised server: watched only while ready; killed (then restarted by its supervisor) when its JetStream stays silent. */
  server: { readonly state: string; readonly pid: number | undefined };
  log: Logger;
  /** @default 15_000 */
  intervalMs?: number;
  /** @default 5_000 — how long one ask waits. */
  timeoutMs?: number;
  /** @default 4 — unanswered asks in a row before the server is restarted. */
  restartAfter?: number;
  /** @default 64 MiB — less free space than this on the data directory's file system is said. */
  lowSpaceBytes?: number;
  /** @default true — restart a silent server; false: only say it (a clustered server, which may be waiting for quorum). */
  restart?: boolean;
  /**
   * @default "mirror" — what the store holds, for what a full disk does to it: an agent's or a site's mirror of the
   * catalog (it stops following the hub), or a hub's catalog itself (its changes cannot be written).
   */
  holds?: "mirror" | "catalog";
}

const fullMeans = {
  mirror: "the node's JetStream keeps its catalog mirror there, and when it is full the catalog stops following the hub",
  catalog: "the hub's JetStream keeps the mesh's catalog there, and when it is full the catalog's changes cannot be written (nodes keep serving what they have)",
};

/** Free and total bytes of the file system holding `path`, or undefined when it cannot be read. */
export async function spaceOf(path: string): Promise<{ free: number; total: number } | undefined> {
  try {
    const stats = await statfs(path);
    return { free: stats.bavail * stats.bsize, total: stats.blocks * stats.bsize };
  } catch {
    return undefined;
  }
}

const mib = (bytes: number) => `${Math.round((bytes / 1024 / 1024) * 10) / 10} MiB`;
const lowSpaceRepeatMs = 10 * 60_000;

export function watchStore(options: StoreWatchdogOptions): { stop(): void; readonly restarts: number } {
  const { log, server } = options;
  const restartAfter = options.restartAfter ?? 4;
  const timeoutMs = options.timeoutMs ?? 5_000;
  let silent = 0;
  let restarts = 0;
  let asking = false;
  let stopped = false;
  let lowSaidAt = -Infinity;

  const ask = async (): Promise<boolean> => {
    try {
      const manager = await jetstreamManager(options.connection, { checkAPI: false, timeout: timeoutMs });
      await manager.streams.info(options.stream);
      return true;
    } catch (error) {
      // Silence, or no JetStream at all (nats-server may disable it on a full disk), counts; another error answer
      // (no such stream yet, no permission) came from a JetStream that answers.
      return !/timeout|no responders|503/i.test(describeError(error));
    }
  };

  const tick = async () => {
    const space = await spaceOf(options.dataDir);
    const lowSpace = options.lowSpaceBytes ?? 64 * 1024 * 1024;
    if (space && space.free < lowSpace && performance.now() - lowSaidAt > lowSpaceRepeatMs) {
      lowSaidAt = performance.now();
      log.warn({ dataDir: options.dataDir, free: space.free, total: space.total }, `the file system of the data directory has ${mib(space.free)} free of ${mib(space.total)}: ${fullMeans[options.holds ?? "mirror"]}`);
    }
    if (server.state !== "ready" || server.pid === undefined) {
      silent = 0;
      return;
    }
    if (await ask()) {
      silent = 0;
      return;
    }
    silent++;
    if (silent < restartAfter || stopped || server.state !== "ready" || server.pid === undefined) return;
    silent = 0;
    const full = space !== undefined && space.free < lowSpace;
    const why = `its store is stuck${full ? `: the data directory's file system has ${mib(space.free)} free, free some space` : ""}`;
    const fields = { dataDir: options.dataDir, free: space?.free, total: space?.total, unanswered: restartAfter, timeoutMs };
    if (options.restart === false) {
      log.error(fields, `this server's JetStream has not answered for ${restartAfter} asks in a row (its cluster may have lost its quorum, or ${why}); not restarted, as a server of a cluster`);
      return;
    }
    restarts++;
    log.error(fields, `the node's JetStream has not answered for ${restartAfter} asks in a row (${why}); restarting its nats-server`);
    try {
      process.kill(server.pid, "SIGKILL");
    } catch (error) {
      log.warn({ err: describeError(error) }, "could not end the silent nats-server");
    }
  };

  const timer = setInterval(() => {
    if (asking || stopped) return;
    asking = true;
    tick()
      .catch((error: unknown) => log.warn({ err: describeError(error) }, "watching the node's JetStream failed"))
      .finally(() => (asking = false));
  }, options.intervalMs ?? 15_000);
  timer.unref();
  return {
    stop() {
      stopped = true;
      clearInterval(timer);
    },
    get restarts() {
      return restarts;
    },
  };
}
