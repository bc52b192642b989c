/**
 * The hub role assembled: a supervised nats-server (JetStream domain `hub`,
 * client and leafnode ports, optional cluster routes and gateways), and the
 * leafmesh hub process beside it: the catalog publisher (when given a source),
 * the fabric monitor, and the status and snapshot replies.
 *
 * ```ts
 * const hub = await startHub({ name: "hub-1", dataDir, client, leaf, monitor, source, log });
 * await hub.stop();
 * ```
 */
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Bus } from "../bus/bus.ts";
import { linkActorToBus } from "../bus/actor-link.ts";
import { snapshotPage, type SnapshotPage } from "../bus/catalog-feed.ts";
import { localClientUrl } from "../bus/connect.ts";
import type { NatsServerSupervisor } from "../nats/supervisor.ts";
import { checkNodeName } from "../bus/subjects.ts";
import type { Logger } from "../lib/log.ts";
import { startServerProcess, type ServerProcess } from "./server-process.ts";
import { renderHubConfig, type ClusterOptions, type GatewayOptions, type HostPort } from "../nats/render.ts";
import { CatalogPublisher } from "../services/controller/publisher.ts";
import type { HubSecurity } from "../trust/security.ts";
import { endsDetail, endsState, loadedEnds } from "../trust/ends.ts";
import { startTrustAuditor } from "../trust/auditor.ts";
import { openRevocationsBucket, publishRevocationList } from "../trust/revocations.ts";
import { readSignedRevocationList } from "../trust/node-credentials.ts";
import { readFileSync } from "node:fs";
import { buckets } from "../bus/subjects.ts";
import { watchStore } from "../nats/store-watchdog.ts";
import { retryUntilReady } from "../lib/retry.ts";
import { startHubLoad } from "./hub-load.ts";
import { startHubVersions } from "./hub-versions.ts";
import { nodeRecordTtlMs, openNodeRecordsBucket } from "../bus/node-record.ts";
import type { CatalogSource } from "../services/controller/source.ts";
import { buildStatus, type NodeStatus } from "./status.ts";
import { hostAddresses } from "./host-addresses.ts";
import { rpc } from "../bus/rpc.ts";
import { startEnrolmentService, type EnrolmentService } from "../trust/enrolment-service.ts";
import { startRenewalService, type RenewalService } from "../trust/renewal-service.ts";
import { describeError } from "../lib/errors.ts";
import { pushAccountClaims } from "../trust/push.ts";

export interface HubConfig {
  name: string;
  dataDir: string;
  client: HostPort;
  leaf: HostPort;
  /** The leaf address named to leafs instead of `leaf` (hub --leaf-advertise): HubServerOptions.leafAdvertise. */
  leafAdvertise?: HostPort;
  monitor: HostPort;
  cluster?: ClusterOptions;
  gateway?: GatewayOptions;
  source?: CatalogSource;
  /** @default 1, or 3 with cluster routes */
  replicas?: number;
  leaseTtlMs?: number;
  /** Where /metrics, /healthz and /readyz listen; undefined: not served. */
  metrics?: HostPort;
  /** The NAT observer agents ask to learn their NAT type: two addresses of this host, two ports. */
  observer?: { hosts: [string, string]; ports: [number, number] };
  /** Mesh security (trust/): config fragments and the hub's own client options. Undefined: --insecure. */
  security?: HubSecurity;
  /** The keys directory the security came from: the trust auditor reads node identities there. */
  keysDir?: string;
  /**
   * Serve enrolment by token (trust/enrolment.ts) from keysDir, the whole keys directory. `changedAtStart`:
   * account JWTs that setting enrolment up changed, pushed to the cluster once the hub runs.
   */
  enrol?: {
    changedAtStart: string[];
    /** How long certificates of joining nodes, and their renewals, last (hub --node-cert-validity). @default 825 */
    certificateDays?: number;
  };
  /** A stop asked while it starts (Ctrl-C, SIGTERM): the start ends with INTERRUPTED and leaves nothing running. */
  signal?: AbortSignal;
  log: Logger;
}

export interface HubRuntime {
  readonly connection: NatsConnection;
  readonly bus: Bus;
  readonly server: NatsServerSupervisor;
  readonly publisher: CatalogPublisher;
  status(): NodeStatus;
  stop(): Promise<void>;
}

