/**
 * Host names as routes, listeners and requests use them: a name, "*.suffix"
 * (any name ending in ".suffix", one label or more, as both Istio and the
 * Gateway API read it) or "*" (any). Pure.
 *
 * ```ts
 * hostCovers("*.example.com", "shop.example.com");                 // true
 * intersectHosts(["*.example.com"], ["shop.example.com", "x.org"]);  // ["shop.example.com"]
 * requestHost("Shop.Example.com:8080");                              // "shop.example.com"
 * ```
 */

/** Whether every name `host` stands for is one `pattern` stands for ("*.a.com" covers "b.a.com" and "*.b.a.com"). */
export function hostCovers(pattern: string, host: string): boolean {
  if (pattern === "*") return true;
  if (host === "*") return false;
  if (pattern.startsWith("*.")) return host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1;
  return pattern === host;
}

/**
 * The names a route serves on a listener: its own names that the listener's cover, and the listener's that the
 * route's cover (a listener for "*.example.com" and a route for "*" serve "*.example.com"). Either side empty
 * stands for "*". Sorted, without duplicates.
 */
export function intersectHosts(listenerHosts: readonly string[], routeHosts: readonly string[]): string[] {
  const listener = listenerHosts.length > 0 ? listenerHosts : ["*"];
  const route = routeHosts.length > 0 ? routeHosts : ["*"];
  const result = new Set<string>();
  for (const l of listener) {
    for (const r of route) {
      if (hostCovers(l, r)) result.add(r);
      else if (hostCovers(r, l)) result.add(l);
    }
  }
  return [...result].sort();
}

/** The host a request names (Host header or :authority), lower case, without a port or a trailing dot; "" when none. */
export function requestHost(authority: string | undefined): string {
  if (!authority) return "";
  let host = authority.trim().toLowerCase();
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    return end > 0 ? host.slice(0, end + 1) : host;
  }
  const colon = host.lastIndexOf(":");
  if (colon >= 0) host = host.slice(0, colon);
  return host.endsWith(".") ? host.slice(0, -1) : host;
}

/**
 * One value per host pattern, looked up the way a proxy picks a virtual host: the exact name, else the longest
 * wildcard suffix that covers it, else "*". A request selects one entry and never falls back to a less specific one
 * (Envoy's virtual hosts behave so, and the Gateway API's conformance expects it).
 */
export class HostTable<T> {
  readonly #exact = new Map<string, T>();
  #wildcards: { suffix: string; value: T }[] = [];
  #any: T | undefined;

  get size(): number {
    return this.#exact.size + this.#wildcards.length + (this.#any === undefined ? 0 : 1);
  }

  /** The value for a pattern, made with `create` when it has none yet. */
  entry(pattern: string, create: () => T): T {
    if (pattern === "*") return (this.#any ??= create());
    if (pattern.startsWith("*.")) {
      const suffix = pattern.slice(1);
      const found = this.#wildcards.find((entry) => entry.suffix === suffix);
      if (found) return found.value;
      const value = create();
      this.#wildcards.push({ suffix, value });
      this.#wildcards.sort((a, b) => b.suffix.length - a.suffix.length);
      return value;
    }
    let value = this.#exact.get(pattern);
    if (value === undefined) this.#exact.set(pattern, (value = create()));
    return value;
  }

  /** The value stored for exactly this pattern (no matching). */
  peek(pattern: string): T | undefined {
    if (pattern === "*") return this.#any;
    if (pattern.startsWith("*.")) return this.#wildcards.find((entry) => entry.suffix === pattern.slice(1))?.value;
    return this.#exact.get(pattern);
  }

  lookup(host: string): T | undefined {
    const exact = this.#exact.get(host);
    if (exact !== undefined) return exact;
    for (const { suffix, value } of this.#wildcards) if (host.length > suffix.length && host.endsWith(suffix)) return value;
    return this.#any;
  }

  *patterns(): Iterable<[string, T]> {
    for (const entry of this.#exact) yield entry;
    for (const { suffix, value } of this.#wildcards) yield [`*${suffix}`, value];
    if (this.#any !== undefined) yield ["*", this.#any];
  }
}
