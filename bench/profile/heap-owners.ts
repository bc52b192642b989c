/**
 * Retained memory by owner in a V8 heap snapshot: the dominator tree of the
 * heap graph (Cooper, Harvey and Kennedy's iterative algorithm over typed
 * arrays; weak edges do not retain), then every object is charged to the
 * nearest dominator that is an owner — an object whose constructor names an
 * actor's or module's root (`CatalogIndex` → controller, `ZoneIndex` → dns, ...).
 * What no single owner keeps alive (shared between actors, Node itself, code)
 * is "not owned by one actor".
 *
 *   node --max-old-space-size=8192 bench/profile/heap-owners.ts FILE.heapsnapshot [--json]
 */
import { readFileSync } from "node:fs";

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]]; edge_fields: string[]; edge_types: [string[], ...unknown[]] }; node_count: number };
  nodes: number[];
  edges: number[];
  strings: string[];
}

export interface OwnerMemory {
  owner: string;
  /** Bytes this owner alone keeps alive (dominated by one of its root objects). */
  retainedBytes: number;
  /** Root objects of this owner found in the heap. */
  roots: number;
}

/**
 * `owners` maps a constructor name to an owner label. Returns the owners, largest first,
 * then "not owned by one actor", and the heap's total self size.
 */
export function retainedByOwner(snapshot: Snapshot, owners: Record<string, string>): { total: number; owners: OwnerMemory[] } {
  const nodeFields = snapshot.snapshot.meta.node_fields;
  const stride = nodeFields.length;
  const typeField = nodeFields.indexOf("type");
  const nameField = nodeFields.indexOf("name");
  const sizeField = nodeFields.indexOf("self_size");
  const edgeCountField = nodeFields.indexOf("edge_count");
  const edgeFields = snapshot.snapshot.meta.edge_fields;
  const edgeStride = edgeFields.length;
  const edgeTypeField = edgeFields.indexOf("type");
  const edgeToField = edgeFields.indexOf("to_node");
  const weakType = snapshot.snapshot.meta.edge_types[0].indexOf("weak");
  // Roots are instances (a class's constructor function carries its name too, as a closure).
  const objectType = snapshot.snapshot.meta.node_types[0].indexOf("object");
  const count = snapshot.nodes.length / stride;

  // Where each node's edges start.
  const firstEdge = new Uint32Array(count + 1);
  for (let node = 0, edge = 0; node < count; node++) {
    firstEdge[node] = edge;
    edge += snapshot.nodes[node * stride + edgeCountField] * edgeStride;
  }
  firstEdge[count] = snapshot.edges.length;
  const retains = (edge: number) => snapshot.edges[edge + edgeTypeField] !== weakType;

  // Postorder from the root (node 0), iteratively.
  const postorder = new Int32Array(count).fill(-1);
  const order = new Uint32Array(count); // postorder number → node
  const visited = new Uint8Array(count);
  const stack = new Uint32Array(count);
  const cursor = new Uint32Array(count);
  let depth = 0;
  let next = 0;
  stack[depth++] = 0;
  visited[0] = 1;
  cursor[0] = firstEdge[0];
  while (depth > 0) {
    const node = stack[depth - 1];
    let pushed = false;
    while (cursor[node] < firstEdge[node + 1]) {
      const edge = cursor[node];
      cursor[node] += edgeStride;
      if (!retains(edge)) continue;
      const to = snapshot.edges[edge + edgeToField] / stride;
      if (visited[to]) continue;
      visited[to] = 1;
      cursor[to] = firstEdge[to];
      stack[depth++] = to;
      pushed = true;
      break;
    }
    if (!pushed) {
      depth--;
      postorder[node] = next;
      order[next++] = node;
    }
  }

  // Predecessors of reachable nodes (CSR by node).
  const predecessorCount = new Uint32Array(count + 1);
  for (let node = 0; node < count; node++) {
    if (!visited[node]) continue;
    for (let edge = firstEdge[node]; edge < firstEdge[node + 1]; edge += edgeStride) if (retains(edge)) predecessorCount[snapshot.edges[edge + edgeToField] / stride]++;
  }
  const predecessorStart = new Uint32Array(count + 1);
  for (let node = 0; node < count; node++) predecessorStart[node + 1] = predecessorStart[node] + predecessorCount[node];
  const predecessors = new Uint32Array(predecessorStart[count]);
  const filled = new Uint32Array(count);
  for (let node = 0; node < count; node++) {
    if (!visited[node]) continue;
    for (let edge = firstEdge[node]; edge < firstEdge[node + 1]; edge += edgeStride) {
      if (!retains(edge)) continue;
      const to = snapshot.edges[edge + edgeToField] / stride;
      predecessors[predecessorStart[to] + filled[to]++] = node;
    }
  }

  // Immediate dominators, as postorder numbers (Cooper, Harvey, Kennedy 2001).
  const rootNumber = postorder[0];
  const idom = new Int32Array(next).fill(-1);
  idom[rootNumber] = rootNumber;
  const intersect = (a: number, b: number) => {
    while (a !== b) {
      while (a < b) a = idom[a];
      while (b < a) b = idom[b];
    }
    return a;
  };
  for (let changed = true; changed; ) {
    changed = false;
    for (let number = rootNumber - 1; number >= 0; number--) {
      const node = order[number];
      let candidate = -1;
      for (let index = predecessorStart[node]; index < predecessorStart[node + 1]; index++) {
        const predecessor = postorder[predecessors[index]];
        if (idom[predecessor] === -1) continue;
        candidate = candidate === -1 ? predecessor : intersect(predecessor, candidate);
      }
      if (candidate !== -1 && idom[number] !== candidate) {
        idom[number] = candidate;
        changed = true;
      }
    }
  }

  // Owners: the nearest dominator that is an owner's root (dominators come first in reverse postorder).
  const labels = [...new Set(Object.values(owners))];
  const ownerOf = new Int16Array(next).fill(-1);
  const retained = new Float64Array(labels.length);
  const roots = new Uint32Array(labels.length);
  let total = 0;
  let unowned = 0;
  for (let number = rootNumber; number >= 0; number--) {
    const node = order[number];
    const offset = node * stride;
    let owner = number === rootNumber ? -1 : ownerOf[idom[number]];
    if (snapshot.nodes[offset + typeField] === objectType) {
      const label = owners[snapshot.strings[snapshot.nodes[offset + nameField]]];
      if (label !== undefined && owner === -1) {
        owner = labels.indexOf(label);
        roots[owner]++;
      }
    }
    ownerOf[number] = owner;
    const size = snapshot.nodes[offset + sizeField];
    total += size;
    if (owner >= 0) retained[owner] += size;
    else unowned += size;
  }
  return {
    total,
    owners: [
      ...labels.map((owner, index) => ({ owner, retainedBytes: retained[index], roots: roots[index] })).sort((a, b) => b.retainedBytes - a.retainedBytes),
      { owner: "not owned by one actor (shared, Node, code)", retainedBytes: unowned, roots: 0 },
    ],
  };
}

