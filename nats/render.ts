/**
 * Renders nats-server configuration files for leafmesh's three server roles.
 * Pure: a plain object in, the config text out; nothing here touches disk.
 *
 * - hub: the cloud. JetStream domain `hub`, a client port, a leafnode port,
 *   optionally cluster routes (three hubs = one JetStream cluster) and gateways
 *   (regions).
 * - leaf: an agent's embedded server (domain = node name) or a site server
 *   (domain = site name, optionally clustered and itself accepting leafs). One
 *   remote listing every upstream URL: docs/nats-facts.md found that two remotes into one
 *   account loop, while one remote with several URLs fails over by itself.
 *
 * ```ts
 * const text = renderHubConfig({ serverName: "hub-1", storeDir, client: { host: "0.0.0.0", port: 4222 }, ... });
 * ```
 */
import { LeafmeshError } from "../lib/errors.ts";
import { hubDomain } from "../bus/subjects.ts";

export interface HostPort {
  host: string;
  port: number;
}

/** What a route or gateway connection presents, and what the listener asks of one (trust/route-credentials.ts). */
export interface RouteCredentials {
  user: string;
  password: string;
}

export interface ClusterOptions {
  /** Every server of one cluster uses the same name. */
  name: string;
  /** Config text spliced inside `cluster {}` (TLS with client certificates for routes: see trust/). */
  security?: string;
  /** Routes must present these (and this server's routes present them): trust/route-credentials.ts. */
  credentials?: RouteCredentials;
  listen: HostPort;
  /** nats-route://host:port of the other members (own URL may be included: the server skips it). */
  routes: string[];
}

export interface GatewayOptions {
  /** This region's gateway name (one per cluster). */
  name: string;
  /** Config text spliced inside `gateway {}` (TLS: see trust/). */
  security?: string;
  /** Gateways must present these (and this server's gateways present them): trust/route-credentials.ts. */
  credentials?: RouteCredentials;
  listen: HostPort;
  /** The other regions. */
  gateways: { name: string; urls: string[] }[];
}

export interface CommonServerOptions {
  serverName: string;
  storeDir: string;
  client: HostPort;
  /** The HTTP monitoring port (/healthz, /leafz, /routez): the supervisor's readiness and link checks use it. */
  monitor: HostPort;
  /**
   * @default "5s" — docs/nats-facts.md: the 2-minute default noticed a silent cut only after
   * minutes; 5 s noticed it in about 13 s.
   */
  pingInterval?: string;
  /** @default 1 GiB — memory and file storage caps for JetStream. */
  maxMemoryStore?: number;
  maxFileStore?: number;
  /** Config text spliced in as is (auth, TLS: see trust/). */
  security?: string;
  debug?: boolean;
}

export interface HubServerOptions extends CommonServerOptions {
  leaf: HostPort;
  /**
   * The leafnode address the hub names in the INFO its leafs get (nats-server's `leafnodes { advertise }`), instead of
   * its own listen address: nats-server 2.9.10 always sends that one, and a leaf dials it before the URLs it was given
   * (after a cut, past a proxy or a chosen address). Undefined: the listen address (a wildcard's resolved address).
   */
  leafAdvertise?: HostPort;
  /** Config text spliced inside `leafnodes {}` (TLS for leaf connections: see trust/). */
  leafSecurity?: string;
  cluster?: ClusterOptions;
  gateway?: GatewayOptions;
}

export interface LeafServerOptions extends CommonServerOptions {
  /** JetStream domain: the node name for an agent, the site name for a site server. */
  domain: string;
  /** nats-leaf URLs of every upstream server (hubs, or a site's servers). */
  upstreams: string[];
  /** A site server also accepts its agents' leaf connections. */
  leaf?: HostPort;
  /** A site server's leafnode address named to its agents instead of its own (as a hub's: HubServerOptions.leafAdvertise). */
  leafAdvertise?: HostPort;
  cluster?: ClusterOptions;
  /** Extra settings for the remote (credentials, tls), spliced inside it. */
  remoteSecurity?: string;
  /** Config text spliced inside `leafnodes {}` of a site server (TLS for its agents' leaf connections: see trust/). */
  leafSecurity?: string;
  /**
   * A secured site server binds each of its local accounts that must reach the hubs with a
   * remote of its own (trust/site-security.ts); replaces the one remote of `remoteSecurity`.
   * All go to the same upstream URLs.
   */
  remotes?: LeafRemote[];
}

