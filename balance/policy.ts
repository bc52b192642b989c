/**
 * Load-balancing policies: pure functions of (candidate endpoints, client, load),
 * no sockets. The proxy asks a `Picker` for an endpoint per new connection or UDP
 * flow and tells it nothing else: loads come from the `load` callback, time from
 * the injected clock.
 *
 * ```ts
 * const picker = createPicker({ policy: "consistent-hash" });
 * const target = picker.pick(endpoints, { clientIp: "198.18.1.7", load: (key) => active.get(key) ?? 0 });
 * const sticky = withSessionAffinity(picker, { timeoutMs: 10_800_000, clock });
 * ```
 */
import type { Clock } from "../lib/clock.ts";

export const lbPolicies = ["round-robin", "random", "least-connections", "consistent-hash"] as const;
export type LbPolicy = (typeof lbPolicies)[number];

/** One endpoint address:port of a service port. `key` is "host:port", unique per service port. */
export interface EndpointTarget {
  key: string;
  host: string;
  port: number;
  /** The node that runs it; undefined when the catalog does not say. */
  nodeName?: string;
}

export interface PickContext {
  clientIp: string;
  /** Active connections/flows per endpoint key. */
  load: (key: string) => number;
  /** Endpoints not to choose (failed a connect just now, ejected). */
  exclude?: ReadonlySet<string>;
}

export interface Picker {
  readonly policy: LbPolicy;
  pick(candidates: readonly EndpointTarget[], context: PickContext): EndpointTarget | undefined;
}

export interface PickerOptions {
  policy: LbPolicy;
  /** @default Math.random — handed in so tests can be exact. */
  random?: () => number;
  /** @default 1.25 — the bounded-loads factor c of Mirrokni et al.: no endpoint takes more than c × the mean load (Envoy and HAProxy use 1.25 too). */
  hashLoadFactor?: number;
  /** @default 100 — virtual nodes per endpoint on the ring; 100 keeps the spread within a few percent for small sets. */
  hashReplicas?: number;
}

const allowed = (candidates: readonly EndpointTarget[], exclude?: ReadonlySet<string>) =>
  exclude && exclude.size > 0 ? candidates.filter((candidate) => !exclude.has(candidate.key)) : candidates;

export function createPicker(options: PickerOptions): Picker {
  switch (options.policy) {
    case "round-robin":
      return new RoundRobinPicker();
    case "random":
      return new RandomPicker(options.random ?? Math.random);
    case "least-connections":
      return new LeastConnectionsPicker();
    case "consistent-hash":
      return new ConsistentHashPicker(options.hashLoadFactor ?? 1.25, options.hashReplicas ?? 100);
  }
}

export class RoundRobinPicker implements Picker {
  readonly policy = "round-robin" as const;
  #next = 0;

  pick(candidates: readonly EndpointTarget[], context: PickContext): EndpointTarget | undefined {
    const choices = allowed(candidates, context.exclude);
    if (choices.length === 0) return undefined;
    const chosen = choices[this.#next % choices.length];
    this.#next = (this.#next + 1) % 1_000_000_007;
    return chosen;
  }
}

export class RandomPicker implements Picker {
  readonly policy = "random" as const;
  readonly #random: () => number;

  constructor(random: () => number) {
    this.#random = random;
  }

  pick(candidates: readonly EndpointTarget[], context: PickContext): EndpointTarget | undefined {
    const choices = allowed(candidates, context.exclude);
    if (choices.length === 0) return undefined;
    return choices[Math.min(choices.length - 1, Math.floor(this.#random() * choices.length))];
  }
}

/** The fewest active connections; ties go round robin so equal endpoints share evenly. */
export class LeastConnectionsPicker implements Picker {
  readonly policy = "least-connections" as const;
  #tieBreak = 0;

  pick(candidates: readonly EndpointTarget[], context: PickContext): EndpointTarget | undefined {
    const choices = allowed(candidates, context.exclude);
    if (choices.length === 0) return undefined;
    let best = Infinity;
    const tied: EndpointTarget[] = [];
    for (const choice of choices) {
      const load = context.load(choice.key);
      if (load < best) {
        best = load;
        tied.length = 0;
      }
      if (load === best) tied.push(choice);
    }
    const chosen = tied[this.#tieBreak % tied.length];
    this.#tieBreak = (this.#tieBreak + 1) % 1_000_000_007;
    return chosen;
  }
}

/** FNV-1a, 32 bit: fast, stable across processes and versions (the ring must not move on restart). */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  // A final avalanche (murmur3 fmix32): FNV alone clusters keys that differ in the last byte.
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b) >>> 0;
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35) >>> 0;
  hash ^= hash >>> 16;
  return hash >>> 0;
}

/**
 * Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2016), as
 * EdgeMesh offers it: a client IP maps to a point on a ring of endpoint replicas;
 * walking clockwise, the first endpoint whose load stays under
 * ceil(c × (total + 1) / n) takes it. The same client lands on the same endpoint
 * while loads are even, and no endpoint is overloaded by a hot client range.
 */
export class ConsistentHashPicker implements Picker {
  readonly policy = "consistent-hash" as const;
  readonly #loadFactor: number;
  readonly #replicas: number;
  #ringFor = "";
  #ring: { point: number; target: EndpointTarget }[] = [];