export async function startHub(config: HubConfig): Promise<HubRuntime> {
  checkNodeName(config.name, "hub name");
  if (config.security && config.security.outdatedAccounts.length > 0) {
    config.log.child({ node: config.name }).warn(
      { outdated: config.security.outdatedAccounts },
      `the mesh's keys were signed by an older leafmesh (${config.security.outdatedAccounts.length} accounts): a stolen node could reach beyond its own subjects or exhaust a hub (each account's reason is in 'outdated'). Run 'leafmesh keys resign --dir KEYS --hub URLS' where the keys are made`,
    );
  }
  if (config.security && config.security.revocationsKept.length > 0) {
    config.log.child({ node: config.name }).error(
      { kept: config.security.revocationsKept },
      `the keys directory signed ${config.security.revocationsKept.length} account(s) again without revocations this hub holds (restored from a backup?): this hub keeps its own JWTs of those accounts, so the revoked keys stay out, and changes made there to them wait. Run 'leafmesh keys push --dir KEYS --hub URLS' where the keys are made: it takes the revocations back into the directory`,
    );
  }
  // The source loads (reads and checks every manifest) while the nats-server starts: both take seconds at 10,000 services.
  const sourceStarted = config.source?.start();
  sourceStarted?.catch(() => undefined); // its error is the publisher's to raise, once the server is up
  let node: ServerProcess;
  try {
    node = await startHubServer(config);
  } catch (error) {
    await config.source?.stop();
    throw error;
  }
  try {
    return await startHubParts(config, node, sourceStarted);
  } catch (error) {
    await node.stop();
    throw error;
  }
}

function startHubServer(config: HubConfig): Promise<ServerProcess> {
  return startServerProcess({
    name: config.name,
    role: "hub",
    signal: config.signal,
    client: config.client,
    connectOptions: config.security?.publisherConnectOptions,
    log: config.log,
    server: {
      dataDir: config.dataDir,
      monitor: config.monitor,
      loadAccountsAtStart: config.security && { storeDir: join(config.dataDir, "jetstream"), accounts: config.security.accounts },
      listenFlags: [
        { flag: "--listen", address: config.client },
        { flag: "--leaf-listen", address: config.leaf },
        { flag: "--monitor-listen", address: config.monitor },
        ...(config.cluster ? [{ flag: "--cluster-listen", address: config.cluster.listen }] : []),
        ...(config.gateway ? [{ flag: "--gateway-listen", address: config.gateway.listen }] : []),
      ],
      configText: renderHubConfig({
        serverName: config.name,
        storeDir: join(config.dataDir, "jetstream"),
        client: config.client,
        leaf: config.leaf,
        leafAdvertise: config.leafAdvertise,
        monitor: config.monitor,
        // Routes and gateways carry everything: with security they need the mesh's TLS client certificates too.
        // And the hubs' route password (trust/route-credentials.ts): a node's certificate is the mesh CA's too.
        cluster: config.cluster && { ...config.cluster, security: config.security?.routesFragment, credentials: config.security?.routeCredentials },
        gateway: config.gateway && { ...config.gateway, security: config.security?.routesFragment, credentials: config.security?.routeCredentials },
        security: config.security?.configFragment,
        leafSecurity: config.security?.leafnodesFragment,
      }),
    },
  });
}

