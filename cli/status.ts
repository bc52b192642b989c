/** `leafmesh status`: what one node (agent or hub) knows: catalog, fabric links, actors. */
import { commandSummaries } from "./command-list.ts";
import type { NatsConnection } from "@nats-io/transport-node";
import { RpcError, rpcRequest } from "../bus/bus.ts";
import type { SnapshotPage } from "../bus/catalog-feed.ts";
import { CatalogIndex } from "../bus/catalog-index.ts";
import { isReadyEndpoint, type Service } from "../bus/catalog.ts";
import { checkNodeName } from "../bus/subjects.ts";
import { hubLevelSaidSince, meshProtocol, type ProtocolSkew } from "../bus/protocol.ts";
import { LeafmeshError } from "../lib/errors.ts";
import type { NodeStatus } from "../roles/status.ts";
import { defineCommand } from "./command.ts";
import { option } from "./options.ts";
import { bundleNode, clientSecurityOptions } from "./security-options.ts";
import { drawFabricTree, type FabricHeartbeat } from "./fabric-tree.ts";
import { rpc } from "../bus/rpc.ts";
import { formatWhy } from "./why.ts";
import { formatRelayChoice } from "./relay-choice-view.ts";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { cloudConnections, readTcpTables, type SocketEntry } from "./cloud-connections.ts";
import { connectClient } from "./client-connect.ts";

/** Listens to fabric (and tunnel) heartbeats for `waitMs` and returns the latest of each server. */
export async function gatherFabricHeartbeats(connection: NatsConnection, waitMs: number): Promise<FabricHeartbeat[]> {
  const beats = new Map<string, FabricHeartbeat>();
  const relays = new Map<string, FabricHeartbeat["relays"]>();
  const subscription = connection.subscribe("mesh.*.*.heartbeat", {
    callback: (_error, message) => {
      const [, node, actor] = message.subject.split(".");
      const payload = message.json<{ state: string; detail?: Record<string, unknown> }>();
      if (actor === "fabric" && payload.detail?.role) beats.set(node, { node, state: payload.state, ...(payload.detail as Omit<FabricHeartbeat, "node" | "state">) });
      if (actor === "tunnel" && Array.isArray(payload.detail?.relays)) relays.set(node, payload.detail.relays as FabricHeartbeat["relays"]);
    },
  });
  await new Promise((resolve) => setTimeout(resolve, waitMs));
  subscription.unsubscribe();
  for (const [node, list] of relays) {
    const beat = beats.get(node);
    if (beat) beat.relays = list;
  }
  return [...beats.values()];
}

export interface ServiceRow {
  namespace: string;
  name: string;
  type: string;
  clusterIPs: string[];
  ports: string[];
  endpoints: { address: string; node: string | null; ready: boolean; serving: boolean; terminating: boolean }[];
}

