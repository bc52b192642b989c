/**
 * The agent role assembled: a supervised leaf nats-server (JetStream domain =
 * node name, one remote listing every upstream URL so it fails over by itself),
 * the fabric monitor, and the actors. Actors are started by `ActorFactory`s
 * handed in, so this file imports no actor but the controller, which every
 * agent runs.
 *
 * ```ts
 * const agent = await startAgent({ node: "edge-a", upstreams: ["nats://hub:7422"], dataDir, client, monitor, log });
 * agent.status();
 * await agent.stop();
 * ```
 */
import { dirname, join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import type { AnyActorRef } from "xstate";
import type { Bus } from "../bus/bus.ts";
import { linkActorToBus, stateName, type ActorLink } from "../bus/actor-link.ts";
import type { CatalogFeed } from "../bus/catalog-feed.ts";
import type { FabricMonitor } from "../nats/fabric-monitor.ts";
import type { NatsServerSupervisor } from "../nats/supervisor.ts";
import { buckets, checkNodeName, hubDomain, type ActorName } from "../bus/subjects.ts";
import type { Logger } from "../lib/log.ts";
import type { Registry } from "../lib/prom.ts";
import type { MetricsServer } from "../lib/metrics.ts";
import { startServerProcess, type ServerProcess } from "./server-process.ts";
import { accountStreamBuffersInHeapLimits } from "../lib/stream-heap.ts";
import { orderByRtt } from "../nats/nearest.ts";
import { checkUpstreamUrls, renderLeafConfig, toLeafUrl, type ClusterOptions, type HostPort } from "../nats/render.ts";
import { startController, type Controller } from "../services/controller/agent-controller.ts";
import { ReleaseAfterChurn } from "../lib/release-memory.ts";
import type { UpstreamState } from "../bus/partition.ts";
import { watchUpstream } from "./upstream-state.ts";
import { hostAddresses } from "./host-addresses.ts";
import { buildStatus, type NodeStatus } from "./status.ts";
import type { NodeSecurity } from "../trust/security.ts";
import type { SiteSecurity } from "../trust/site-security.ts";
import { staleLeafExplainer } from "../nats/leaf-stale.ts";
import { classifyServerLogLine, duplicateNodeExplainer, explainLeafRefusal, rejoinAdvice, watchPermissionErrors } from "../trust/denials.ts";
import { followRevocations, type RevocationWatch } from "../trust/revocations.ts";
import { certificateFingerprint } from "../trust/revocation-list.ts";
import { endsDetail, endsState, loadedEnds, type Ending } from "../trust/ends.ts";
import { readFileSync } from "node:fs";
import { RelayChoice, type RelayChoiceSettings } from "./relay-choice.ts";
import { watchStore, type StoreWatchdogOptions } from "../nats/store-watchdog.ts";
import type { ScoreWeights } from "../nats/relay-score.ts";

export interface AgentContext {
  node: string;
  bus: Bus;
  connection: NatsConnection;
  log: Logger;
  /** Prometheus registry of this process: actors register their metrics here. */
  registry: Registry;
  /** The catalog as catalog events build it (one view shared by the actors of this process). */
  feed: CatalogFeed;
  /** With keys: the mesh's revoked certificates, mirrored and verified (trust/revocations.ts); the tunnel refuses them. */
  revocations?: RevocationWatch;
  /** How far the node reaches (its leaf link, and under a site the site's uplink): the per-service partition policy (bus/partition.ts). */
  upstream: UpstreamState;
}

/**
 * A started actor as the agent sees it: its machine (the actor links itself to
 * the bus for state and heartbeat events; the agent reads it for status),
 * status details, and how to stop it.
 */
export interface StartedActor {
  name: ActorName;
  actor: AnyActorRef;
  detail?: () => Record<string, unknown>;
  stop(): Promise<void>;
}

export type ActorFactory = (context: AgentContext) => Promise<StartedActor>;

export interface AgentConfig {
  node: string;
  /** Leafnode URLs of the hubs (or of the site servers). */
  upstreams: string[];
  dataDir: string;
  client: HostPort;
  monitor: HostPort;
  /** @default "hub" */
  upstreamDomain?: string;
  /** "rtt": nearest upstream first (measured at start); "given": the order given. @default "rtt" */
  upstreamOrder?: "rtt" | "given";
  /**
   * Relay choice (roles/relay-choice.ts): with several upstreams, keep scoring them and move the leaf
   * link to a better one when the one in use degrades. @default "on" (it acts only with 2 or more upstreams)
   */
  relayChoice?: "on" | "off";
  relayChoiceSettings?: Partial<RelayChoiceSettings>;
  relayScoreWeights?: Partial<ScoreWeights>;
  /** JetStream domain of this server. @default the node name (a site cluster's servers share the site's name) */
  domain?: string;
  actors?: ActorFactory[];
  /** A site server: the role name in status, the leafnode address its agents attach to, its cluster. */
  role?: "agent" | "site";
  leaf?: HostPort;
  cluster?: ClusterOptions;
  /** JetStream replicas of the catalog mirror. @default 1, or 3 in a site cluster */
  replicas?: number;
  /** Where /metrics, /healthz and /readyz listen; undefined: not served. */
  metrics?: HostPort;
  /** Mesh security (trust/): the node's credentials, local auth and client options. Undefined: --insecure. */
  security?: NodeSecurity;
  /** A secured site server (trust/site-security.ts): operator mode, one remote per account, TLS towards its agents. */
  siteSecurity?: SiteSecurity;
  /** The watch on the node's own JetStream (nats/store-watchdog.ts): timings for tests. */
  storeWatch?: Pick<StoreWatchdogOptions, "intervalMs" | "timeoutMs" | "restartAfter" | "lowSpaceBytes">;
  log: Logger;
}

export interface AgentRuntime {
  readonly connection: NatsConnection;
  readonly bus: Bus;
  readonly server: NatsServerSupervisor;
  readonly controller: Controller;
  readonly fabric: FabricMonitor;
  readonly metrics: MetricsServer;
  /** With keys: the revocation list in force on this node. */
  readonly revocations: RevocationWatch | undefined;
  /** How far the node reaches (its leaf link; under a site, the site's uplink), when it runs actors. */
  readonly upstream: UpstreamState | undefined;
  status(): NodeStatus;
  stop(): Promise<void>;
}

export async function startAgent(config: AgentConfig): Promise<AgentRuntime> {
  checkNodeName(config.node, config.role === "site" ? "site server name" : "node name");
  if (config.domain) checkNodeName(config.domain, "site name");
  const role = config.role ?? "agent";
  // This process splices stream bytes (tunnel, cluster IPs): see lib/stream-heap.ts.
  accountStreamBuffersInHeapLimits();
  // Nearest upstream first: the leaf attaches to it and fails over down the list.
  checkUpstreamUrls(config.upstreams, role === "site" ? "--upstream" : "--hub");
  let upstreams = config.upstreams.map(toLeafUrl);
  // Only a choice needs measuring (each probe is a bare TCP connect, which a TLS hub logs as a failed handshake).
  if ((config.upstreamOrder ?? "rtt") === "rtt" && upstreams.length > 1) {
    const measured = await orderByRtt(upstreams);
    upstreams = measured.map((upstream) => upstream.url);
    config.log.child({ node: config.node }).info({ upstreams: measured }, "upstreams ordered by round-trip time");
  }
  config.log.child({ node: config.node }).info({ upstreams }, "the leaf attaches to these upstreams, in this order");
  if (config.cluster && config.siteSecurity && !config.siteSecurity.routeCredentials) {
    config.log.child({ node: config.node }).warn(
      { site: config.siteSecurity.site },
      "this site bundle has no routes.secret (an older leafmesh made it): the site's route port takes any certificate of the mesh CA, a node's too. Issue the site again (`leafmesh keys issue-site`) and give every server the new bundle",
    );
  }
  // Rendered again, in another order, when relay choice moves the leaf link.
  const renderConfig = (order: string[]) =>
    renderLeafConfig({
      serverName: config.node,
      domain: config.domain ?? config.node,
      storeDir: join(config.dataDir, "jetstream"),
      client: config.client,
      monitor: config.monitor,
      upstreams: order,
      leaf: config.leaf,
      cluster: config.cluster && config.siteSecurity ? { ...config.cluster, security: config.siteSecurity.routesFragment, credentials: config.siteSecurity.routeCredentials } : config.cluster,
      security: config.security?.localAuthFragment ?? config.siteSecurity?.configFragment,
      remoteSecurity: config.security?.leafRemoteFragment,
      leafSecurity: config.siteSecurity?.leafnodesFragment,
      remotes: config.siteSecurity?.remotes,
    });
  const duplicate = duplicateNodeExplainer(config.node);
  // A leaf link made and gone stale again and again (a path MTU black hole): said, and shown by status while no link is up.
  const stale = staleLeafExplainer();
  let leafProblem: { text: string; at: number } | undefined;
  const node = await startServerProcess({
    name: config.node,
    role,
    client: config.client,
    connectOptions: config.security?.clientConnectOptions ?? config.siteSecurity?.clientConnectOptions,
    log: config.log,
    server: {
      dataDir: config.dataDir,
      monitor: config.monitor,
      loadAccountsAtStart: config.siteSecurity && { storeDir: join(config.dataDir, "jetstream"), accounts: config.siteSecurity.accounts },
      configText: renderConfig(upstreams),
      // This node's leaf refused by its upstream (the remote's error received, "Leafnode Error '...'", or its own dial's,
      // "Error trying to connect as leafnode": a clock behind the certificates, another mesh's hub): said in this
      // node's words (revoked, expired, another mesh's), not only nats-server's. Connections refused here are the auditor's.
      explainLine: (line) => {
        const twin = duplicate(line);
        if (twin) return { kind: "duplicate-node", text: twin };
        const staleLinks = stale(line);
        if (staleLinks) {
          leafProblem = { text: staleLinks, at: performance.now() };
          return { kind: "stale-leaf", text: staleLinks };
        }
        if (!/Leafnode Error '|Error trying to connect as leafnode|TLS leafnode handshake error: x509|attempted to connect to wrong port/.test(line)) return undefined;
        const text = explainLeafRefusal(line, { credsFile: config.security?.files.creds });
        return text ? { kind: classifyServerLogLine(line)?.cause ?? "refusal", text } : undefined;
      },
    },
  });
  try {
    // Shown while it goes on: the explainer says it again at every such link.
    const upstreamProblem = () => (leafProblem && performance.now() - leafProblem.at < 60_000 ? leafProblem.text : undefined);
    return await startAgentParts(config, node, upstreams, renderConfig, upstreamProblem);
  } catch (error) {
    await node.stop();
    throw error;
  }
}

async function startAgentParts(config: AgentConfig, node: ServerProcess, upstreams: string[], renderConfig: (order: string[]) => string, upstreamProblem: () => string | undefined): Promise<AgentRuntime> {
  const { log, connection, bus, server } = node;
  const role = config.role ?? "agent";
  // A refused publish is silent at the client: log it, explained (which subject, whose it is).
  if (config.security) watchPermissionErrors(connection, log.child({ actor: "trust" }), config.node);

  // The controller subscribes to link events before the monitor publishes the first one.
  const controller = await startController({ bus, log: log.child({ actor: "controller" }), upstreamDomain: config.upstreamDomain ?? hubDomain, replicas: config.replicas ?? (config.cluster ? 3 : 1), domain: config.domain ?? config.node });
  node.onStop(() => controller.stop(), "the controller");
  // A large catalog change (a fresh node's first load above all) leaves garbage V8 keeps resident: one full collection once it settles (lib/release-memory.ts).
  const release = new ReleaseAfterChurn({ log: log.child({ actor: "controller" }) });
  const stopCounting = controller.feed.onChange((keys) => release.note(keys.length));
  node.onStop(() => {
    stopCounting();
    release.stop();
  }, "the memory release after catalog changes");
  const fabric = node.watchFabric({ upstreams });
  // A store that stopped answering (a full disk) is said, and restarted unless the server is one of a site's cluster (quorum).
  const watchdog = watchStore({ connection, stream: `KV_${buckets.catalog}`, dataDir: config.dataDir, server, log: log.child({ actor: "fabric" }), restart: !config.cluster, ...config.storeWatch });
  node.onStop(() => watchdog.stop(), "the watch on the node's JetStream");

  const links: ActorLink[] = [
    linkActorToBus({
      bus,
      actorName: "fabric",
      actor: server.actor,
      // What `leafmesh status --tree` draws the fabric from.
      detail: () => ({
        role,
        domain: config.domain ?? config.node,
        upstream: fabric.links.find((link) => link.direction === "upstream")?.url ?? null,
        upstreamAddress: fabric.links.find((link) => link.direction === "upstream")?.address ?? null,
        ...(config.leaf ? { leafListen: `${config.leaf.host}:${config.leaf.port}`, addresses: hostAddresses(config.leaf) } : {}),
      }),
    }),
    linkActorToBus({ bus, actorName: "controller", actor: controller.actor, detail: () => ({ objects: controller.index.size, online: controller.online }) }),
  ];
  node.onStop(() => links.forEach((link) => link.stop()), "the actor links");
  await node.serveMetrics({
    listen: config.metrics,
    health: () => ({
      healthy: server.state === "ready" && !connection.isClosed(),
      ready: controller.actor.getSnapshot().matches("serving"),
      detail: { server: server.state, controller: stateOf(controller.actor.getSnapshot().value), upstream: fabric.upstreamUp },
    }),
    objects: () => controller.index.size,
    upstream: () => fabric.upstreamUp,
  });

  // The revoked certificates this node's peers must not present (mirrored, so they hold offline too).
  const caFile = config.security?.files.ca ?? config.siteSecurity?.files.ca;
  let revocations: RevocationWatch | undefined;
  let selfRevoked = false;
  /** When this node's certificate (and its credentials, issued with --expires) end: shown in status. */
  let ownEnds: Ending[] = [];
  if (caFile) {
    const watch = await followRevocations({ bus, caCertPem: readFileSync(caFile, "utf8"), upstreamDomain: config.upstreamDomain ?? hubDomain, log: log.child({ actor: "trust" }), replicas: config.replicas ?? (config.cluster ? 3 : 1) });
    revocations = watch;
    node.onStop(() => watch.stop(), "the revocations mirror");
    // This node's own certificate, as loaded now: once it is on the list every peer refuses it, and only a new bundle
    // brings the node's tunnel back (an agent starts again with one put in place: trust/bundle-watch.ts). Said once,
    // as an error, and shown in status.
    const ownCert = config.security?.files.cert ?? config.siteSecurity?.files.cert;
    const ownFingerprint = ownCert ? certificateFingerprint(readFileSync(ownCert)) : undefined;
    ownEnds = ownCert ? loadedEnds({ cert: ownCert, creds: config.security?.files.creds }) : [];
    const checkSelf = () => {
      const revoked = ownFingerprint !== undefined && watch.isRevoked(ownFingerprint);
      if (revoked && !selfRevoked) {
        log.error(
          { actor: "trust", revocationList: watch.list.version, certificate: ownCert },
          `this node's own certificate is on the mesh's revocation list: every peer refuses its tunnel. Its credentials were revoked or replaced (keys revoke, keys issue --rotate): ${role === "site" ? "restart it with its new bundle" : config.security && rejoinAdvice(config.security.files.creds) ? `it joined with a token and has no bundle to be given: remove ${dirname(config.security.files.creds)} and start it again with a join token (it makes new keys; a revoked name may join again)` : "put its new bundle where its old one is (--keys), and it starts again with it"}`,
        );
      }
      selfRevoked = revoked;
    };
    checkSelf();
    const stopSelfCheck = watch.onChange(checkSelf);
    node.onStop(() => void stopSelfCheck(), "the own-certificate check");
  }

  const started: StartedActor[] = [];
  let upstreamState: UpstreamState | undefined;
  if ((config.actors ?? []).length > 0) {
    // The controller's own index: the actors of this process share it (other processes follow the bus).
    const feed = controller.feed;
    // The controller's view, in-process and at once (and under a site, whether the site reaches the cloud): the actors apply each service's partition policy with it.
    const watch = watchUpstream({ controller, connection, upstreamDomain: config.upstreamDomain ?? hubDomain, log: log.child({ actor: "controller" }) });
    const upstream = watch.state;
    upstreamState = upstream;
    node.onStop(() => watch.stop(), "the upstream watch");
    for (const factory of config.actors ?? []) {
      const actor = await factory({ node: config.node, bus, connection, log, registry: node.metrics.registry, feed, revocations, upstream });
      started.push(actor);
      node.onStop(() => actor.stop(), `the ${actor.name} actor`);
    }
  }

  // A site server's remotes are per account and its cluster moves as one: relay choice is an agent's.
  let relayChoice: RelayChoice | undefined;
  if (role === "agent" && (config.relayChoice ?? "on") === "on" && upstreams.length > 1 && !config.siteSecurity) {
    const choice = new RelayChoice({
      node: config.node,
      upstreams,
      bus,
      log: log.child({ actor: "fabric" }),
      currentUpstream: () => fabric.links.find((link) => link.direction === "upstream")?.url,
      moveLeaf: async (order) => {
        await server.restartWith(renderConfig(order));
        // The monitor's view of the leaf at once, not at its next tick: status and the next round read it.
        await fabric.poll();
      },
      settings: config.relayChoiceSettings,
      weights: config.relayScoreWeights,
    });
    choice.start();
    relayChoice = choice;
    node.onStop(() => choice.stop(), "relay choice");
  }

  const status = (): NodeStatus =>
    buildStatus({
      node: config.node,
      role,
      links: fabric.links,
      actors: [
        ...links.map((link) => ({ name: link.actorName, state: link.state, since: new Date(link.since).toISOString() })),
        ...started.map((actor) => ({ name: actor.name, state: stateName(actor.actor.getSnapshot().value), since: "", ...(actor.detail ? { detail: actor.detail() } : {}) })),
        ...(revocations
          ? [
              {
                name: "trust",
                state: selfRevoked ? "this node revoked" : (endsState(ownEnds, Date.now()) ?? (revocations.list.version > 0 ? "enforcing" : "no revocations")),
                since: "",
                detail: { revocationList: revocations.list.version, revoked: revocations.list.revoked.map((entry) => entry.node), ...endsDetail(ownEnds) },
              },
            ]
          : []),
      ],
      catalogObjects: controller.index.size,
      upstreams,
      ...(fabric.upstreamUp ? {} : { upstreamProblem: upstreamProblem() }),
      relayChoice: relayChoice?.status(),
    });
  node.serveStatus(status);
  log.info(`${role} ready`);

  return { connection, bus, server, controller, fabric, metrics: node.metrics, revocations, upstream: upstreamState, status, stop: () => node.stop() };
}

function stateOf(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}
