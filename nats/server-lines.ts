/**
 * A nats-server's log lines in our structured log (nats/supervisor.ts): each at its level (INF at debug: the
 * fabric monitor says link changes), the server's last 50 lines kept for crash reports, an explanation of a line
 * (explainLine) said at most once a minute per kind, and a line that repeats said once a minute with how often it
 * came. A node whose login the hub refuses reads "Leafnode Error 'Authorization Violation'" every second from its
 * server for as long as it runs (3,600 error lines an hour, each with a new connection id): now one a minute.
 *
 * ```ts
 * const lines = new ServerLines({ name: "edge-a", log, explainLine, startingUp: () => starting });
 * lines.forward("[812] 2026/12/06 18:22:27.505 [ERR] 127.0.0.1:7422 - lid:19 - Leafnode Error 'Authorization Violation'");
 * ```
 */
import type { Logger } from "../lib/log.ts";
import { Repeats } from "../lib/repeats.ts";

/** @default 60_000 — the same explanation of the server's lines is said at most this often. */
const explainEveryMs = 60_000;
/** @default 60_000 — a line like one said less than this long ago is counted, not said. */
const repeatEveryMs = 60_000;
/** Kinds of repeated lines remembered at once; the oldest is forgotten first. */
const repeatKinds = 256;

const levelOf: Record<string, "debug" | "info" | "warn" | "error" | "fatal" | "trace"> = {
  DBG: "debug",
  TRC: "trace",
  // nats-server's info lines (banner, domain mappings, every connection) drown an
  // operator's log; link changes are logged by the fabric monitor instead.
  INF: "debug",
  WRN: "warn",
  ERR: "error",
  FTL: "fatal",
};

/**
 * A line without what changes between its repeats: connection ids, the far side's port (an inbound connection
 * comes from a new ephemeral port each time: a hub refusing another hub's route said it every second) and the
 * attempt count of a dial retried.
 */
export function lineKind(text: string): string {
  return text
    .replace(/\b([a-z]id):\d+/g, "$1:*")
    .replace(/(\b\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d+\b/g, "$1:*")
    .replace(/\(attempt \d+\)/g, "(attempt *)");
}

export interface ServerLinesOptions {
  name: string;
  log: Logger;
  explainLine?: (line: string) => { kind: string; text: string } | undefined;
  /** True while the server starts: its failing health checks are our own readiness polls. */
  startingUp: () => boolean;
  /** @default performance.now: a monotonic clock (how long since a line was said, not when). */
  now?: () => number;
}

export class ServerLines {
  readonly #options: ServerLinesOptions;
  readonly #now: () => number;
  #recent: string[] = [];
  readonly #explained = new Map<string, number>();
  /** A line's kind (its text without connection ids) → when it was last said, and how often it came since. */
  readonly #repeats: Repeats;

  constructor(options: ServerLinesOptions) {
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
    this.#repeats = new Repeats({ everyMs: repeatEveryMs, kinds: repeatKinds, now: this.#now });
  }

  /** The server's last 50 lines, oldest first. */
  get recent(): readonly string[] {
    return this.#recent;
  }

  /** A new server process: its lines start afresh. */
  clear(): void {
    this.#recent = [];
  }

  forward(line: string): void {
    this.#recent.push(line);
    if (this.#recent.length > 50) this.#recent.shift();
    const match = /^\[\d+\] \S+ \S+ \[(\w{3})\] (.*)$/.exec(line);
    const text = match ? match[2] : line;
    // A dialler that read the INFO line and hung up before TLS: what agents' upstream probes do
    // (nats/upstream-probe.ts, every few seconds per hub), not a failed leaf. A real TLS failure says
    // more than EOF (no certificate, unknown authority, not a TLS record).
    const probe = match && /TLS (leafnode )?handshake error: EOF$/.test(text);
    // Our own readiness polls while the server starts (every 100 ms on /healthz): its "not ready yet" is the answer
    // we asked for, not a warning. Once it was ready, a failed health check is said at its level.
    const startingCheck = match && this.#options.startingUp() && /^Healthcheck failed/.test(text);
    const level = probe || startingCheck ? "debug" : match ? (levelOf[match[1]] ?? "info") : "info";
    const { log, name } = this.#options;
    if (level === "debug" || level === "trace") log[level]({ server: name }, text);
    else {
      const repeated = this.#repeats.note(`${level} ${lineKind(text)}`);
      if (repeated === undefined) log.debug({ server: name }, text);
      else log[level]({ server: name, ...(repeated > 0 ? { repeatsSinceLastSaid: repeated } : {}) }, repeated > 0 ? `${text} (and ${repeated} more like it since this was last said)` : text);
    }
    // Every line, counted repeats and info lines too: an explainer may count lines (three duplicate refusals
    // within a minute) or read what the server says only at info level (a leaf link made and gone stale).
    const explained = this.#options.explainLine?.(line);
    if (explained && this.#now() - (this.#explained.get(explained.kind) ?? -Infinity) >= explainEveryMs) {
      this.#explained.set(explained.kind, this.#now());
      log.error({ server: name }, explained.text);
    }
  }


}