/** Asks the node behind a connection for its status and its whole catalog. */
export async function fetchNodeView(connection: NatsConnection, timeoutMs = 5_000): Promise<{ status: NodeStatus; services: ServiceRow[]; index: CatalogIndex }> {
  const node = connection.info?.server_name;
  if (!node) throw new LeafmeshError("NOT_RUNNING", "the NATS server did not say its name");
  let status: NodeStatus;
  try {
    status = await rpcRequest(connection, node, rpc.status, undefined, timeoutMs);
  } catch (cause) {
    throw new LeafmeshError("NOT_RUNNING", `nats-server '${node}' is up but no leafmesh agent or hub answers for it: is the leafmesh process running?`, { cause });
  }
  const index = new CatalogIndex();
  let after: string | null = "";
  while (after !== null) {
    const page: SnapshotPage = await rpcRequest(connection, node, rpc.catalogSnapshot, { after, limit: 1_000 }, timeoutMs);
    for (const entry of page.objects) index.apply({ op: "put", key: entry.key, object: entry.object });
    after = page.next;
  }
  const services = [...index.services()].sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`)).map((service) => serviceRow(index, service));
  return { status, services, index };
}

function serviceRow(index: CatalogIndex, service: Service): ServiceRow {
  const endpoints = index.slices(service.namespace, service.name).flatMap((slice) =>
    slice.endpoints.flatMap((endpoint) =>
      endpoint.addresses.map((address) => ({
        address,
        node: endpoint.nodeName ?? null,
        ready: isReadyEndpoint(endpoint),
        serving: endpoint.conditions.serving,
        terminating: endpoint.conditions.terminating,
      })),
    ),
  );
  return {
    namespace: service.namespace,
    name: service.name,
    type: service.headless ? "Headless" : service.type,
    clusterIPs: service.type === "ExternalName" ? [service.externalName ?? ""] : service.clusterIPs,
    ports: service.ports.map((port) => `${port.name ? `${port.name}:` : ""}${port.port}/${port.protocol}`),
    endpoints,
  };
}

/** Plain-text table with padded columns. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)));
  return [header, ...rows].map((row) => row.map((cell, column) => (cell ?? "").padEnd(widths[column])).join("  ").trimEnd()).join("\n");
}

/** A connection to the cloud, and whether it is the leaf link (to an upstream's leafnode port). */
export interface CloudConnection extends SocketEntry {
  leaf: boolean;
}

/**
 * The node's connections to its upstreams' hosts, from this namespace's socket table: only
 * meaningful where `status` runs on the node itself (its --nats is a loopback address).
 */
export async function nodeCloudConnections(upstreams: string[]): Promise<CloudConnection[]> {
  const endpoints = await Promise.all(
    upstreams.map(async (url) => {
      const parsed = new URL(url);
      const host = parsed.hostname.replace(/^\[|\]$/g, "");
      const address = isIP(host) ? host : await lookup(host).then((answer) => answer.address, () => host);
      return { address, port: Number(parsed.port || 7422) };
    }),
  );
  const leafEndpoints = new Set(endpoints.map((endpoint) => `${endpoint.address}:${endpoint.port}`));
  return cloudConnections(readTcpTables(), endpoints.map((endpoint) => endpoint.address), endpoints.map((endpoint) => endpoint.port)).map((entry) => ({
    ...entry,
    leaf: leafEndpoints.has(entry.remote.replace(/^\[(.*)\]:/, "$1:")),
  }));
}

function isLoopbackUrl(url: string): boolean {
  try {
    const host = new URL(url).hostname.replace(/^\[|\]$/g, "");
    return host === "localhost" || host.startsWith("127.") || host === "::1";
  } catch {
    return false;
  }
}

export function formatNodeView(view: { status: NodeStatus; services: ServiceRow[]; cloudConnections?: CloudConnection[] }): string {
  const { status, services } = view;
  const parts = [`${status.role} ${status.node} — ${status.catalogObjects} catalog objects, as of ${status.at}`, ""];
  parts.push("FABRIC LINKS");
  parts.push(
    status.links.length === 0
      ? `  (none: not connected to any hub${status.upstreamProblem ? `: ${status.upstreamProblem}` : ""})`
      : table(["KIND", "DIRECTION", "REMOTE", "URL", "RTT"], status.links.map((link) => [link.kind, link.direction, link.remote, link.url ?? "", link.rttMs !== undefined ? `${link.rttMs}ms` : ""])),
  );
  if (view.cloudConnections) {
    const leafs = view.cloudConnections.filter((connection) => connection.leaf).length;
    parts.push("", `CLOUD CONNECTIONS (this host's sockets to its upstreams: ${view.cloudConnections.length}, ${leafs} of them the leaf link)`);
    parts.push(
      view.cloudConnections.length === 0
        ? "  (none: the upstream is cut or not reached yet)"
        : table(["LOCAL", "REMOTE", "STATE", "WHAT"], view.cloudConnections.map((connection) => [connection.local, connection.remote, connection.state, connection.leaf ? "leaf link (control, catalog, relayed streams)" : "other"])),
    );
  }
  if (status.hubProxy) {
    parts.push("", `HUB PROXY ${status.hubProxy.proxy} (the leaf dials each hub through a loopback forwarder, by HTTP CONNECT)`);
    parts.push(table(["HUB", "VIA", "OPEN", "LAST PROBLEM"], status.hubProxy.routes.map((route) => [route.hub, route.via, String(route.open), route.problem ? `${route.problem.at}: ${route.problem.text}` : "-"])));
  }
  if (status.relayChoice) parts.push("", ...formatRelayChoice(status.relayChoice));
  parts.push("", "ACTORS");
  parts.push(table(["ACTOR", "STATE", "SINCE", "SUMMARY"], status.actors.map((actor) => [actor.name, actor.state, actor.since || "-", summarizeActor(actor.name, actor.detail)])));
  const tunnel = status.actors.find((actor) => actor.name === "tunnel")?.detail;
  if (tunnel) {
    const peers = (tunnel.peers ?? []) as { node: string; site: string | null; region: string | null; nat: string; path: string; rttMs: number | null }[];
    parts.push("", `NODES (this node's NAT: ${String(tunnel.nat)})`);
    parts.push(
      peers.length === 0
        ? "  (no other node known yet)"
        : table(["NODE", "SITE", "REGION", "NAT", "PATH", "RTT"], peers.map((peer) => [peer.node, peer.site ?? "-", peer.region ?? "-", peer.nat, peer.path, peer.rttMs !== null ? `${peer.rttMs.toFixed(2)}ms` : "-"])),
    );
    parts.push(...formatVersions((tunnel.versions ?? []) as ProtocolSkew[]));
  }
  // A hub: the hubs and nodes of the mesh on another level (an agent's are its tunnel's, above).
  if (status.versions) parts.push(...formatVersions(status.versions, status.versionsRead));
  parts.push("", "SERVICES");
  parts.push(
    services.length === 0
      ? "  (none)"
      : table(
          ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IPS", "PORTS", "ENDPOINTS"],
          services.map((service) => [
            service.namespace,
            service.name,
            service.type,
            service.clusterIPs.join(",") || "-",
            service.ports.join(",") || "-",
            service.endpoints.map((endpoint) => `${endpoint.address}@${endpoint.node ?? "?"}${endpoint.ready ? "" : endpoint.terminating ? "(terminating)" : "(not ready)"}`).join(" ") || "-",
          ]),
        ),
  );
  return `${parts.join("\n")}\n`;
}

