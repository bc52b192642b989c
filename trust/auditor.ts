/**
 * The hub's trust auditor: makes denials visible. nats-server 2.9.10 drops what
 * a node may not do without a log line (docs/nats-facts.md: "denials are quiet"); the
 * auditor listens inside every node's account (listen-only users issued by
 * `keys issue`) and logs, once per node and subject, what that node tried
 * beyond its own subjects: publishing as another node, writing the catalog or
 * another node's record, calling JetStream it may not. Each is counted by
 * reason (a bounded number of reasons). It also logs refused connections from the
 * system account's `CLIENT.AUTH.ERR` events, once a minute per client host and
 * reason, counting every one.
 *
 * ```ts
 * const auditor = await startTrustAuditor({ dir: keysDir, servers: [hub.clientUrl], tls, log });
 * auditor.counts();  // Map "edge-a publishes as node 'edge-b'..." → 3
 * await auditor.stop();
 * ```
 */
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { connect, type NatsConnection, type ConnectionOptions } from "@nats-io/transport-node";
import type { Logger } from "../lib/log.ts";
import { describeError, LeafmeshError } from "../lib/errors.ts";
import { auditSubjects, oversteppingReason } from "./claims.ts";
import { checkSecretFilePermissions } from "./secret-files.ts";
import { credsFileAuthenticator } from "./native-authenticator.ts";
import { explainRefusedUser } from "./token-revocations.ts";
import { systemClock, type Clock } from "../lib/clock.ts";
import { Repeats } from "../lib/repeats.ts";

export interface TrustAuditor {
  /** Denials seen so far, by node and reason. */
  counts(): Map<string, number>;
  /** Watches node accounts issued since the start (or the last rescan); returns their names. */
  rescan(): Promise<string[]>;
  stop(): Promise<void>;
}

/** @default 1000 — distinct (node, subject) pairs logged in full; the rest are only counted. */
const maxLoggedPairs = 1000;

/**
 * @default 100 — distinct reasons counted each by itself, per node (and for refused logins
 * together). A reason names what the node tried (`mesh.<x>.…`, a KV key, a JetStream call): a
 * stolen node that varies it at every message made the hub's counts grow by one entry per
 * message. Beyond this many, that node's denials are counted under "<node> other denials".
 */
export const maxCountedReasons = 100;

/**
 * @default 60_000 — a refused login is logged once per client host and reason in this long, and
 * only counted otherwise. A revoked node retries about once a second, and anyone holding a mesh
 * certificate can send CONNECTs with refused credentials as fast as the hub answers them: each
 * was a warning line at the hub, and a read of the keys directory.
 */
export const refusalLogIntervalMs = 60_000;