export interface LeafRemote {
  /** The local account this remote binds (an account public key in operator mode). */
  account: string;
  /** Settings spliced inside the remote (credentials, tls). */
  security: string;
  /** What the remote is for, as a comment in the config. */
  comment?: string;
}

const quote = (value: string) => JSON.stringify(value);
const hostPort = (address: HostPort) => quote(formatHostPort(address));
const list = (values: string[]) => `[${values.map(quote).join(", ")}]`;

function checkUrls(what: string, urls: string[], schemes: string[]): void {
  for (const url of urls) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch (cause) {
      throw new LeafmeshError("CONFIG_INVALID", `${what}: '${url}' is not a URL (expected ${schemes[0]}//host:port)`, { cause });
    }
    if (!schemes.includes(parsed.protocol) || !parsed.hostname || !parsed.port) {
      throw new LeafmeshError("CONFIG_INVALID", `${what}: '${url}' must look like ${schemes[0]}//host:port (scheme ${schemes.join(" or ")}, with a port)`);
    }
  }
}

function commonLines(options: CommonServerOptions, domain: string): string[] {
  return [
    `server_name: ${quote(options.serverName)}`,
    `listen: ${hostPort(options.client)}`,
    `http: ${hostPort(options.monitor)}`,
    `ping_interval: ${quote(options.pingInterval ?? "5s")}`,
    `ping_max: 3`,
    `max_payload: 1048576`,
    ...(options.debug ? ["debug: true"] : []),
    `jetstream {`,
    `  domain: ${quote(domain)}`,
    `  store_dir: ${quote(options.storeDir)}`,
    `  max_memory_store: ${options.maxMemoryStore ?? 1 << 30}`,
    `  max_file_store: ${options.maxFileStore ?? 1 << 30}`,
    `}`,
  ];
}

/** A route or gateway URL that presents `credentials` (nats-server sends a URL's user and password in its CONNECT). */
export function withRouteCredentials(url: string, credentials: RouteCredentials | undefined): string {
  if (!credentials) return url;
  const parsed = new URL(url);
  parsed.username = credentials.user;
  parsed.password = credentials.password;
  return parsed.toString().replace(/\/$/, "");
}

/** The `authorization {}` block a route or gateway listener asks of the other side. */
export function routeAuthorizationLines(credentials: RouteCredentials | undefined): string[] {
  return credentials ? [`authorization {`, `  user: ${quote(credentials.user)}`, `  password: ${quote(credentials.password)}`, `}`] : [];
}

function clusterLines(cluster: ClusterOptions): string[] {
  checkUrls("cluster route", cluster.routes, ["nats-route:", "nats:"]);
  return [
    `cluster {`,
    `  name: ${quote(cluster.name)}`,
    `  listen: ${hostPort(cluster.listen)}`,
    `  routes: ${list(cluster.routes.map((url) => withRouteCredentials(url, cluster.credentials)))}`,
    // Clients and leafs must use the URLs they were given, not whatever the routes advertise.
    `  no_advertise: true`,
    ...(cluster.security ? [cluster.security.replace(/^/gm, "  ")] : []),
    ...routeAuthorizationLines(cluster.credentials).map((line) => `  ${line}`),
    `}`,
  ];
}

export function renderHubConfig(options: HubServerOptions): string {
  const lines = [
    "# nats-server configuration written by leafmesh (hub). Edits are overwritten at the next start.",
    ...commonLines(options, hubDomain),
    `leafnodes {`,
    `  listen: ${hostPort(options.leaf)}`,
    // docs/nats-facts.md: advertised leafnode URLs make leafs bypass the address they were given. This stops the
    // cluster peers' URLs only: nats-server 2.9.10 still sends the hub's own leaf address, which `advertise` replaces.
    `  no_advertise: true`,
    ...(options.leafAdvertise ? [`  advertise: ${hostPort(options.leafAdvertise)}`] : []),
    ...(options.leafSecurity ? [options.leafSecurity.replace(/^/gm, "  ")] : []),
    `}`,
  ];
  if (options.cluster) lines.push(...clusterLines(options.cluster));
  if (options.gateway) {
    for (const gateway of options.gateway.gateways) checkUrls(`gateway ${gateway.name}`, gateway.urls, ["nats:"]);
    lines.push(
      `gateway {`,
      `  name: ${quote(options.gateway.name)}`,
      `  listen: ${hostPort(options.gateway.listen)}`,
      `  gateways: [`,
      ...options.gateway.gateways.map((gateway) => `    { name: ${quote(gateway.name)}, urls: ${list(gateway.urls.map((url) => withRouteCredentials(url, options.gateway!.credentials)))} }`),
      `  ]`,
      ...(options.gateway.security ? [options.gateway.security.replace(/^/gm, "  ")] : []),
      ...routeAuthorizationLines(options.gateway.credentials).map((line) => `  ${line}`),
      `}`,
    );
    // docs/nats-facts.md: leaf nodes plus gateways need an explicit system account.
    if (!options.security) lines.push(...openAccounts());
  }
  if (options.security) lines.push(options.security);
  return `${lines.join("\n")}\n`;
}