/**
 * Peers and hubs on another leafmesh protocol level (a mesh mid-upgrade, docs/operations.md): who, which level, which
 * side to upgrade, and why; `read`: a hub that read only part of the node records in its time says so.
 */
export function formatVersions(versions: ProtocolSkew[], read?: NodeStatus["versionsRead"]): string[] {
  const partly = !read ? [] : read.problem ? [`  (node records not read: ${read.problem})`] : [`  (read ${read.read} of ${read.of} node records in time: others may be on another level too)`];
  if (versions.length === 0) return partly.length ? ["", `OTHER LEAFMESH VERSIONS (this node: protocol ${meshProtocol})`, ...partly] : [];
  const rows = versions.map((skew) => {
    const hub = skew.role === "hub";
    const level = skew.level > 0 ? String(skew.level) : hub ? `0-${hubLevelSaidSince} (not said)` : "0 (before levels)";
    return [hub ? `${skew.peer} (hub)` : skew.peer, level, skew.upgrade === "peer" ? (hub ? `${skew.peer}, first` : skew.peer) : "this node"];
  });
  return ["", `OTHER LEAFMESH VERSIONS (this node: protocol ${meshProtocol})`, table(["NODE", "PROTOCOL", "UPGRADE"], rows), ...versions.map((skew) => `  ${skew.message}`), ...partly];
}

/** One line per actor for the table; the full detail is in --json. */
function summarizeActor(name: string, detail: Record<string, unknown> | undefined): string {
  if (!detail) return "";
  if (name === "dns") {
    const address = detail.address as { host: string; port: number } | undefined;
    return `${address ? `on ${address.host}:${address.port}, ` : ""}${String(detail.queries ?? 0)} queries`;
  }
  if (name === "traffic") return `${(detail.listeners as unknown[] | undefined)?.length ?? 0} listeners${detail.sharedTcpPort ? ` (TCP on port ${String(detail.sharedTcpPort)}, each on its own 127.128.0.0/9 address)` : ""}, ${String(detail.connections ?? 0)} connections`;
  if (name === "proxier") return `${String(detail.backend)}: ${String(detail.rules ?? 0)} rules, ${String(detail.syncs ?? 0)} syncs`;
  if (name === "tunnel") return `NAT ${String(detail.nat)}, ${Object.keys((detail.paths ?? {}) as object).length} peers${(detail.versions as unknown[] | undefined)?.length ? `, ${(detail.versions as unknown[]).length} on another leafmesh version (see below)` : ""}`;
  if (name === "gateway") {
    const listeners = (detail.listeners ?? []) as { port: number; state: string; error?: string }[];
    const failed = listeners.filter((listener) => listener.state === "failed");
    const refused = (detail.refused ?? []) as unknown[];
    return `${listeners.length - failed.length} listening (${listeners.map((listener) => listener.port).join(",") || "none"}), ${((detail.routes ?? []) as unknown[]).length} routes${refused.length ? `, ${refused.length} refused (see --json)` : ""}${failed.length ? `; failed: ${failed.map((listener) => `${listener.port}: ${listener.error ?? "?"}`).join("; ")}` : ""}`;
  }
  if (name === "relay") return `load record: ${String(detail.channels ?? 0)} relay channels, ${Math.round(Number(detail.bytesPerSecond ?? 0) / 1024)} KiB/s through ${String(detail.leafs ?? 0)} leafs`;
  if (name === "publisher") return `holder ${String(detail.holder ?? "none")}, source ${String(detail.source ?? "none")}`;
  if (name === "trust") {
    const parts = detail.revocationList === undefined ? [] : [`revocation list version ${String(detail.revocationList)}; revoked: ${((detail.revoked ?? []) as string[]).join(", ") || "none"}`];
    if (typeof detail.certificateEnds === "string") parts.push(`certificate ends ${detail.certificateEnds.slice(0, 10)}`);
    if (typeof detail.credentialsEnd === "string") parts.push(`NATS credentials end ${detail.credentialsEnd.slice(0, 10)}`);
    return parts.join("; ");
  }
  return "";
}

