/**
 * The routing decision, pure: (plan, request) → a rule and a backend. An HTTP
 * request picks its host (exact name, else the longest wildcard, else "*"),
 * then the first entry of that host whose match it meets (path, method,
 * headers), then a backend by the rule's weights; a TLS connection picks its
 * entry by server name. Weights are kept exactly by smooth weighted round
 * robin (nginx's): over any 100 requests a 90/10 rule sends 90 and 10, and the
 * two are interleaved, not in runs.
 *
 * ```ts
 * const decision = routeHttp(plan.hosts, { host: "shop.example.com", path: "/api/x", method: "GET", header: (name) => headers[name] });
 * if (decision.kind === "route") backend = weights.pick(decision.entry.rule.backends);
 * ```
 */
import { HostTable, requestHost } from "./hosts.ts";
import type { CompiledMatch, HttpEntry, HttpHost, PlannedBackend, SniEntry } from "./plan.ts";

export interface RequestView {
  /** The Host header or :authority (a port and upper case are fine). */
  host: string | undefined;
  /** The path without the query. */
  path: string;
  method: string;
  /** A header's value (lower-case name); several values joined with ", ". */
  header(name: string): string | undefined;
}

export type HttpDecision =
  | { kind: "route"; entry: HttpEntry }
  /** The host is Istio's httpsRedirect: answer 301 to https. */
  | { kind: "redirect"; host: string }
  /** No host of the port covers the request's: 404. */
  | { kind: "no host"; host: string }
  /** The host is served but no match fits: 404. */
  | { kind: "no route"; host: string };

/** The longest path matched against a regular expression: a longer one is refused a regex match (backtracking is paid per character). */
export const maxRegexInput = 4_096;

function stringMatches(type: "Exact" | "Prefix" | "RegularExpression", expected: string, regex: RegExp | undefined, actual: string): boolean {
  if (type === "Exact") return actual === expected;
  if (type === "Prefix") return actual.startsWith(expected);
  return actual.length <= maxRegexInput && regex !== undefined && regex.test(actual);
}

export function matchesRequest(match: CompiledMatch, request: RequestView): boolean {
  const path = match.path;
  if (path) {
    switch (path.type) {
      case "Exact":
        if (request.path !== path.value) return false;
        break;
      case "Prefix":
        if (!request.path.startsWith(path.value)) return false;
        break;
      case "PathPrefix":
        // By segments: "/api" matches "/api" and "/api/x", not "/apis".
        if (path.value !== "/" && request.path !== path.value && !request.path.startsWith(`${path.value}/`)) return false;
        break;
      case "RegularExpression":
        if (!stringMatches("RegularExpression", path.value, path.regex, request.path)) return false;
        break;
    }
  }
  if (match.method && request.method !== match.method) return false;
  for (const header of match.headers) {
    const value = request.header(header.name);
    if (value === undefined || !stringMatches(header.type, header.value, header.regex, value)) return false;
  }
  return true;
}

export function routeHttp(hosts: HostTable<HttpHost>, request: RequestView): HttpDecision {
  const host = requestHost(request.host);
  const served = hosts.lookup(host);
  if (!served) return { kind: "no host", host };
  if (served.httpsRedirect) return { kind: "redirect", host };
  for (const entry of served.entries) if (matchesRequest(entry.match, request)) return { kind: "route", entry };
  return { kind: "no route", host };
}

/** The entry for a TLS connection's server name ("" without SNI: only a "*" entry takes it). */
export function routeSni(sni: HostTable<SniEntry>, serverName: string | undefined): SniEntry | undefined {
  return sni.lookup((serverName ?? "").toLowerCase());
}

/**
 * Smooth weighted round robin per rule: each pick adds every backend's weight to its current value, takes the
 * highest, and takes the total off it. State lives per backends list (a rule's), so a new plan starts afresh.
 */
export class WeightedChoice {
  readonly #current = new WeakMap<readonly PlannedBackend[], number[]>();

  /** A backend by weight; undefined when none has a weight above 0. `skip` leaves some out (tried already). */
  pick(backends: readonly PlannedBackend[], skip?: ReadonlySet<string>): PlannedBackend | undefined {
    if (backends.length === 1) return backends[0].weight > 0 && !skip?.has(backends[0].key) ? backends[0] : undefined;
    let current = this.#current.get(backends);
    if (!current) this.#current.set(backends, (current = backends.map(() => 0)));
    let best = -1;
    let total = 0;
    for (let i = 0; i < backends.length; i++) {
      const weight = backends[i].weight;
      if (weight <= 0 || skip?.has(backends[i].key)) continue;
      current[i] += weight;
      total += weight;
      if (best < 0 || current[i] > current[best]) best = i;
    }
    if (best < 0) return undefined;
    current[best] -= total;
    return backends[best];
  }
}
