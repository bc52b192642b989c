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
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import type { AnyActorRef } from "xstate";
import type { Bus } from "../bus/bus.ts";
import type { CatalogFeed } from "../bus/catalog-feed.ts";
import type { FabricMonitor } from "../nats/fabric-monitor.ts";
import type { NatsServerSupervisor } from "../nats/supervisor.ts";
import { checkNodeName, type ActorName } from "../bus/subjects.ts";
import type { Logger } from "../lib/log.ts";
import type { Registry } from "../lib/prom.ts";
import type { MetricsServer } from "../lib/metrics.ts";
import { startServerProcess } from "./server-process.ts";
import { accountStreamBuffersInHeapLimits } from "../lib/stream-heap.ts";
import { orderByRtt } from "../nats/nearest.ts";
import { checkUpstreamUrls, renderLeafConfig, toLeafUrl, type ClusterOptions, type HostPort } from "../nats/render.ts";
import type { Controller } from "../services/controller/agent-controller.ts";
import type { UpstreamState } from "../bus/partition.ts";
import type { NodeStatus } from "./status.ts";
import type { NodeSecurity } from "../trust/security.ts";
import type { SiteSecurity } from "../trust/site-security.ts";
import { staleLeafExplainer } from "../nats/leaf-stale.ts";
import { classifyServerLogLine, duplicateNodeExplainer, explainLeafRefusal, leafRefuser } from "../trust/denials.ts";
import { RevokedNotice } from "../trust/revoked-notice.ts";
import { rememberRevocation } from "../trust/revoked-mark.ts";
import { watchRefusedLeafs, type ClosedLeaf } from "../trust/refused-leafs.ts";
import { monitorBase, monitorJson } from "../nats/monitor-http.ts";
import type { RevocationWatch } from "../trust/revocations.ts";
import type { RelayChoiceSettings } from "./relay-choice.ts";
import type { StoreWatchdogOptions } from "../nats/store-watchdog.ts";
import type { ScoreWeights } from "../nats/relay-score.ts";
import type { HubProxy } from "../nats/hub-proxy.ts";
import { startHubForwarders, type HubForwarders } from "../nats/hub-proxy-forwarder.ts";
import { checkProxiedUpstreams, leafRemoteUrls, proxyEnvironmentHint } from "./hub-proxy-routes.ts";

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
  /** The actors to start, or how to load them (loaded while the server starts: cli/agent.ts). */
  actors?: ActorFactory[] | (() => Promise<ActorFactory[]>);
  /** A site server: the role name in status, the leafnode address its agents attach to, its cluster. */
  role?: "agent" | "site";
  leaf?: HostPort;
  /** A site server's leafnode address named to its agents instead of its own (site --leaf-advertise). */
  leafAdvertise?: HostPort;
  cluster?: ClusterOptions;
  /** JetStream replicas of the catalog mirror. @default 1, or 3 in a site cluster */
  replicas?: number;
  /** The site's HTTP proxy: the leaf reaches its upstreams only through it (--hub-proxy; roles/hub-proxy-routes.ts). */
  hubProxy?: HubProxy;
  /** Where /metrics, /healthz and /readyz listen; undefined: not served. */
  metrics?: HostPort;
  /** Mesh security (trust/): the node's credentials, local auth and client options. Undefined: --insecure. */
  security?: NodeSecurity;
  /** A secured site server (trust/site-security.ts): operator mode, one remote per account, TLS towards its agents. */
  siteSecurity?: SiteSecurity;
  /** A stop asked while it starts (Ctrl-C, SIGTERM): the start ends with INTERRUPTED and leaves nothing running. */
  signal?: AbortSignal;
  /** How often the catalog and revocation-list mirrors are checked against their upstream's streams (bus/mirror-lineage.ts). @default lineageCheckMs */
  mirrorCheckMs?: number;
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
  /** Whether this node was told it is revoked (its upstream refused its leaf as revoked, or its certificate is on the list). */
  readonly revoked: RevokedNotice;
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
  const upstreamOption = role === "site" ? "--upstream" : "--hub";
  if (config.hubProxy) checkProxiedUpstreams(upstreams, Boolean(config.security ?? config.siteSecurity), upstreamOption);
  // Only a choice needs measuring (each probe is a bare TCP connect, which a TLS hub logs as a failed handshake).
  // Through a proxy a connect reaches only the loopback forwarder: the order given stands.
  if ((config.upstreamOrder ?? "rtt") === "rtt" && upstreams.length > 1 && !config.hubProxy) {
    const measured = await orderByRtt(upstreams);
    upstreams = measured.map((upstream) => upstream.url);
    config.log.child({ node: config.node }).info({ upstreams: measured }, "upstreams ordered by round-trip time");
  }
  config.log.child({ node: config.node }).info({ upstreams, ...(config.hubProxy ? { proxy: config.hubProxy.shown } : {}) }, `the leaf attaches to these upstreams, in this order${config.hubProxy ? ", through the proxy" : ""}`);
  let forwarders: HubForwarders | undefined;
  if (config.hubProxy) {
    forwarders = await startHubForwarders({ proxy: config.hubProxy, upstreams, log: config.log.child({ node: config.node, actor: "fabric" }) });
    upstreams = forwarders.routes.map((route) => route.via);
  }
  const proxyHint = config.hubProxy ? undefined : proxyEnvironmentHint(process.env);
  if (proxyHint) config.log.child({ node: config.node }).info(proxyHint);
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
      upstreams: forwarders ? leafRemoteUrls(order, forwarders.routes) : order,
      leaf: config.leaf,
      leafAdvertise: config.leafAdvertise,
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
  const revoked = new RevokedNotice();
  // Told before a restart, it is known at once (nats-server says "revoked" once; later logins get a bare refusal).
  rememberRevocation(revoked, { dataDir: config.dataDir, creds: config.security?.files.creds, log: config.log.child({ node: config.node, actor: "trust" }) });
  // A secured site server: which member it refused, and why (nats-server says only "authentication error").
  const siteSecurity = config.siteSecurity;
  const refusedLeafs = siteSecurity
    ? watchRefusedLeafs({
        closedLeaf: async (cid) => (await monitorJson<{ connections?: ClosedLeaf[] }>(`${monitorBase(config.monitor)}/connz?state=closed&auth=true&cid=${cid}`, 2_000))?.connections?.find((closed) => closed.cid === cid),
        resolverDir: siteSecurity.files.resolverDir,
        log: config.log.child({ node: config.node, actor: "trust" }),
      })
    : undefined;
  // Under --upstream-domain SITE the agent's upstreams are that site's servers: a refusal is the site's, not a hub's.
  const site = role === "agent" && config.upstreamDomain && config.upstreamDomain !== "hub" ? config.upstreamDomain : undefined;
  // The controller, the trust watches and the actors: loaded while the server starts (server-process.ts).
  let parts: Promise<typeof import("./agent-parts.ts")> | undefined;
  const loadParts = () => (parts ??= import("./agent-parts.ts"));
  let actors: Promise<ActorFactory[]> | undefined;
  const loadActors = () => (actors ??= typeof config.actors === "function" ? config.actors() : Promise.resolve(config.actors ?? []));
  const node = await startServerProcess({
    name: config.node,
    role,
    signal: config.signal,
    alsoLoad: () => {
      loadParts().catch(() => undefined);
      loadActors().catch(() => undefined);
    },
    client: config.client,
    connectOptions: config.security?.clientConnectOptions ?? config.siteSecurity?.clientConnectOptions,
    log: config.log,
    server: {
      dataDir: config.dataDir,
      monitor: config.monitor,
      loadAccountsAtStart: config.siteSecurity && { storeDir: join(config.dataDir, "jetstream"), accounts: config.siteSecurity.accounts },
      configText: renderConfig(upstreams),
      listenFlags:
        role === "site"
          ? [{ flag: "--listen", address: config.client }, ...(config.leaf ? [{ flag: "--leaf-listen", address: config.leaf }] : []), ...(config.cluster ? [{ flag: "--cluster-listen", address: config.cluster.listen }] : []), { flag: "--monitor-listen", address: config.monitor }]
          : [{ flag: "--nats-listen", address: config.client }, { flag: "--monitor-listen", address: config.monitor }],
      // This node's leaf refused by its upstream (the remote's error received, "Leafnode Error '...'", or its own dial's,
      // "Error trying to connect as leafnode": a clock behind the certificates, another mesh's hub): said in this
      // node's words (revoked, expired, another mesh's), not only nats-server's. Connections refused here are the auditor's.
      explainLine: (line) => {
        refusedLeafs?.note(line);
        const twin = duplicate(line);
        if (twin) return { kind: "duplicate-node", text: twin };
        const staleLinks = stale(line);
        if (staleLinks) {
          leafProblem = { text: staleLinks, at: performance.now() };
          return { kind: "stale-leaf", text: staleLinks };
        }
        if (!/Leafnode Error '|Error trying to connect as leafnode|TLS leafnode handshake error: x509|attempted to connect to wrong port/.test(line)) return undefined;
        const text = explainLeafRefusal(line, { credsFile: config.security?.files.creds, site });
        const cause = classifyServerLogLine(line)?.cause;
        if (cause === "credentials-revoked") revoked.note(`${leafRefuser(line, site)} as revoked`);
        return text ? { kind: cause ?? "refusal", text } : undefined;
      },
    },
  }).catch(async (error: unknown) => {
    await forwarders?.stop();
    throw error;
  });
  if (forwarders) node.onStop(() => forwarders.stop(), "the forwarders through the hub proxy");
  if (refusedLeafs) node.onStop(() => refusedLeafs.stop(), "the refused leafs' explainer");
  try {
    // Shown while it goes on: the explainer says it again at every such link.
    const upstreamProblem = () => (leafProblem && performance.now() - leafProblem.at < 60_000 ? leafProblem.text : undefined) ?? forwarders?.problem() ?? proxyHint;
    const { startAgentParts } = await loadParts();
    const proxied = forwarders && { fabricUpstreams: leafRemoteUrls(upstreams, forwarders.routes), status: () => forwarders.status() };
    return await startAgentParts(config, node, upstreams, renderConfig, upstreamProblem, loadActors, revoked, proxied);
  } catch (error) {
    await node.stop();
    throw error;
  }
}