/** The agent's owners: each actor's root objects, and the modules every actor shares. */
export const agentOwners: Record<string, string> = {
  CatalogIndex: "controller: catalog index",
  IndexFeed: "controller: catalog index",
  ZoneIndex: "dns: zone index",
  DnsServer: "dns: server",
  Forwarder: "dns: server",
  DnsStats: "dns: server",
  TcpServicePortListener: "traffic: listeners",
  UdpServicePortListener: "traffic: listeners",
  ListenerPublisher: "traffic: plan and book-keeping",
  PlanScope: "traffic: plan and book-keeping",
  CountingIndex: "traffic: plan and book-keeping",
  ListenerPortPicker: "traffic: plan and book-keeping",
  NftablesBackend: "proxier",
  IptablesBackend: "proxier",
  TunnelActor: "tunnel",
  Bus: "bus and NATS client",
  NatsConnectionImpl: "bus and NATS client",
};

if (import.meta.main) {
  const [file, format] = process.argv.slice(2);
  if (!file) {
    console.error("usage: node --max-old-space-size=8192 bench/profile/heap-owners.ts FILE.heapsnapshot");
    process.exit(2);
  }
  const result = retainedByOwner(JSON.parse(readFileSync(file, "utf8")) as Snapshot, agentOwners);
  if (format === "--json") {
    console.log(JSON.stringify(result));
    process.exit(0);
  }
  console.log(`heap (self sizes): ${(result.total / 1048576).toFixed(1)} MiB`);
  for (const owner of result.owners) console.log(`${(owner.retainedBytes / 1048576).toFixed(1).padStart(8)} MiB  ${owner.owner}${owner.roots ? ` (${owner.roots} roots)` : ""}`);
}