  constructor(loadFactor: number, replicas: number) {
    this.#loadFactor = loadFactor;
    this.#replicas = replicas;
  }

  pick(candidates: readonly EndpointTarget[], context: PickContext): EndpointTarget | undefined {
    const choices = allowed(candidates, context.exclude);
    if (choices.length === 0) return undefined;
    const ring = this.#ringOf(candidates);
    let total = 0;
    for (const choice of choices) total += context.load(choice.key);
    const bound = Math.ceil((this.#loadFactor * (total + 1)) / choices.length);
    const point = fnv1a(context.clientIp);
    const start = lowerBound(ring, point);
    for (let step = 0; step < ring.length; step++) {
      const entry = ring[(start + step) % ring.length];
      if (context.exclude?.has(entry.target.key)) continue;
      if (context.load(entry.target.key) < bound) return entry.target;
    }
    return choices[0];
  }

  /** The ring over all candidates (excluded ones are skipped while walking, so the ring is not rebuilt per failure). */
  #ringOf(candidates: readonly EndpointTarget[]) {
    const id = candidates.map((candidate) => candidate.key).join(",");
    if (id !== this.#ringFor) {
      const ring: { point: number; target: EndpointTarget }[] = [];
      for (const target of candidates) for (let replica = 0; replica < this.#replicas; replica++) ring.push({ point: fnv1a(`${target.key}#${replica}`), target });
      ring.sort((a, b) => a.point - b.point);
      this.#ring = ring;
      this.#ringFor = id;
    }
    return this.#ring;
  }
}

function lowerBound(ring: readonly { point: number }[], point: number): number {
  let low = 0;
  let high = ring.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (ring[middle].point < point) low = middle + 1;
    else high = middle;
  }
  return low === ring.length ? 0 : low;
}

export interface AffinityOptions {
  /** Service.sessionAffinityConfig.clientIP.timeoutSeconds × 1000 (Kubernetes default 10800 s). */
  timeoutMs: number;
  clock: Clock;
  /** @default 65_536 — clients remembered; the oldest is forgotten first, so memory stays bounded under a scan. */
  maxClients?: number;
}

/**
 * sessionAffinity: ClientIP. A client IP keeps its endpoint while it comes back
 * within the timeout of its last new connection (as kube-proxy's `recent` match
 * does), the endpoint is still a candidate and not excluded; otherwise the inner
 * policy picks again and the client is remembered there.
 */
export function withSessionAffinity(inner: Picker, options: AffinityOptions): Picker & { readonly remembered: number } {
  const maxClients = options.maxClients ?? 65_536;
  // Map keeps insertion order: delete + set moves a client to the end, so the first key is the least recently used.
  const clients = new Map<string, { key: string; lastUsed: number }>();
  return {
    policy: inner.policy,
    get remembered() {
      return clients.size;
    },
    pick(candidates, context) {
      const now = options.clock.monotonic();
      const known = clients.get(context.clientIp);
      if (known && now - known.lastUsed <= options.timeoutMs && !context.exclude?.has(known.key)) {
        const target = candidates.find((candidate) => candidate.key === known.key);
        if (target) {
          clients.delete(context.clientIp);
          clients.set(context.clientIp, { key: target.key, lastUsed: now });
          return target;
        }
      }
      const chosen = inner.pick(candidates, context);
      clients.delete(context.clientIp);
      if (chosen) {
        clients.set(context.clientIp, { key: chosen.key, lastUsed: now });
        while (clients.size > maxClients) clients.delete(clients.keys().next().value as string);
      }
      return chosen;
    },
  };
}

/** Where a node is and whether this node has a path to it (from the tunnel). */
export interface NodeTopology {
  /** This node's site, if it belongs to one. */
  site?: string;
  /** Another node's site and whether a path to it exists (false: its path is unreachable). */
  of(node: string): { site?: string; reachable: boolean };
}

/**
 * Topology preference: endpoints on this node first, then (with the tunnel's
 * topology) those on nodes of the same site, then the other nodes it has a path
 * to, and only last nodes it has no path to — so it never sends to an
 * unreachable node while another endpoint has a path. Returns the tiers in
 * order; the proxy asks the picker tier by tier.
 */
export function topologyTiers(endpoints: readonly EndpointTarget[], node: string, topology?: NodeTopology): EndpointTarget[][] {
  if (!topology) {
    const local = endpoints.filter((endpoint) => endpoint.nodeName === node);
    if (local.length === 0 || local.length === endpoints.length) return [endpoints.slice()];
    return [local, endpoints.filter((endpoint) => endpoint.nodeName !== node)];
  }
  const tiers: EndpointTarget[][] = [[], [], [], []];
  for (const endpoint of endpoints) {
    // No nodeName (an address outside the mesh): dialled directly, as good as the site.
    if (endpoint.nodeName === node) tiers[0].push(endpoint);
    else if (!endpoint.nodeName) tiers[1].push(endpoint);
    else {
      const where = topology.of(endpoint.nodeName);
      if (!where.reachable) tiers[3].push(endpoint);
      else if (topology.site && where.site === topology.site) tiers[1].push(endpoint);
      else tiers[2].push(endpoint);
    }
  }
  return tiers.filter((tier) => tier.length > 0);
}
