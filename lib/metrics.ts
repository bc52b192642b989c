/**
 * Prometheus metrics and health endpoints for one leafmesh process (hub, site or
 * agent): `/metrics` (prom-client text format), `/healthz` (the process and its
 * nats-server are up) and `/readyz` (ready to serve: catalog loaded, actors
 * running). Actors add their own metrics to the registry they are handed.
 *
 * ```ts
 * const metrics = new MetricsServer({ log, health: () => ({ healthy: true, ready: true, detail: {} }) });
 * new Gauge({ name: "leafmesh_catalog_objects", help: "...", registers: [metrics.registry] });
 * await metrics.start({ host: "127.0.0.1", port: 9464 });
 * ```
 */
import type { Server } from "node:http";
import { http } from "./node-http.ts";
import { collectProcessMetrics, Counter, Gauge, Registry } from "./prom.ts";
import { LeafmeshError } from "./errors.ts";
import { listenAddress, listenRefused } from "./listen-errors.ts";
import { droppedLogLines, logBacklogBytes, type Logger } from "./log.ts";
import { bigBuffersMax, readBufferStats } from "./read-buffers.ts";

export interface Health {
  healthy: boolean;
  ready: boolean;
  detail: Record<string, unknown>;
}

export interface MetricsServerOptions {
  /** Where to serve; or given to `start()`. */
  listen?: { host: string; port: number };
  log: Logger;
  /** What /healthz and /readyz answer; or set later with `setHealth()` (until then: unavailable). */
  health?: () => Health;
  /** Labels on every metric, e.g. { node: "edge-a", role: "agent" }. */
  labels?: Record<string, string>;
}

/** How the process's joins read bulk (lib/read-buffers.ts): buffers lent now, and directions switched so far. */
function registerReadBufferMetrics(registry: Registry): void {
  new Gauge({
    name: "leafmesh_read_buffers_big",
    help: `big (256 KiB) read buffers lent to joined directions that move bulk now, at most ${bigBuffersMax}`,
    registers: [registry],
    collect() {
      this.set(readBufferStats().bigBuffersLent);
    },
  });
  new Gauge({
    name: "leafmesh_read_buffer_directions",
    help: "joined directions (client to upstream, tunnel stream to target, ...) reading into a buffer of their own now",
    registers: [registry],
    collect() {
      this.set(readBufferStats().directionsOpen);
    },
  });
  let switched = 0;
  new Counter({
    name: "leafmesh_read_buffer_switches_total",
    help: "joined directions that went on reading into a buffer of their own once they carried bulk",
    registers: [registry],
    collect() {
      const now = readBufferStats().directionsSwitched;
      this.inc(now - switched);
      switched = now;
    },
  });
}

/** Log lines dropped for a stderr reader that did not read (lib/log.ts logBacklogBytes). */
function registerLogMetrics(registry: Registry): void {
  let counted = 0;
  new Counter({
    name: "leafmesh_log_lines_dropped_total",
    help: `log lines dropped because stderr's reader did not take them and ${logBacklogBytes / 1048576} MiB waited already`,
    registers: [registry],
    collect() {
      const now = droppedLogLines();
      this.inc(now - counted);
      counted = now;
    },
  });
}

export class MetricsServer {
  readonly registry = new Registry();
  readonly #options: MetricsServerOptions;
  #server: Server | undefined;
  #health: () => Health;

  constructor(options: MetricsServerOptions) {
    this.#options = options;
    this.#health = options.health ?? (() => ({ healthy: false, ready: false, detail: { starting: true } }));
    if (options.labels) this.registry.setDefaultLabels(options.labels);
    collectProcessMetrics(this.registry, "leafmesh_process_");
    registerReadBufferMetrics(this.registry);
    registerLogMetrics(this.registry);
  }

  setHealth(health: () => Health): void {
    this.#health = health;
  }

  async start(listen = this.#options.listen): Promise<void> {
    if (!listen) throw new LeafmeshError("INTERNAL", "MetricsServer.start: no address to listen on");
    const server = http.createServer((request, response) => {
      void (async () => {
        const path = (request.url ?? "/").split("?")[0];
        if (path === "/metrics") {
          response.setHeader("content-type", this.registry.contentType);
          response.end(await this.registry.metrics());
          return;
        }
        if (path === "/healthz" || path === "/readyz") {
          const health = this.#health();
          const ok = path === "/healthz" ? health.healthy : health.healthy && health.ready;
          response.statusCode = ok ? 200 : 503;
          response.setHeader("content-type", "application/json");
          response.end(`${JSON.stringify({ status: ok ? "ok" : "unavailable", ...health })}\n`);
          return;
        }
        response.statusCode = 404;
        response.end("not found: try /metrics, /healthz or /readyz\n");
      })().catch((error: unknown) => {
        this.#options.log.warn({ err: error }, "metrics request failed");
        response.statusCode = 500;
        response.end();
      });
    });
    const { host, port } = listen;
    await new Promise<void>((resolve, reject) => {
      server.once("error", (error: NodeJS.ErrnoException) =>
        reject(listenRefused("--metrics-listen", listen, error) ?? new LeafmeshError("CONFIG_INVALID", `--metrics-listen ${listenAddress(listen)}: ${error.message}`, { cause: error })),
      );
      server.listen(port, host, () => resolve());
    });
    this.#server = server;
    this.#options.log.info({ listen }, "metrics and health endpoints listening");
  }

  get port(): number | undefined {
    const address = this.#server?.address();
    return typeof address === "object" && address ? address.port : undefined;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }
}