export function renderLeafConfig(options: LeafServerOptions): string {
  checkUpstreamUrls(options.upstreams);
  const lines = [
    "# nats-server configuration written by leafmesh (leaf). Edits are overwritten at the next start.",
    ...commonLines(options, options.domain),
    `leafnodes {`,
    ...(options.leaf ? [`  listen: ${hostPort(options.leaf)}`, `  no_advertise: true`] : []),
    ...(options.leaf && options.leafAdvertise ? [`  advertise: ${hostPort(options.leafAdvertise)}`] : []),
    ...(options.leaf && options.leafSecurity ? [options.leafSecurity.replace(/^/gm, "  ")] : []),
    `  reconnect: 1`,
    `  remotes: [`,
    ...(options.remotes ?? [{ security: options.remoteSecurity } as Partial<LeafRemote>]).flatMap((remote) => [
      ...(remote.comment ? [`    # ${remote.comment}`] : []),
      `    {`,
      `      urls: ${list(options.upstreams)}`,
      // The caller orders upstreams nearest first (nearest.ts); keep that order on connect and failover.
      `      dont_randomize: true`,
      ...(remote.account ? [`      account: ${quote(remote.account)}`] : []),
      ...(remote.security ? [remote.security.replace(/^/gm, "      ")] : []),
      `    }`,
    ]),
    `  ]`,
    `}`,
  ];
  if (options.cluster) lines.push(...clusterLines(options.cluster));
  if (options.security) lines.push(options.security);
  return `${lines.join("\n")}\n`;
}

/**
 * Throws a CONFIG_INVALID error naming the first upstream URL that is not [scheme://]host:port, as the user gave it
 * (`option`: the option that gave it, "--hub" or "--upstream"), not as toLeafUrl rewrites it.
 */
export function checkUpstreamUrls(upstreams: string[], option = "--hub"): void {
  if (upstreams.length === 0) throw new LeafmeshError("CONFIG_INVALID", `a leaf server needs at least one upstream URL (${option})`);
  for (const url of upstreams) {
    try {
      checkUrls(option, [/^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `nats-leaf://${url}`], ["nats-leaf:", "nats:", "tls:"]);
    } catch {
      throw new LeafmeshError("CONFIG_INVALID", `${option}: '${url}' must look like tls://host:7422 or nats://host:7422 (the upstream's leafnode port; scheme tls, nats or nats-leaf, or none)`);
    }
  }
}

/** The open lab setup docs/nats-facts.md found to work with gateways: a system account and a default user. */
function openAccounts(): string[] {
  return [
    `accounts {`,
    `  MESH { jetstream: enabled, users: [ { user: "mesh", password: "mesh" } ] }`,
    `  SYS { users: [ { user: "sys", password: "sys" } ] }`,
    `}`,
    `system_account: "SYS"`,
    `no_auth_user: "mesh"`,
  ];
}

/** A user's URL (nats://host:port, or host:port) as the leaf URL nats-server expects. */
export function toLeafUrl(url: string): string {
  const withScheme = /^[a-z-]+:\/\//.test(url) ? url : `nats-leaf://${url}`;
  return withScheme.replace(/^nats:\/\//, "nats-leaf://");
}

export function parseHostPort(text: string, what?: string): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) {
    throw new LeafmeshError("CONFIG_INVALID", `${what ? `${what}: ` : ""}'${text}' is not host:port (for example 127.0.0.1:4222)`);
  }
  return { host: match[1] ?? match[2], port };
}


/** host:port as a URL or nats-server writes it: an IPv6 address in brackets. */
export function formatHostPort(address: HostPort): string {
  return `${address.host.includes(":") ? `[${address.host}]` : address.host}:${address.port}`;
}
