/**
 * The hub's trust auditor: makes denials visible. nats-server 2.9.10 drops what
 * a node may not do without a log line (docs/nats-facts.md: "denials are quiet"); the
 * auditor listens inside every node's account (listen-only users issued by
 * `keys issue`) and logs, once per node and subject, what that node tried
 * beyond its own subjects: publishing as another node, writing the catalog or
 * another node's record, calling JetStream it may not. Each is counted by
 * reason. It also logs refused connections from the system account's
 * `CLIENT.AUTH.ERR` events.
 *
 * ```ts
 * const auditor = await startTrustAuditor({ dir: keysDir, servers: [hub.clientUrl], tls, log });
 * auditor.counts();  // Map "edge-a publishes as node 'edge-b'..." → 3
 * await auditor.stop();
 * ```
 */
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { connect, credsAuthenticator, type NatsConnection, type ConnectionOptions } from "@nats-io/transport-node";
import type { Logger } from "../lib/log.ts";
import { describeError } from "../lib/errors.ts";
import { auditSubjects, oversteppingReason } from "./claims.ts";
import { checkSecretFilePermissions } from "./secret-files.ts";
import { explainUserKey } from "./key-store.ts";

export interface TrustAuditor {
  /** Denials seen so far, by node and reason. */
  counts(): Map<string, number>;
  /** Watches node accounts issued since the start (or the last rescan); returns their names. */
  rescan(): Promise<string[]>;
  stop(): Promise<void>;
}

/** @default 1000 — distinct (node, subject) pairs logged in full; the rest are only counted. */
const maxLoggedPairs = 1000;

export async function startTrustAuditor(options: {
  dir: string;
  servers: string[];
  tls?: ConnectionOptions["tls"];
  /** The system user's options (hub.systemConnectOptions), to hear refused connections. */
  systemConnectOptions?: Partial<ConnectionOptions>;
  log: Logger;
  /** Look for newly issued nodes this often. @default off — call rescan() after `keys issue` instead */
  rescanIntervalMs?: number;
  /** The server's resolver directory: the accounts pushed to it (revocations the keys copy may not hold yet). */
  resolverDir?: string;
  now?: () => number;
}): Promise<TrustAuditor> {
  const log = options.log.child({ actor: "trust" });
  const counts = new Map<string, number>();
  const logged = new Set<string>();
  const connections: NatsConnection[] = [];
  const auditDir = join(options.dir, "hub", "audit");
  const watched = new Set<string>();
  const count = (key: string) => counts.set(key, (counts.get(key) ?? 0) + 1);
  const now = options.now ?? Date.now;
  const refusals = new RepeatedLines(now);

  const watchNode = async (node: string) => {
    const credsFile = join(auditDir, `${node}.creds`);
    checkSecretFilePermissions(credsFile);
    watched.add(node);
    const connection = await connect({
      servers: options.servers,
      tls: options.tls,
      authenticator: credsAuthenticator(readFileSync(credsFile)),
      name: `leafmesh trust auditor ${node}`,
      reconnect: true,
      maxReconnectAttempts: -1,
    });
    connections.push(connection);
    for (const subject of auditSubjects) {
      connection.subscribe(subject, {
        callback: (error, message) => {
          if (error) return log.warn({ node, error: describeError(error) }, "trust auditor subscription failed");
          const reason = oversteppingReason(node, message.subject);
          if (!reason) return;
          const key = `${node} ${reason}`;
          count(key);
          const pair = `${node} ${message.subject}`;
          if (logged.has(pair) || logged.size >= maxLoggedPairs) return;
          logged.add(pair);
          log.warn({ node, subject: message.subject, denied: true }, `denied: node '${node}' ${reason}; the hub dropped it (its account has no route for ${message.subject})`);
        },
      });
    }
    await connection.flush();
  };

  /** Starts watching nodes issued since the last scan (their audit creds appeared in hub/audit/). */
  const rescan = async (): Promise<string[]> => {
    const nodes = existsSync(auditDir) ? readdirSync(auditDir).filter((file) => file.endsWith(".creds")).map((file) => file.slice(0, -".creds".length)) : [];
    const added = nodes.filter((node) => !watched.has(node));
    for (const node of added) await watchNode(node);
    return added;
  };
  await rescan();

  if (options.systemConnectOptions) {
    const system = await connect({ ...options.systemConnectOptions, servers: options.servers, name: "leafmesh trust auditor (system)", reconnect: true, maxReconnectAttempts: -1 });
    connections.push(system);
    system.subscribe("$SYS.SERVER.*.CLIENT.AUTH.ERR", {
      callback: (_error, message) => {
        const event = message.json<{ client?: { host?: string; name?: string; kind?: string; jwt?: string }; reason?: string }>();
        // The event carries the user JWT the client presented: the keys directory knows whether it is revoked, expired or foreign.
        let why = event.reason ?? "authentication failed";
        if (event.client?.jwt) {
          try {
            why = explainUserKey(options.dir, event.client.jwt, now, options.resolverDir);
          } catch (error) {
            why = `${why} (presented a JWT that cannot be read: ${describeError(error)})`;
          }
        }
        count(`refused ${why.replace(/ at \S+$/, "")}`);
        const { jwt: _jwt, ...client } = event.client ?? {};
        const text = `refused a connection from ${client.host ?? "?"} (${client.kind ?? "client"} '${client.name ?? ""}'): ${why}`;
        // A refused leaf dials again every second for as long as it runs: said once a minute, with how often it came.
        const repeats = refusals.repeated(text);
        if (repeats !== undefined) log.warn({ client, reason: event.reason, denied: true, ...(repeats > 0 ? { repeatsSinceLastSaid: repeats } : {}) }, repeats > 0 ? `${text} (and ${repeats} more like it since this was last said)` : text);
      },
    });
  }
  await Promise.all(connections.map((connection) => connection.flush()));
  log.info({ nodes: watched.size }, "trust auditor watching node accounts");
  const timer = options.rescanIntervalMs
    ? setInterval(() => {
        rescan().then(
          (added) => added.length > 0 && log.info({ added }, "trust auditor watching new node accounts"),
          (error: unknown) => log.warn({ error: describeError(error) }, "trust auditor could not watch a new node account"),
        );
      }, options.rescanIntervalMs)
    : undefined;
  timer?.unref();
  return {
    counts: () => new Map(counts),
    rescan,
    async stop() {
      if (timer) clearInterval(timer);
      await Promise.all(connections.map((connection) => connection.close().catch(() => undefined)));
    },
  };
}

/** @default 60_000 — the same refusal is said at most this often; the ones between are counted. */
const repeatEveryMs = 60_000;

/** Lines said once a minute each, with how often they came between (at most 256 kinds remembered). */
class RepeatedLines {
  readonly #seen = new Map<string, { saidAt: number; since: number }>();
  readonly #now: () => number;

  constructor(now: () => number) {
    this.#now = now;
  }

  /** undefined: a repeat to count, not say; otherwise say it, with how many came since it was last said. */
  repeated(text: string): number | undefined {
    const now = this.#now();
    const seen = this.#seen.get(text);
    if (seen && now - seen.saidAt < repeatEveryMs) {
      seen.since++;
      return undefined;
    }
    this.#seen.delete(text);
    this.#seen.set(text, { saidAt: now, since: 0 });
    if (this.#seen.size > 256) this.#seen.delete(this.#seen.keys().next().value!);
    return seen?.since ?? 0;
  }
}