async function startHubParts(config: HubConfig, node: ServerProcess, sourceStarted: Promise<void> | undefined): Promise<HubRuntime> {
  const { log, connection, bus, server } = node;
  const fabric = node.watchFabric();
  // A store that stopped answering (a full disk) is said, and restarted unless the hub is one of a cluster (quorum).
  const watchdog = watchStore({ connection, stream: `KV_${buckets.catalog}`, dataDir: config.dataDir, server, log: log.child({ actor: "fabric" }), restart: !config.cluster, holds: "catalog" });
  node.onStop(() => watchdog.stop(), "the watch on the hub's JetStream");

  const replicas = config.replicas ?? (config.cluster ? 3 : 1);
  const publisher = new CatalogPublisher({
    connection,
    source: config.source,
    sourceStarted,
    holder: config.name,
    bus,
    log: log.child({ actor: "publisher" }),
    replicas,
    leaseTtlMs: config.leaseTtlMs,
    signal: config.signal,
  });
  log.info({ replicas, source: config.source?.name ?? "none" }, "opening the catalog");
  node.onStop(() => publisher.stop(), "the catalog publisher");
  await publisher.start();
  // The node records' bucket belongs to the hubs: nodes may only put their own key in it (trust/claims.ts), and its stream refuses roll-ups.
  const nodeRecords = await retryUntilReady(() => openNodeRecordsBucket(connection, { ttlMs: nodeRecordTtlMs, replicas }), { what: "the hub's JetStream (node records bucket)", log, signal: config.signal });
  if (nodeRecords.changed.length > 0) log.info({ bucket: buckets.nodes, changed: nodeRecords.changed }, "node records bucket updated: its stream refuses roll-up headers (which let any node purge every record), keeps a record between two keep-alives, and refuses a record over 64 KiB (which cut every agent off its own server)");
  if (config.security) {
    // The revoked certificates that agents enforce at their TLS handshakes (trust/revocations.ts): the newest list wins.
    const revocations = await retryUntilReady(() => openRevocationsBucket(connection, replicas), { what: "the hub's JetStream (revocations bucket)", log, signal: config.signal });
    const signed = config.keysDir ? readSignedRevocationList(config.keysDir) : undefined;
    // A list the hubs cannot take (too large) is said, and the hub runs on: the cut it makes at the NATS level (account
    // revocations) holds without it, and a hub that did not start for it took the whole mesh's cloud down.
    if (signed) {
      await publishRevocationList({ kv: revocations, signed, caCertPem: readFileSync(config.security.files.ca, "utf8"), log: log.child({ actor: "trust" }) }).catch((error: unknown) =>
        log.child({ actor: "trust" }).error({ err: describeError(error) }, `the keys directory's revocation list was not published: ${describeError(error)}`),
      );
    }
  }

  // A Ctrl-C while the parts start (the last second of a start) ends it at the next part: startHub stops those started.
  node.throwIfStopAsked();
  const link = linkActorToBus({
    bus,
    actorName: "fabric",
    actor: server.actor,
    detail: () => ({ role: "hub", region: config.gateway?.name ?? null, cluster: config.cluster?.name ?? null, leafListen: `${config.leaf.host}:${config.leaf.port}`, addresses: hostAddresses(config.leaf) }),
  });
  node.onStop(() => link.stop(), "the fabric link");
  const stopSnapshot = bus.serve(rpc.catalogSnapshot, (request): SnapshotPage =>
    snapshotPage([...publisher.stored.keys()].sort(), request, (key) => {
      const stored = publisher.stored.get(key);
      return stored ? { revision: stored.revision, object: stored.object } : undefined;
    }),
  );
  node.onStop(stopSnapshot, "the catalog snapshot reply");

  let enrolment: EnrolmentService | undefined;
  let renewal: RenewalService | undefined;
  const hubEnds = config.security ? loadedEnds({ cert: config.security.files.cert }) : [];
  const publisherState = () => (config.source ? (publisher.leading ? "leading" : "following") : "no source");
  const status = (): NodeStatus =>
    buildStatus({
      node: config.name,
      role: "hub",
      links: fabric.links,
      actors: [
        { name: link.actorName, state: link.state, since: new Date(link.since).toISOString() },
        {
          name: "publisher",
          state: publisherState(),
          since: new Date().toISOString(),
          detail: { holder: publisher.leading ? config.name : publisher.leaseHolder, source: config.source?.name ?? null },
        },
        { name: "relay", state: "publishing load", since: "", detail: { ...load.current() } },
        ...(enrolment ? [{ name: "enrolment", state: "serving", since: new Date().toISOString(), detail: { ...enrolment.counts, ...renewalCounts(renewal) } }] : []),
        // The hubs' certificate ends 825 days after keys init or keys hub-cert: shown here so it is seen coming.
        ...(config.security ? [{ name: "trust", state: endsState(hubEnds, Date.now()) ?? "certificate valid", since: "", detail: endsDetail(hubEnds) }] : []),
      ],
      catalogObjects: publisher.stored.size,
    });
  // The hubs and nodes on another protocol level (a mesh mid-upgrade), read for each status asked.
  const versions = startHubVersions({ connection, kv: nodeRecords.kv, log: log.child({ actor: "fabric" }), self: config.name });
  node.onStop(() => versions.stop(), "the hubs' levels");
  node.serveStatus(async () => ({ ...status(), ...(await versions.status()) }));
  // What agents weigh in choosing their relay (roles/relay-choice.ts): this hub's relay channels and leaf bytes/s.
  const load = startHubLoad({ bus, monitor: config.monitor, log: log.child({ actor: "fabric" }) });
  node.onStop(() => load.stop(), "the relay load record");
  await node.serveMetrics({
    listen: config.metrics,
    health: () => ({ healthy: server.state === "ready" && !connection.isClosed(), ready: server.state === "ready", detail: { server: server.state, publisher: publisherState() } }),
    objects: () => publisher.stored.size,
    leading: () => publisher.leading,
  });
  node.throwIfStopAsked();
  if (config.observer) {
    // Loaded only for a hub that observes: the tunnel brings libp2p (~35 MiB resident), which the agent process (it loads this module) need not hold.
    const { startObserver } = await import("../services/tunnel/index.ts");
    const observer = await startObserver({ ...config.observer, log: log.child({ actor: "tunnel" }) });
    node.onStop(() => observer.close(), "the NAT observer");
  }
  // With security: say in this hub's log when a node oversteps (its account's denials are otherwise silent) or is refused, and why.
  let auditor: Awaited<ReturnType<typeof startTrustAuditor>> | undefined;
  node.throwIfStopAsked();
  if (config.security && config.keysDir) {
    auditor = await startTrustAuditor({
      dir: config.keysDir,
      servers: [localClientUrl(config.client)],
      tls: config.security.publisherConnectOptions.tls,
      systemConnectOptions: config.security.systemConnectOptions,
      log,
      rescanIntervalMs: 30_000,
      resolverDir: config.security.files.resolverDir,
    });
    const started = auditor;
    node.onStop(() => started.stop(), "the trust auditor");
  }
  node.throwIfStopAsked();
  if (config.enrol && config.security && config.keysDir) {
    const enrolLog = log.child({ actor: "enrolment" });
    const systemOptions = config.security.systemConnectOptions;
    // Through this hub's system account: its full resolver stores the accounts and passes them to the cluster.
    const keysDir = config.keysDir;
    const push = async (jwts: string[]) =>
      void (await pushAccountClaims({ servers: [localClientUrl(config.client)], connectOptions: systemOptions, jwts, keysDir, say: (line) => enrolLog.error(line) }));
    // The enrol account among them at every start (cli/hub.ts): a push that fails is said, and the hub runs on, as the
    // hubs' resolvers keep the revocations they hold whatever this directory says.
    if (config.enrol.changedAtStart.length > 0) {
      await push(config.enrol.changedAtStart).catch((error: unknown) => enrolLog.error({ err: describeError(error) }, `the enrol and changed accounts were not pushed at start: ${describeError(error)}`));
    }
    enrolment = await startEnrolmentService({
      servers: [localClientUrl(config.client)],
      tls: config.security.publisherConnectOptions.tls,
      dir: config.keysDir,
      push,
      onIssued: () => void auditor?.rescan().catch((error: unknown) => enrolLog.warn({ err: String(error) }, "the auditor did not rescan")),
      log: enrolLog,
      certificateDays: config.enrol.certificateDays,
    });
    const service = enrolment;
    node.onStop(() => service.stop(), "the enrolment service");
    // Joined nodes renew their certificates here before they end (trust/renewal.ts asks): the CA key is here.
    const renewing = startRenewalService({ connection, dir: config.keysDir, certificateDays: config.enrol.certificateDays ?? 825, log: log.child({ actor: "renewal" }) });
    renewal = renewing;
    node.onStop(() => renewing.stop(), "the certificate renewal service");
  }
  node.throwIfStopAsked();
  log.info({ name: config.name }, "hub ready");
  return { connection, bus, server, publisher, status, stop: () => node.stop() };
}

/** The renewal service's counts for the enrolment row of `leafmesh status` ("renewal renewed", "renewal revoked", ...). */
function renewalCounts(renewal: RenewalService | undefined): Record<string, number> {
  return Object.fromEntries(Object.entries(renewal?.counts ?? {}).map(([outcome, count]) => [`renewal ${outcome}`, count]));
}
