/**
 * The catalog → what this node's gateway serves (plan.ts), as a pure function
 * of (catalog, node). Routes attached to listeners (bind.ts) are checked as
 * whole objects: a route naming a Service the catalog does not hold, a Service
 * port it does not have, a regular expression that does not compile, or a
 * Service with an invalid lb-policy annotation is refused entirely with its
 * reason, never served in part; a listener whose certificate Secret is missing
 * is refused and its host names are not served; the rest is served. Where two
 * listeners or routes claim one port, server name or TCP port, the first (in
 * catalog key order) keeps it and the other is refused.
 *
 * HTTP precedence within a host: Istio's rules in the order written (its first
 * match wins), then the Gateway API's by the API's precedence: an exact path,
 * then a regular expression, then the longest prefix, then a method, then the
 * most header matches, then route and rule order.
 *
 * ```ts
 * const plan = compileGateway(feed.reader, { name: "edge-a", labels: { site: "shop-7" } });
 * ```
 */
import type { BackendRef, HttpRule } from "../../bus/catalog-gateway.ts";
import type { CatalogReader } from "../../bus/catalog.ts";
import { choosePolicy } from "../../balance/endpoints.ts";
import { bindRoutes, type Attachment, type ListenerSpec } from "./bind.ts";
import { HostTable } from "./hosts.ts";
import type { CompiledMatch, GatewayNode, GatewayPlan, HttpEntry, HttpHost, PlannedBackend, PlannedHttpRule, PlannedL4Route, PortPlan, Refusal, RefusalReason, RouteSummary, SniEntry } from "./plan.ts";

type Problem = { reason: RefusalReason; error: string };

/** A Service port of the catalog as a rule's backend, or why it is none. */
export function resolveBackend(catalog: CatalogReader, ref: BackendRef): PlannedBackend | Problem {
  const service = catalog.service(ref.namespace, ref.service);
  if (!service) return { reason: "unknown service", error: `Service ${ref.namespace}/${ref.service} is not in the catalog` };
  const tcpPorts = service.ports.filter((port) => port.protocol === "TCP");
  const port = ref.port === undefined ? (tcpPorts.length === 1 ? tcpPorts[0] : undefined) : tcpPorts.find((candidate) => candidate.port === ref.port);
  if (!port) {
    return {
      reason: "unknown port",
      error: ref.port === undefined ? `Service ${ref.namespace}/${ref.service} has ${tcpPorts.length} TCP ports: the route must name one` : `Service ${ref.namespace}/${ref.service} has no TCP port ${ref.port}`,
    };
  }
  try {
    choosePolicy(service, catalog.destinationRule(service.namespace, service.name));
  } catch (error) {
    return { reason: "invalid lb-policy annotation", error: (error as Error).message };
  }
  return { ...ref, port: port.port, key: `${ref.namespace}/${ref.service}:${port.port}` };
}

/** A whole-string regular expression (Envoy's RE2 matches are whole-string too), or the reason it does not compile. */
export function compileRegex(source: string): RegExp | Problem {
  try {
    return new RegExp(`^(?:${source})$`);
  } catch (error) {
    return { reason: "bad regex", error: `'${source}' is not a regular expression: ${(error as Error).message}` };
  }
}

function compileMatches(rule: HttpRule, problems: Problem[]): CompiledMatch[] {
  const matches = rule.matches.length > 0 ? rule.matches : [{ headers: [] }];
  return matches.map((match) => {
    let path: CompiledMatch["path"];
    if (match.path) {
      let regex: RegExp | undefined;
      if (match.path.type === "RegularExpression") {
        const compiled = compileRegex(match.path.value);
        if (compiled instanceof RegExp) regex = compiled;
        else problems.push(compiled);
      }
      // The Gateway API's PathPrefix "/api/" is "/api" by segments.
      const value = match.path.type === "PathPrefix" && match.path.value.length > 1 ? match.path.value.replace(/\/+$/, "") : match.path.value;
      path = { type: match.path.type, value, ...(regex ? { regex } : {}) };
    }
    const headers = match.headers.map((header) => {
      if (header.type !== "RegularExpression") return { ...header };
      const compiled = compileRegex(header.value);
      if (compiled instanceof RegExp) return { ...header, regex: compiled };
      problems.push(compiled);
      return { ...header };
    });
    return { ...(path ? { path } : {}), headers, ...(match.method ? { method: match.method } : {}) };
  });
}

/** Sort key of a Gateway API match (lower first): exact, regex, longest prefix, method, most headers. */
function gatewayApiPrecedence(match: CompiledMatch): number[] {
  const type = match.path?.type;
  const rank = type === "Exact" ? 0 : type === "RegularExpression" ? 1 : 2;
  return [rank, -(match.path?.value.length ?? 0), match.method ? 0 : 1, -match.headers.length];
}

