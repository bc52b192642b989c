/**
 * The agent's parts once its nats-server is up: the controller and its catalog
 * mirror, the fabric links and the store's watchdog, metrics, the trust watches,
 * the actors, relay choice and status. Loaded while the server starts
 * (roles/agent.ts), so that the server is spawned before these modules load.
 */
import { dirname } from "node:path";
import { readFileSync } from "node:fs";
import { linkActorToBus, stateName, type ActorLink } from "../bus/actor-link.ts";
import { buckets, hubDomain } from "../bus/subjects.ts";
import type { ServerProcess } from "./server-process.ts";
import { startController } from "../services/controller/agent-controller.ts";
import { ReleaseAfterChurn } from "../lib/release-memory.ts";
import { watchUpstream } from "./upstream-state.ts";
import { hostAddresses } from "./host-addresses.ts";
import { buildStatus, type NodeStatus } from "./status.ts";
import { rejoinAdvice, watchPermissionErrors } from "../trust/denials.ts";
import { followRevocations, type RevocationWatch } from "../trust/revocations.ts";
import { certificateFingerprint } from "../trust/revocation-list.ts";
import { endsDetail, endsState, loadedEnds, type Ending } from "../trust/ends.ts";
import { RelayChoice } from "./relay-choice.ts";
import { watchStore } from "../nats/store-watchdog.ts";
import type { ActorFactory, AgentConfig, AgentRuntime, StartedActor } from "./agent.ts";
import type { UpstreamState } from "../bus/partition.ts";
import type { RevokedNotice } from "../trust/revoked-notice.ts";
import type { HubProxyStatus } from "../bus/status.ts";

export async function startAgentParts(
  config: AgentConfig,
  node: ServerProcess,
  upstreams: string[],
  renderConfig: (order: string[]) => string,
  upstreamProblem: () => string | undefined,
  loadActors: () => Promise<ActorFactory[]>,
  notice: RevokedNotice,
  /** Through --hub-proxy: the leaf remote also lists the hubs' own URLs (roles/hub-proxy-routes.ts), and status shows the proxy. */
  proxied?: { fabricUpstreams: string[]; status: () => HubProxyStatus },
): Promise<AgentRuntime> {
  const { log, connection, bus, server } = node;
  const role = config.role ?? "agent";
  // A refused publish is silent at the client: log it, explained (which subject, whose it is).
  if (config.security) watchPermissionErrors(connection, log.child({ actor: "trust" }), config.node);

  // The controller subscribes to link events before the monitor publishes the first one.
  const controller = await startController({ bus, log: log.child({ actor: "controller" }), upstreamDomain: config.upstreamDomain ?? hubDomain, replicas: config.replicas ?? (config.cluster ? 3 : 1), domain: config.domain ?? config.node, signal: config.signal, lineageCheckMs: config.mirrorCheckMs });
  node.onStop(() => controller.stop(), "the controller");
  // A Ctrl-C while the parts start (the last second of a start) ends it at the next part: startAgent stops those started.
  node.throwIfStopAsked();
  // A large catalog change (a fresh node's first load above all) leaves garbage V8 keeps resident: one full collection once it settles (lib/release-memory.ts).
  const release = new ReleaseAfterChurn({ log: log.child({ actor: "controller" }) });
  const stopCounting = controller.feed.onChange((keys) => release.note(keys.length));
  node.onStop(() => {
    stopCounting();
    release.stop();
  }, "the memory release after catalog changes");
  const fabric = node.watchFabric({ upstreams: proxied?.fabricUpstreams ?? upstreams });
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
  node.throwIfStopAsked();

  // The revoked certificates this node's peers must not present (mirrored, so they hold offline too).
  const caFile = config.security?.files.ca ?? config.siteSecurity?.files.ca;
  let revocations: RevocationWatch | undefined;
  let selfRevoked = false;
  /** When this node's certificate (and its credentials, issued with --expires) end: shown in status. */
  let ownEnds: Ending[] = [];
  if (caFile) {
    const watch = await followRevocations({ bus, caCertPem: readFileSync(caFile, "utf8"), upstreamDomain: config.upstreamDomain ?? hubDomain, log: log.child({ actor: "trust" }), replicas: config.replicas ?? (config.cluster ? 3 : 1), signal: config.signal, lineageCheckMs: config.mirrorCheckMs });
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
      if (revoked) notice.note(`this node's own certificate is on the mesh's revocation list (version ${watch.list.version})`);
    };
    checkSelf();
    const stopSelfCheck = watch.onChange(checkSelf);
    node.onStop(() => void stopSelfCheck(), "the own-certificate check");
  }

  const started: StartedActor[] = [];
  let upstreamState: UpstreamState | undefined;
  const factories = await loadActors();
  node.throwIfStopAsked();
  if (factories.length > 0) {
    // The controller's own index: the actors of this process share it (other processes follow the bus).
    const feed = controller.feed;
    // The controller's view, in-process and at once (and under a site, whether the site reaches the cloud): the actors apply each service's partition policy with it.
    const watch = watchUpstream({ controller, connection, upstreamDomain: config.upstreamDomain ?? hubDomain, log: log.child({ actor: "controller" }) });
    const upstream = watch.state;
    upstreamState = upstream;
    node.onStop(() => watch.stop(), "the upstream watch");
    for (const factory of factories) {
      node.throwIfStopAsked();
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
      ...(proxied ? { hubProxy: proxied.status() } : {}),
    });
  node.throwIfStopAsked();
  node.serveStatus(status);
  log.info(`${role} ready`);

  return { connection, bus, server, controller, fabric, metrics: node.metrics, revocations, upstream: upstreamState, revoked: notice, status, stop: () => node.stop() };
}

function stateOf(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}