export async function startTrustAuditor(options: {
  dir: string;
  servers: string[];
  tls?: ConnectionOptions["tls"];
  /** The system user's options (hub.systemConnectOptions), to hear refused connections. */
  systemConnectOptions?: Partial<ConnectionOptions>;
  log: Logger;
  /** Look for newly issued nodes this often. @default off — call rescan() after `keys issue` instead */
  rescanIntervalMs?: number;
  /** @default systemClock */
  clock?: Clock;
  /** The server's resolver directory: the accounts pushed to it (revocations the keys copy may not hold yet). */
  resolverDir?: string;
}): Promise<TrustAuditor> {
  const clock = options.clock ?? systemClock;
  const log = options.log.child({ actor: "trust" });
  const counts = new Map<string, number>();
  const logged = new Set<string>();
  const connections: NatsConnection[] = [];
  const auditDir = join(options.dir, "hub", "audit");
  const watched = new Set<string>();
  /** Distinct reasons counted so far per node ("refused" for refused logins). */
  const reasonsOf = new Map<string, number>();
  const count = (key: string, node = "refused") => {
    let counted = key;
    if (!counts.has(key)) {
      const reasons = reasonsOf.get(node) ?? 0;
      if (reasons >= maxCountedReasons) counted = `${node} other denials`;
      else reasonsOf.set(node, reasons + 1);
    }
    counts.set(counted, (counts.get(counted) ?? 0) + 1);
  };
  /** Refused logins said once a minute per (host, reason), counted in between; and what each presented JWT was found to be. */
  const refusals = new Repeats({ everyMs: refusalLogIntervalMs, kinds: maxCountedReasons, now: () => clock.monotonic() });
  const explained = new Map<string, { why: string; at: number }>();

  /** Watches one node's account; the node counts as watched only once its subscriptions are in place. */
  const watchNode = async (node: string) => {
    const credsFile = join(auditDir, `${node}.creds`);
    checkSecretFilePermissions(credsFile);
    const connection = await connect({
      servers: options.servers,
      tls: options.tls,
      authenticator: credsFileAuthenticator(readFileSync(credsFile), credsFile),
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
          count(key, node);
          const pair = `${node} ${message.subject}`;
          if (logged.has(pair) || logged.size >= maxLoggedPairs) return;
          logged.add(pair);
          log.warn({ node, subject: message.subject, denied: true }, `denied: node '${node}' ${reason}; the hub dropped it (its account has no route for ${message.subject})`);
        },
      });
    }
    try {
      await connection.flush();
    } catch (error) {
      connections.splice(connections.indexOf(connection), 1);
      await connection.close().catch(() => undefined);
      throw error;
    }
    watched.add(node);
  };

  /**
   * Starts watching nodes issued since the last scan (their audit creds appeared in hub/audit/). A node whose
   * watch fails is left for the next scan, and the others are watched all the same; the scan then fails naming it.
   */
  const scanOnce = async (): Promise<string[]> => {
    const nodes = existsSync(auditDir) ? readdirSync(auditDir).filter((file) => file.endsWith(".creds")).map((file) => file.slice(0, -".creds".length)) : [];
    const added: string[] = [];
    const failed: { node: string; error: unknown }[] = [];
    for (const node of nodes.filter((candidate) => !watched.has(candidate))) {
      try {
        await watchNode(node);
        added.push(node);
      } catch (error) {
        failed.push({ node, error });
      }
    }
    if (failed.length > 0) {
      const names = failed.map(({ node }) => `'${node}'`).join(", ");
      throw new LeafmeshError("TRUST_FAILED", `the trust auditor could not watch node ${names} (${describeError(failed[0].error)}); it tries again at the next rescan${added.length > 0 ? ` (watching ${added.join(", ")})` : ""}`, { cause: failed[0].error });
    }
    return added;
  };
  // One scan at a time, and the asks that come during one share the next: the enrolling hub asks after every node
  // it enrols, 16 at once for a batch. Scans that ran side by side each walked the same new nodes, one connection per
  // node per scan (~130 for a batch of 16), and a busy hub timed some of them out.
  let scanning: Promise<string[]> | undefined;
  let queued: Promise<string[]> | undefined;
  const startScan = (): Promise<string[]> => {
    const scan = scanOnce().finally(() => {
      if (scanning === scan) scanning = undefined;
    });
    scanning = scan;
    return scan;
  };
  const rescan = (): Promise<string[]> => {
    if (!scanning) return startScan();
    queued ??= scanning.then(
      () => undefined,
      () => undefined,
    ).then(() => {
      queued = undefined;
      return startScan();
    });
    return queued;
  };
  await rescan();

  if (options.systemConnectOptions) {
    const system = await connect({ ...options.systemConnectOptions, servers: options.servers, name: "leafmesh trust auditor (system)", reconnect: true, maxReconnectAttempts: -1 });
    connections.push(system);
    system.subscribe("$SYS.SERVER.*.CLIENT.AUTH.ERR", {
      callback: (_error, message) => {
        const event = message.json<{ client?: { host?: string; name?: string; kind?: string; jwt?: string }; reason?: string }>();
        // The event carries the user JWT the client presented: the keys directory knows whether it is revoked, expired or foreign.
        const now = clock.monotonic();
        let why = event.reason ?? "authentication failed";
        const jwt = event.client?.jwt;
        if (jwt) {
          // The keys directory is read once per presented JWT and interval, not at every attempt.
          const known = explained.get(jwt);
          if (known && now - known.at < refusalLogIntervalMs) why = known.why;
          else {
            try {
              why = explainRefusedUser(options.dir, jwt, () => clock.now(), options.resolverDir);
            } catch (error) {
              why = `${why} (presented a JWT that cannot be read: ${describeError(error)})`;
            }
            if (explained.size >= maxCountedReasons) explained.clear();
            explained.set(jwt, { why, at: now });
          }
        }
        const kind = `refused ${why.replace(/ at \S+$/, "")}`;
        count(kind);
        const { jwt: _jwt, ...client } = event.client ?? {};
        const logKey = `${client.host ?? "?"} ${kind}`;
        const since = refusals.note(logKey);
        if (since === undefined) return;
        log.warn(
          { client, reason: event.reason, denied: true, refusedSoFar: counts.get(kind) ?? counts.get("refused other denials"), ...(since > 0 ? { repeatsSinceLastSaid: since } : {}) },
          `refused a connection from ${client.host ?? "?"} (${client.kind ?? "client"} '${client.name ?? ""}'): ${why}${since > 0 ? ` (and ${since} more like it since this was last said)` : ""}`,
        );
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