export const statusCommand = defineCommand({
  name: "status",
  summary: commandSummaries.status,
  description: `
Connects to the node's NATS server (an agent's --nats-listen, or a hub's
--listen), asks the leafmesh process there for its status, and pages through
its catalog.

With --why PEER: why this node reaches PEER the way it does — both nodes'
NAT behaviour with the evidence it was measured from, every recent attempt
(way, plan, time, outcome), the reason the path in use is the best
available, and what would change it (docs/why.md). From a hub, --from NODE
asks NODE through the fabric.`,
  options: {
    ...clientSecurityOptions,
    nats: option.natsUrl({ default: "nats://127.0.0.1:4222", description: "client URL of the node's NATS server" }),
    json: { type: "boolean", description: "print JSON for scripts instead of tables" },
    why: { type: "string", value: "PEER", description: "explain the path from this node to node PEER instead: NATs with evidence, attempts, the reason, what would change it" },
    from: { type: "string", value: "NODE", description: "with --why, from a hub: explain NODE's path (asked through the fabric) instead of the path of the node behind --nats" },
    tree: { type: "boolean", description: "draw the whole fabric (regions, hubs, sites, agents, relayed streams) from heartbeats, instead of one node" },
    wait: { type: "string", default: "6000", value: "MS", description: "with --tree: how long to gather heartbeats (each server sends one every 5 s)" },
    timeout: option.integer({ default: 5_000, value: "MS", description: "how long to wait for answers" }),
  },
  async run(options, _positionals, io) {
    if (options.why) checkNodeName(options.why, "--why: node name");
    if (options.tree && options.keys && !options.site && (options.node ?? bundleNode(options.keys))) {
      // A node's account carries only its own heartbeats: the tree drew the node alone, "not attached to any server seen".
      throw new LeafmeshError(
        "CONFIG_INVALID",
        "--tree draws the fabric from every server's heartbeats, and a node's credentials see only its own: run it against a hub's client address with the mesh's keys directory or a hub's copy of it (--keys DIR --nats tls://HUB:4222), without --node",
      );
    }
    const connection = await connectClient(options, { command: "status", stderr: io.stderr });
    if (options.tree) {
      try {
        const beats = await gatherFabricHeartbeats(connection, Number(options.wait));
        io.stdout.write(options.json ? `${JSON.stringify(beats, null, 2)}\n` : drawFabricTree(beats));
        return 0;
      } finally {
        await connection.close();
      }
    }
    if (options.why) {
      try {
        const node = options.from ?? connection.info?.server_name;
        if (!node) throw new LeafmeshError("NOT_RUNNING", "the NATS server did not say its name");
        let why;
        try {
          why = await rpcRequest(connection, node, rpc.tunnelWhy, { node: options.why }, options.timeout);
        } catch (cause) {
          if (cause instanceof RpcError) throw new LeafmeshError("NOT_RUNNING", `${node} cannot explain its path to '${options.why}': ${cause.message}`, { cause });
          throw new LeafmeshError("NOT_RUNNING", `no tunnel answers on '${node}' (is it an agent with the tunnel on, i.e. with --keys or --psk?)`, { cause });
        }
        io.stdout.write(options.json ? `${JSON.stringify(why, null, 2)}\n` : formatWhy(why));
        return 0;
      } finally {
        await connection.close();
      }
    }
    try {
      const view = await fetchNodeView(connection, options.timeout);
      // One outbound connection per node: counted where status runs on the node itself.
      // Through a hub proxy, the node's one connection out is to the proxy.
      const upstreams = view.status.hubProxy ? [view.status.hubProxy.proxy] : view.status.upstreams;
      const cloud = upstreams && isLoopbackUrl(options.nats) ? await nodeCloudConnections(upstreams) : undefined;
      io.stdout.write(
        options.json ? `${JSON.stringify({ status: view.status, services: view.services, ...(cloud ? { cloudConnections: cloud } : {}) }, null, 2)}\n` : formatNodeView({ ...view, cloudConnections: cloud }),
      );
      return 0;
    } finally {
      await connection.close();
    }
  },
});
