/**
 * The fabric as a tree — regions, hubs, sites, agents — drawn from the fabric
 * heartbeats every server's leafmesh process publishes (role, domain, the
 * upstream URL it is attached to, the leafnode address it listens on). Pure:
 * heartbeats in, lines out.
 */
export interface FabricHeartbeat {
  node: string;
  state: string;
  role: "hub" | "site" | "agent";
  region?: string | null;
  domain?: string;
  upstream?: string | null;
  /** The address (ip:port) the leaf is connected to: its upstream's host name resolved. */
  upstreamAddress?: string | null;
  leafListen?: string;
  /** A hub's or site server's addresses (all of the host's when its leaf listens on a wildcard). */
  addresses?: string[];
  relays?: { peer: string; streams?: number }[];
}

function portOf(address: string | null | undefined): string | undefined {
  if (!address) return undefined;
  return /:(\d+)\/?$/.exec(address)?.[1];
}

function hostOf(address: string): string {
  return address.replace(/^[a-z-]+:\/\//, "").replace(/:\d+\/?$/, "");
}

/** Which server's leafnode address a leaf's upstream URL points at. */
function parentOf(child: FabricHeartbeat, servers: FabricHeartbeat[]): FabricHeartbeat | undefined {
  if (!child.upstream) return undefined;
  const port = portOf(child.upstream);
  const host = hostOf(child.upstream);
  const candidates = servers.filter((server) => server.leafListen && portOf(server.leafListen) === port);
  // By the address the leaf is connected to first: agents dial by name (tls://shop-7.lan:7422) and servers listen
  // on 0.0.0.0:7422, and the first wildcard server (a hub) took every agent of a site.
  const address = child.upstreamAddress ? hostOf(child.upstreamAddress).replace(/^\[|\]$/g, "") : undefined;
  const byAddress = address ? candidates.find((server) => server.addresses?.includes(address)) : undefined;
  return byAddress ?? candidates.find((server) => hostOf(server.leafListen!) === host) ?? candidates.find((server) => ["0.0.0.0", "::", "[::]"].includes(hostOf(server.leafListen!))) ?? candidates[0];
}

export function drawFabricTree(heartbeats: FabricHeartbeat[]): string {
  const byName = [...heartbeats].sort((a, b) => a.node.localeCompare(b.node));
  const hubs = byName.filter((beat) => beat.role === "hub");
  const sites = byName.filter((beat) => beat.role === "site");
  const agents = byName.filter((beat) => beat.role === "agent");
  const servers = [...hubs, ...sites];
  const children = new Map<string, FabricHeartbeat[]>();
  const orphans: FabricHeartbeat[] = [];
  for (const leaf of [...sites, ...agents]) {
    const parent = parentOf(leaf, servers);
    if (!parent) orphans.push(leaf);
    else children.set(parent.node, [...(children.get(parent.node) ?? []), leaf]);
  }
  const lines: string[] = [];
  const describe = (beat: FabricHeartbeat) =>
    beat.role === "hub"
      ? `hub ${beat.node}`
      : beat.role === "site"
        ? `site ${beat.domain} server ${beat.node}`
        : `agent ${beat.node}`;
  const walk = (beat: FabricHeartbeat, depth: number) => {
    lines.push(`${"  ".repeat(depth)}${describe(beat)}${beat.state === "ready" ? "" : ` [${beat.state}]`}`);
    for (const relay of beat.relays ?? []) lines.push(`${"  ".repeat(depth + 1)}↔ ${relay.streams ?? 1} relayed stream(s) with ${relay.peer}, through the servers above`);
    for (const child of children.get(beat.node) ?? []) walk(child, depth + 1);
  };
  const regions = [...new Set(hubs.map((hub) => hub.region ?? ""))].sort();
  for (const region of regions) {
    lines.push(region ? `region ${region}` : "cloud");
    for (const hub of hubs.filter((candidate) => (candidate.region ?? "") === region)) walk(hub, 1);
  }
  if (orphans.length > 0) {
    lines.push("not attached to any server seen");
    for (const orphan of orphans) walk(orphan, 1);
  }
  return `${lines.join("\n")}\n`;
}