function compareKeys(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
  return 0;
}

export function compileGateway(catalog: CatalogReader, node: GatewayNode): GatewayPlan {
  const bound = bindRoutes(catalog, node);
  const refused: Refusal[] = [...bound.refused];
  const refuse = (object: string, key: string, problem: Problem) => {
    if (!refused.some((entry) => entry.key === key && entry.object === object && entry.error === problem.error)) refused.push({ object, key, ...problem });
  };

  // Whole route objects: any problem in any of their attachments refuses them all.
  const problemsByRoute = new Map<string, Problem[]>();
  const compiledRules = new Map<Attachment, { rule: PlannedHttpRule; matches: CompiledMatch[] }[]>();
  const compiledL4 = new Map<Attachment, PlannedL4Route>();
  const backendsOf = (refs: BackendRef[], problems: Problem[]) =>
    refs.flatMap((ref) => {
      const resolved = resolveBackend(catalog, ref);
      if ("reason" in resolved) {
        problems.push(resolved);
        return [];
      }
      return [resolved];
    });
  for (const attachment of bound.attachments) {
    const problems = problemsByRoute.get(attachment.route.key) ?? [];
    problemsByRoute.set(attachment.route.key, problems);
    if (attachment.body.kind === "http") {
      compiledRules.set(
        attachment,
        attachment.body.rules.map((rule, ruleIndex) => ({
          rule: { route: attachment.route, ruleIndex, backends: backendsOf(rule.backends, problems), ...(rule.timeoutMs ? { timeoutMs: rule.timeoutMs } : {}), ...(rule.retry ? { retry: rule.retry } : {}) },
          matches: compileMatches(rule, problems),
        })),
      );
    } else {
      compiledL4.set(attachment, { route: attachment.route, backends: backendsOf(attachment.body.backends, problems) });
    }
  }
  for (const attachment of bound.attachments) for (const problem of problemsByRoute.get(attachment.route.key) ?? []) refuse(attachment.route.name, attachment.route.key, problem);
  const acceptable = bound.attachments.filter((attachment) => (problemsByRoute.get(attachment.route.key) ?? []).length === 0);

  // Listeners: one kind of port each; terminated TLS needs its Secret.
  const usable: ListenerSpec[] = [];
  const fronts = new Map<number, ListenerSpec>();
  const certificates = new Map<ListenerSpec, { key: string; cert: string; secret: string }>();
  for (const listener of bound.listeners) {
    const first = fronts.get(listener.port);
    if (first && first.mode.front !== listener.mode.front) {
      refuse(listener.name, listener.gateway.key, { reason: "port conflict", error: `port ${listener.port} is a ${first.mode.front.toUpperCase()} port of ${first.name}` });
      continue;
    }
    fronts.set(listener.port, first ?? listener);
    if (listener.secret) {
      const secret = catalog.get(`tls.${listener.secret.namespace}.${listener.secret.name}`);
      if (secret?.kind !== "TLSSecret") {
        refuse(listener.name, listener.gateway.key, { reason: "missing secret", error: `Secret ${listener.secret.namespace}/${listener.secret.name} (type kubernetes.io/tls) is not in the catalog: ${listener.hosts.join(", ")} not served` });
        continue;
      }
      certificates.set(listener, { key: secret.privateKey, cert: secret.certificate, secret: `${secret.namespace}/${secret.name}` });
    }
    usable.push(listener);
  }

  const ports = new Map<number, PortPlan>();
  const routes: RouteSummary[] = [];
  const summarize = (attachment: Attachment, kind: RouteSummary["kind"], hosts: string[]) => {
    const existing = routes.find((entry) => entry.route === attachment.route.name && entry.port === attachment.listener.port && entry.kind === kind);
    if (existing) existing.hosts = [...new Set([...existing.hosts, ...hosts])].sort();
    else routes.push({ route: attachment.route.name, port: attachment.listener.port, kind, hosts });
  };
  const httpHosts = (listener: ListenerSpec, table: HostTable<HttpHost>, kind: RouteSummary["kind"]) => {
    if (listener.httpsRedirect) for (const host of listener.hosts) table.entry(host, () => ({ entries: [], httpsRedirect: false })).httpsRedirect = true;
    for (const attachment of acceptable) {
      if (attachment.listener !== listener || attachment.body.kind !== "http") continue;
      const entries: HttpEntry[] = (compiledRules.get(attachment) ?? []).flatMap(({ rule, matches }) => matches.map((match) => ({ match, rule })));
      for (const host of attachment.hosts) table.entry(host, () => ({ entries: [], httpsRedirect: false })).entries.push(...entries);
      summarize(attachment, kind, attachment.hosts);
    }
  };
  const l4Route = (listener: ListenerSpec, kind: RouteSummary["kind"]): PlannedL4Route | undefined => {
    let chosen: PlannedL4Route | undefined;
    for (const attachment of acceptable) {
      if (attachment.listener !== listener || attachment.body.kind !== "l4") continue;
      if (chosen) {
        refuse(attachment.route.name, attachment.route.key, { reason: "port conflict", error: `${listener.name} (port ${listener.port}) routes to ${chosen.route.name} already` });
        continue;
      }
      chosen = compiledL4.get(attachment);
      summarize(attachment, kind, attachment.hosts);
    }
    return chosen;
  };

  for (const listener of usable) {
    const port = listener.port;
    const mode = listener.mode;
    if (mode.front === "tcp") {
      const existing = ports.get(port);
      if (existing) {
        // Only the first TCP listener of a port routes; a second one's routes are refused there.
        for (const attachment of acceptable) if (attachment.listener === listener) refuse(attachment.route.name, attachment.route.key, { reason: "port conflict", error: `TCP port ${port} routes to ${existing.kind === "tcp" ? existing.route.route.name : "another route"} already` });
        continue;
      }
      const route = l4Route(listener, "tcp");
      if (route) ports.set(port, { kind: "tcp", port, route });
    } else if (mode.front === "http") {
      let plan = ports.get(port);
      if (!plan) ports.set(port, (plan = { kind: "http", port, hosts: new HostTable<HttpHost>() }));
      if (plan.kind === "http") httpHosts(listener, plan.hosts, "http");
    } else {
      let plan = ports.get(port);
      if (!plan) ports.set(port, (plan = { kind: "tls", port, sni: new HostTable<SniEntry>() }));
      if (plan.kind !== "tls") continue;
      const sni = plan.sni;
      if (mode.passthrough) {
        for (const attachment of acceptable) {
          if (attachment.listener !== listener || attachment.body.kind !== "l4") continue;
          const route = compiledL4.get(attachment)!;
          const taken = attachment.hosts.filter((host) => sni.peek(host) !== undefined);
          for (const host of taken) refuse(attachment.route.name, attachment.route.key, { reason: "host conflict", error: `server name ${host} on port ${port} is served by another route already` });
          const free = attachment.hosts.filter((host) => sni.peek(host) === undefined);
          for (const host of free) sni.entry(host, () => ({ mode: "passthrough", route }));
          if (free.length > 0) summarize(attachment, "tls-passthrough", free);
        }
      } else {
        const taken = listener.hosts.filter((host) => sni.peek(host) !== undefined);
        if (taken.length > 0) {
          refuse(listener.name, listener.gateway.key, { reason: "host conflict", error: `server name ${taken.join(", ")} on port ${port} is served by another listener already` });
          continue;
        }
        const certificate = certificates.get(listener)!;
        let entry: SniEntry | undefined;
        if (mode.inner === "http") {
          const hosts = new HostTable<HttpHost>();
          httpHosts(listener, hosts, "tls-terminate");
          entry = { mode: "terminate", certificate, inner: { kind: "http", hosts } };
        } else {
          const route = l4Route(listener, "tls-terminate");
          if (route) entry = { mode: "terminate", certificate, inner: { kind: "tcp", route } };
        }
        if (entry) for (const host of listener.hosts) sni.entry(host, () => entry);
      }
    }
  }

  // Within each host: Istio's rules as written, then the Gateway API's by precedence.
  const sortHosts = (table: HostTable<HttpHost>) => {
    for (const [, host] of table.patterns()) {
      const keyed = host.entries.map((entry, index) => ({ entry, key: entry.rule.route.key.startsWith("vs.") ? [0, index] : [1, ...gatewayApiPrecedence(entry.match), index] }));
      keyed.sort((a, b) => compareKeys(a.key, b.key));
      host.entries = keyed.map(({ entry }) => entry);
    }
  };
  for (const plan of ports.values()) {
    if (plan.kind === "http") sortHosts(plan.hosts);
    else if (plan.kind === "tls") for (const [, entry] of plan.sni.patterns()) if (entry.mode === "terminate" && entry.inner.kind === "http") sortHosts(entry.inner.hosts);
  }
  // A port with nothing to route is not opened.
  for (const [port, plan] of ports) if ((plan.kind === "http" && plan.hosts.size === 0) || (plan.kind === "tls" && plan.sni.size === 0)) ports.delete(port);
  routes.sort((a, b) => a.port - b.port || a.route.localeCompare(b.route));
  return { ports, routes, refused, gateways: bound.gateways };
}
